"""DOM2: Diffusion Offline Multi-agent Model (the paper's Algorithm 2), one jitted update.

Per agent j (fully decentralised: each agent only sees its own o_j, a_j, r_j, o'_j):

  critic (Eq. 1), k = 1, 2:
    y      = r + gamma (1 - done) min_k Qbar_k(o', a'),   a' ~ pi_thetabar(. | o')  (target actor,
                                                             N DPM-Solver steps, clipped)
    L(phi) = sum_k E[(y - Q_k(o, a))^2]
             + zeta sum_k E[logsumexp_m (Q_k(o, a~_m) - log p(a~_m)) - log M' - Q_k(o, a)],
             a~_m ~ U[-1, 1]^d, m = 1..M  (CQL(H); log p = log 0.5^d, the uniform density),
             and with cql_policy_noise = s > 0 also M copies of pi_theta(o) + N(0, s^2) and M of
             a' + N(0, s^2) (log p their Gaussian log density; M' = 3M): CQL's policy
             proposals. Uniform actions alone leave Q at every action the policy takes off
             the data unpenalised and its logsumexp unbounded below (BUILD_NOTES, "DOM2
             diagnosis").
  actor (Eq. 5):
    L(theta) = L_bc(theta) - eta * E[Q_1(o, a_theta)] / stopgrad(E|Q_1(o, a_theta)|)
               (eta is a state coefficient: eta = 0, the BC-only ablation, is the same program)
    L_bc     = E ||eps - eps_theta(alpha_t a + sigma_t eps, o, t)||^2,  t ~ U(t_end, 1)  (Eq. 3)
    a_theta  = clip(DPM-Solver_N(eps_theta(., o, .), x_T ~ N(0, I)), -1, 1), gradients flowing
               through every solver step
  targets (Alg. 2 line 8): phibar <- rho phi + (1 - rho) phibar, thetabar likewise.

The critic is updated first and the actor then uses the updated critic, as in Alg. 2.

All agents' parameters are stacked on a leading axis and ``update`` is ``vmap`` of the per-agent
update over it, so one ``jax.jit(update)`` compiles the whole step (score net, solver scan, CQL)
once. Hyper-parameters live in a hashable ``Hparams`` carried as a static field of the state, so
``update(state, batch, key)`` needs nothing else and a leading seed axis can be added by ``vmap``.
The loss weights eta, zeta and the rates rho, gamma are float32 leaves of ``state.coef`` only
(``Hparams`` holds their initial values): changing them does not recompile, and a sweep over
them can be ``vmap``ped like seeds.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Tuple

import flax
import jax
import jax.numpy as jnp
import optax

from flax.training.train_state import TrainState

from dom2_jax import diffusion
from dom2_jax.algos import common
from dom2_jax.algos.common import make_coef  # noqa: F401  (dom2.make_coef(hp, **overrides))
from dom2_jax.algos.losses import critic_loss, noisy_proposals

Array = jax.Array


# ----------------------------------------------------------------------------- config
@dataclasses.dataclass(frozen=True)
class Hparams(common.HparamsBase, common.DiffusionActorModules):
    """DOM2's hyper-parameters, each written once here with its default and source (the paper
    publishes none; BUILD_NOTES.md, "Hyper-parameters"). ``default_config()`` is these
    defaults as a ConfigDict; a resolved copy is a static field of ``DOM2State``.

    eta, zeta, rho and gamma are only the initial values of ``state.coef``, where the update
    reads them: they never change the compiled program (a sweep over them is one vmap)."""

    NAME = "DOM2"
    COEF_NAMES = ("eta", "zeta", "rho", "gamma")
    # added after runs were recorded (they ran without them: the defaults are what they did)
    LATER_FIELDS = ("remat_solver", "act_candidates", "act_selection", "act_temperature")

    # Policy improvement and critic regularisation (the paper's symbols).
    eta: float = 1.0                 # Q-loss weight (Eq. 5); Diffusion-QL's locomotion value
    zeta: float = 1.0                # CQL weight (Eq. 1); OMAR's tuned values per task in configs
    rho: float = 0.005               # target update rate (Alg. 2); Diffusion-QL / TD3 tau
    gamma: float = 0.99              # discount; the MPE configs use OMAR's 0.95
    # Diffusion policy.
    num_solver_steps: int = 5        # N: the paper uses 5 (MPE) and 10 (HalfCheetah)
    solver_order: int = 1            # the paper's first-order DPM-Solver (Eq. 4)
    solver_grid: str = "logsnr"      # DPM-Solver's recommended time grid ("time_uniform")
    t_end: float = 1e-3              # smallest diffusion time (VP SDE, DPM-Solver)
    beta_min: float = 0.1            # VP SDE linear beta schedule
    beta_max: float = 20.0
    noise_net: str = "residual"      # "residual" (paper, SfBC-style) or "mlp" (Fig. 6 ablation)
    noise_hidden: Tuple[int, ...] = (512, 256, 128)  # SfBC widths 512-256-128 | 128-256-512
    use_bc_loss: bool = True         # False: the "w/o diffusion loss" ablation
    q_for_actor: str = "q1"          # critic guiding the actor: "q1" (TD3) or "min" of both
    ema_decay: float = 0.995         # EMA actor used by act (Diffusion-QL); 0 disables it
    remat_solver: bool = False       # jax.checkpoint each solver step of the Q term (memory)
    # Acting (evaluation only; the update never reads these). 1: one policy sample, as the
    # paper describes. K > 1: K samples per observation, one chosen by the target critics'
    # min Q (Diffusion-QL's evaluation: K = 50, softmax over Q) with MA-SfBC's rule
    # (``common.select``: softmax of Q standardised over the K, or argmax).
    act_candidates: int = 1
    act_selection: str = "softmax"
    act_temperature: float = 0.2
    # Critics.
    critic_hidden: Tuple[int, ...] = (256, 256, 256)
    num_cql_actions: int = 10        # M uniform actions in the CQL logsumexp (MA-CQL, OMAR)
    cql_density_correction: bool = True  # subtract log 0.5^d and log M (constants: no gradient)
    # > 0: the logsumexp also takes M noisy copies a + N(0, s^2) of the current policy's
    # sample at o and of the target policy's a' at o', with their Gaussian log densities
    # (CQL's policy proposals; OMAR's MuJoCo s = 0.2). 0: uniform actions only (Eq. 1 as
    # printed), whose critic diverges on HalfCheetah (BUILD_NOTES, "DOM2 diagnosis").
    cql_policy_noise: float = 0.2
    # Optimisation.
    batch_size: int = 256
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    grad_clip: float = 1.0           # global-norm clip of each agent's actor and critic grads

    def checks(self):
        return super().checks() + [
            (self.q_for_actor in ("q1", "min"), "q_for_actor must be 'q1' or 'min'"),
            (0.0 <= self.ema_decay < 1.0, f"ema_decay must be in [0, 1), got {self.ema_decay}"),
            (self.zeta >= 0.0 and self.eta >= 0.0, "eta and zeta must be >= 0"),
            (self.num_cql_actions >= 1, "num_cql_actions must be >= 1"),
            (self.cql_policy_noise >= 0, "cql_policy_noise must be >= 0"),
            (self.use_bc_loss or self.eta > 0, "with use_bc_loss=False, eta must be > 0"),
            (self.act_candidates >= 1, f"act_candidates must be >= 1, got {self.act_candidates}"),
            (self.act_selection in common.SELECTIONS,
             f"act_selection must be one of {common.SELECTIONS}"),
            (self.act_temperature > 0, f"act_temperature must be > 0, got {self.act_temperature}"),
        ] + self.diffusion_checks()


def default_config():
    """DOM2's hyper-parameters with their defaults (``Hparams``' fields) as a ConfigDict."""
    return Hparams.default_config()


@flax.struct.dataclass
class DOM2State:
    """Training state; every array leaf has the agent axis first ([num_agents, ...])."""

    actor: TrainState          # theta: noise network and its optimiser
    critic: TrainState         # phi: double critic and its optimiser
    actor_target: Any          # thetabar (parameters)
    critic_target: Any         # phibar
    actor_ema: Any             # the EMA actor ``act`` uses (Diffusion-QL)
    step: Array
    coef: Dict[str, Array]     # {"eta", "zeta", "rho", "gamma"}: float32 scalars (no agent axis)
    hp: Hparams = flax.struct.field(pytree_node=False)


_FIELDS = ("actor", "critic", "actor_target", "critic_target", "actor_ema")


# ----------------------------------------------------------------------------- init
def init(key: Array, config, num_agents: int, obs_dim: int, act_dim: int) -> DOM2State:
    """Initialises all agents' networks (independent keys), targets and optimiser states."""
    hp = Hparams.resolve(config, num_agents, obs_dim, act_dim)
    net, critic = hp.noise_net_module, hp.critic_module
    a0, o0, t0 = jnp.zeros((1, act_dim)), jnp.zeros((1, obs_dim)), jnp.zeros((1,))

    def init_agent(k):
        ka, kc = jax.random.split(k)
        return (hp.train_state(net, net.init(ka, a0, o0, t0), hp.actor_lr),
                hp.train_state(critic, critic.init(kc, o0, a0), hp.critic_lr))

    actor, crit = jax.vmap(init_agent)(jax.random.split(key, num_agents))
    return DOM2State(actor=actor, critic=crit, actor_target=actor.params,
                     critic_target=crit.params, actor_ema=actor.params,
                     step=jnp.zeros((), jnp.int32), coef=make_coef(hp), hp=hp)


# ----------------------------------------------------------------------------- sampling
def sample_actions(hp: Hparams, actor_params, obs: Array, key: Array,
                   remat: bool = False) -> Array:
    """a = clip(DPM-Solver(eps_theta(., obs, .)), -1, 1) for ONE agent: obs [..., obs_dim].
    ``remat``: rematerialise each solver step in the backward pass (``dpm_solver_sample``)."""
    net = hp.noise_net_module
    x_T = jax.random.normal(key, obs.shape[:-1] + (hp.act_dim,), obs.dtype)
    eps_fn = lambda x, t: net.apply(actor_params, x, obs, t)
    a = diffusion.dpm_solver_sample(eps_fn, x_T, hp.schedule, hp.num_solver_steps,
                                    order=hp.solver_order, t_end=hp.t_end, grid=hp.solver_grid,
                                    remat=remat)
    return jnp.clip(a, -1.0, 1.0)


def act(state: DOM2State, obs: Array, key: Array, use_ema: bool = True) -> Array:
    """Batched action selection: obs [..., num_agents, obs_dim] -> actions [..., num_agents, act_dim].

    Uses the EMA actor when ``ema_decay > 0`` and ``use_ema``; with ``act_candidates`` K > 1
    each agent picks one of K samples by its target critics' min Q (``Hparams``). Jittable.
    """
    hp = state.hp
    if obs.shape[-2:] != (hp.num_agents, hp.obs_dim):
        raise ValueError(f"act expects obs [..., {hp.num_agents}, {hp.obs_dim}], got {obs.shape}")
    params = state.actor_ema if (use_ema and hp.ema_decay > 0) else state.actor.params
    if hp.act_candidates > 1:
        return common.act_per_agent(
            hp, lambda p, o, k: agent_act_selected(hp, p[0], p[1], o, k),
            (params, state.critic_target), obs, key)
    lead = obs.shape[:-2]
    obs_a = jnp.moveaxis(obs.reshape((-1,) + obs.shape[-2:]), 1, 0)  # [A, M, obs_dim]
    keys = jax.random.split(key, hp.num_agents)
    acts = jax.vmap(lambda p, o, k: sample_actions(hp, p, o, k))(params, obs_a, keys)
    return jnp.moveaxis(acts, 0, 1).reshape(lead + (hp.num_agents, hp.act_dim))


def sample_candidates(hp: Hparams, actor_params, obs: Array, key: Array, num: int) -> Array:
    """``num`` policy samples per observation, obs [M, obs_dim] -> [M, num, act_dim] (as
    ``masfbc.sample_candidates``)."""
    obs_k = jnp.broadcast_to(obs[:, None], obs.shape[:1] + (num, obs.shape[-1]))
    return sample_actions(hp, actor_params, obs_k, key)


def agent_act_selected(hp: Hparams, actor_params, critic_params, obs: Array, key: Array):
    """One agent: obs [M, obs_dim] -> [M, act_dim], one of ``act_candidates`` samples per row
    chosen by min_k Q_k(o, a) (``common.select_candidates``)."""
    k_s, k_c = jax.random.split(key)
    cand = sample_candidates(hp, actor_params, obs, k_s, hp.act_candidates)   # [M, K, d]
    obs_k = jnp.broadcast_to(obs[:, None], cand.shape[:-1] + obs.shape[-1:])
    q = jnp.min(hp.critic_module.apply(critic_params, obs_k, cand), axis=0)     # [M, K]
    return common.select_candidates(cand, q, k_c, hp.act_selection, hp.act_temperature)


# ----------------------------------------------------------------------------- losses
# critic_loss (Eq. 1, CQL(H)) is shared with MA-CQL and OMAR: dom2_jax.algos.losses.


def actor_loss(hp: Hparams, coef, actor_params, critic_params, batch, key: Array):
    """Eq. 5 for one agent: L_bc (Eq. 3) - eta Q(o, a_theta) / stopgrad(mean |Q|)."""
    net, critic, sched = hp.noise_net_module, hp.critic_module, hp.schedule
    obs = batch["obs"]
    k_bc, k_pi = jax.random.split(key)
    eps_fn = lambda x, t: net.apply(actor_params, x, obs, t)
    bc = diffusion.eps_loss(eps_fn, batch["actions"], k_bc, sched, t_end=hp.t_end)
    # Q term (the weight is the state coefficient eta: eta = 0 trains pure BC in the same
    # program, so a sweep over eta is one vmapped program).
    a_pi = sample_actions(hp, actor_params, obs, k_pi, remat=hp.remat_solver)
    q = critic.apply(critic_params, obs, a_pi)
    q = q[0] if hp.q_for_actor == "q1" else jnp.min(q, axis=0)
    q_loss = -jnp.mean(q) / jax.lax.stop_gradient(jnp.mean(jnp.abs(q)) + 1e-6)
    loss = (bc if hp.use_bc_loss else 0.0) + coef["eta"] * q_loss
    aux = {"actor_bc": bc, "actor_q": jnp.mean(q), "actor_q_loss": q_loss,
           "actor_saturation": jnp.mean(jnp.abs(a_pi) >= 0.999)}
    return loss, aux


# ----------------------------------------------------------------------------- update
def agent_update(hp: Hparams, coef, params: Dict[str, Any], batch: Dict[str, Array], key: Array,
                 step: Array = None):
    """Alg. 2's lines 4-8 for ONE agent: ``params`` holds this agent's slices of the state's
    fields. (``step`` is unused: every step updates actor, critics and targets.)"""
    k_next, k_cql, k_actor = jax.random.split(key, 3)
    actor, critic = params["actor"], params["critic"]
    # Critic (Eq. 1): targets from the target actor and target critics.
    next_a = sample_actions(hp, params["actor_target"], batch["next_obs"], k_next)
    q_next = hp.critic_module.apply(params["critic_target"], batch["next_obs"], next_a)
    target_q = batch["rewards"] + coef["gamma"] * (1.0 - batch["dones"]) * jnp.min(q_next, axis=0)
    target_q = jax.lax.stop_gradient(target_q)
    extra = None
    if hp.cql_policy_noise > 0:  # CQL proposals near the policy (see the module docstring)
        k_cql, k_pi, k_noise = jax.random.split(k_cql, 3)
        pi_o = sample_actions(hp, actor.params, batch["obs"], k_pi)
        extra = noisy_proposals(jnp.stack([pi_o, next_a]), k_noise, hp.num_cql_actions,
                                hp.cql_policy_noise)
    critic, c_loss, c_aux, c_grads = common.apply_loss(
        critic, lambda p: critic_loss(hp, coef, p, batch, target_q, k_cql, extra_actions=extra))
    # Actor (Eq. 5) against the freshly updated critic.
    actor, a_loss, a_aux, a_grads = common.apply_loss(
        actor, lambda p: actor_loss(hp, coef, p, critic.params, batch, k_actor))
    # Targets (Alg. 2 line 8) and the EMA actor.
    new = dict(
        actor=actor, critic=critic,
        actor_target=optax.incremental_update(actor.params, params["actor_target"], coef["rho"]),
        critic_target=optax.incremental_update(critic.params, params["critic_target"],
                                               coef["rho"]),
        actor_ema=(optax.incremental_update(actor.params, params["actor_ema"], 1.0 - hp.ema_decay)
                   if hp.ema_decay > 0 else actor.params))
    metrics = {"critic_loss": c_loss, "actor_loss": a_loss,
               "critic_grad_norm": optax.tree.norm(c_grads),
               "actor_grad_norm": optax.tree.norm(a_grads), **c_aux, **a_aux}
    return new, metrics


def update(state: DOM2State, batch: Dict[str, Array], key: Array):
    """One update of all agents: ``vmap`` of ``agent_update`` over the agent axis.

    batch: obs [A, B, obs_dim], actions [A, B, act_dim], rewards [A, B], next_obs, dones
    [A, B] (checked with a clear error before tracing). Returns (state, metrics [A] per term).
    """
    return common.update_agents(state, batch, key, agent_update, _FIELDS)
