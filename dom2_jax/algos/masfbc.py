"""MA-SfBC: per-agent SfBC (Chen et al. 2022): a diffusion behaviour model plus a critic that
selects among sampled actions.

Per agent j (independent learners, like DOM2):
  behaviour: the DOM2 noise network (``dom2_jax.diffusion``: residual U-Net, VP SDE) trained
             with the eps loss only (Eq. 3, no Q term: that is the difference from DOM2).
  critic:    in-sample (IQL-style expectile) value learning, so no action outside the dataset
             is ever evaluated during training and no diffusion sampling is needed in the update:
               V(o)   <- expectile_tau of min_k Qbar_k(o, a) over dataset actions (tau = 0.7)
               L(phi) = sum_k E (r + gamma (1 - d) V(o') - Q_k(o, a))^2
             (SfBC itself learns Q by iterated "in-support" softmax planning over behaviour
             samples; the expectile critic is the cheaper in-support estimator used by IDQL
             with the same diffusion-behaviour + selection scheme. See notes/baselines.md.)
  act:       K candidates a_1..a_K ~ behaviour(. | o) (DPM-Solver, clipped), scored by
             min_k Q_k(o, a_i); ``selection="softmax"`` samples i with probability
             softmax(z_i / temperature), z = Q standardised over the K candidates (so the
             temperature is free of the task's reward scale; SfBC's exp(alpha Q) selection);
             ``selection="argmax"`` takes the best candidate.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Tuple

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from dom2_jax import diffusion
from dom2_jax.algos import common
from dom2_jax.networks import MLP, soft_update

Array = jax.Array
SELECTIONS = ("softmax", "argmax")


def default_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.rho = 0.005
    c.gamma = 0.99
    c.expectile = 0.7            # IQL's locomotion value
    # Behaviour model (same fields and defaults as DOM2's diffusion policy).
    c.num_solver_steps = 5
    c.solver_order = 1
    c.solver_grid = "logsnr"
    c.t_end = 1e-3
    c.beta_min = 0.1
    c.beta_max = 20.0
    c.noise_net = "residual"
    c.noise_hidden = (512, 256, 128)
    # Critic and selection.
    c.critic_hidden = (256, 256, 256)
    c.value_hidden = (256, 256, 256)
    c.num_candidates = 32        # SfBC samples 32 actions per state at evaluation
    c.selection = "softmax"
    c.temperature = 0.2          # on Q standardised over the candidates (see module doc)
    # Optimisation.
    c.batch_size = 256
    c.behavior_lr = 3e-4
    c.critic_lr = 3e-4
    c.value_lr = 3e-4
    c.grad_clip = 1.0
    return c


@dataclasses.dataclass(frozen=True)
class Hparams(common.HparamsBase, common.DiffusionActorModules):
    NAME = "MA-SfBC"
    COEF_NAMES = ("rho", "gamma", "expectile", "temperature")

    rho: float
    gamma: float
    expectile: float
    num_solver_steps: int
    solver_order: int
    solver_grid: str
    t_end: float
    beta_min: float
    beta_max: float
    noise_net: str
    noise_hidden: Tuple[int, ...]
    critic_hidden: Tuple[int, ...]
    value_hidden: Tuple[int, ...]
    num_candidates: int
    selection: str
    temperature: float
    batch_size: int
    behavior_lr: float
    critic_lr: float
    value_lr: float
    grad_clip: float

    def checks(self):
        return super().checks() + [
            (0.0 < self.expectile < 1.0, f"expectile must be in (0, 1), got {self.expectile}"),
            (self.num_candidates >= 1, "num_candidates must be >= 1"),
            (self.selection in SELECTIONS, f"selection must be one of {SELECTIONS}"),
            (self.temperature > 0, f"temperature must be > 0, got {self.temperature}"),
            (self.behavior_lr > 0, "behavior_lr must be > 0"),
        ] + self.diffusion_checks()

    @property
    def value_module(self):
        return MLP(tuple(self.value_hidden) + (1,))


@flax.struct.dataclass
class SfBCState:
    """Array leaves are [num_agents, ...]."""

    behavior: Any
    behavior_opt: Any
    critic: Any
    critic_target: Any
    critic_opt: Any
    value: Any
    value_opt: Any
    step: Array
    coef: Dict[str, Array]
    hp: Hparams = flax.struct.field(pytree_node=False)


State = SfBCState
_FIELDS = ("behavior", "behavior_opt", "critic", "critic_target", "critic_opt", "value",
           "value_opt")


def make_coef(hp: Hparams, **overrides) -> Dict[str, Array]:
    return common.make_coef(hp, **overrides)


def init(key: Array, config, num_agents: int, obs_dim: int, act_dim: int) -> SfBCState:
    hp = config if isinstance(config, Hparams) else Hparams.from_config(
        config, num_agents, obs_dim, act_dim)
    a0, o0, t0 = jnp.zeros((1, act_dim)), jnp.zeros((1, obs_dim)), jnp.zeros((1,))

    def init_agent(k):
        kb, kc, kv = jax.random.split(k, 3)
        beh = hp.noise_net_module.init(kb, a0, o0, t0)
        crit = hp.critic_module.init(kc, o0, a0)
        val = hp.value_module.init(kv, o0)
        return (beh, hp.optimizer(hp.behavior_lr).init(beh), crit,
                hp.optimizer(hp.critic_lr).init(crit), val, hp.optimizer(hp.value_lr).init(val))

    beh, bopt, crit, copt, val, vopt = jax.vmap(init_agent)(jax.random.split(key, num_agents))
    return SfBCState(behavior=beh, behavior_opt=bopt, critic=crit, critic_target=crit,
                     critic_opt=copt, value=val, value_opt=vopt, step=jnp.zeros((), jnp.int32),
                     coef=make_coef(hp), hp=hp)


# ----------------------------------------------------------------------------- sampling
def sample_candidates(hp: Hparams, behavior_params, obs: Array, key: Array, num: int) -> Array:
    """``num`` behaviour samples per observation: obs [..., obs_dim] -> [..., num, act_dim]."""
    obs_k = jnp.broadcast_to(obs[..., None, :], obs.shape[:-1] + (num, obs.shape[-1]))
    x_T = jax.random.normal(key, obs_k.shape[:-1] + (hp.act_dim,), obs.dtype)
    eps_fn = lambda x, t: hp.noise_net_module.apply(behavior_params, x, obs_k, t)
    a = diffusion.dpm_solver_sample(eps_fn, x_T, hp.schedule, hp.num_solver_steps,
                                    order=hp.solver_order, t_end=hp.t_end, grid=hp.solver_grid)
    return jnp.clip(a, -1.0, 1.0)


def select(q: Array, key: Array, selection: str, temperature) -> Array:
    """Index of the chosen candidate along the last axis of q [..., K]."""
    if selection == "argmax":
        return jnp.argmax(q, axis=-1)
    z = (q - jnp.mean(q, -1, keepdims=True)) / (jnp.std(q, -1, keepdims=True) + 1e-6)
    return jax.random.categorical(key, z / temperature, axis=-1)


def select_candidates(cand: Array, q: Array, key: Array, selection: str, temperature) -> Array:
    """Chosen action per row: cand [..., K, d], q [..., K] -> [..., d]."""
    i = select(q, key, selection, temperature)
    return jnp.take_along_axis(cand, i[..., None, None], axis=-2)[..., 0, :]


def agent_act(hp: Hparams, coef, behavior_params, critic_params, obs: Array, key: Array):
    """One agent: obs [M, obs_dim] -> [M, act_dim], critic-weighted choice among K samples."""
    k_s, k_c = jax.random.split(key)
    cand = sample_candidates(hp, behavior_params, obs, k_s, hp.num_candidates)  # [M, K, d]
    obs_k = jnp.broadcast_to(obs[:, None], cand.shape[:-1] + obs.shape[-1:])
    q = jnp.min(hp.critic_module.apply(critic_params, obs_k, cand), axis=0)      # [M, K]
    return select_candidates(cand, q, k_c, hp.selection, coef["temperature"])


def act(state: SfBCState, obs: Array, key: Array) -> Array:
    """obs [..., A, obs_dim] -> actions [..., A, act_dim] in [-1, 1]. Jittable."""
    hp = state.hp
    return common.act_per_agent(
        hp, lambda p, o, k: agent_act(hp, state.coef, p[0], p[1], o, k),
        (state.behavior, state.critic), obs, key)


# ----------------------------------------------------------------------------- update
def expectile_loss(u: Array, tau) -> Array:
    """E |tau - 1(u < 0)| u^2 (IQL)."""
    w = jnp.where(u < 0, 1.0 - tau, tau)
    return jnp.mean(w * jnp.square(u))


def agent_update(hp: Hparams, coef, params, batch, key, step):
    del step
    obs, actions = batch["obs"], batch["actions"]
    # Behaviour model: eps loss only.
    net = hp.noise_net_module

    def bc_loss(p):
        return diffusion.eps_loss(lambda x, t: net.apply(p, x, obs, t), actions, key,
                                  hp.schedule, t_end=hp.t_end)

    b_loss, b_grads = jax.value_and_grad(bc_loss)(params["behavior"])
    b_upd, b_opt = hp.optimizer(hp.behavior_lr).update(b_grads, params["behavior_opt"],
                                                       params["behavior"])
    behavior = optax.apply_updates(params["behavior"], b_upd)
    # Value: expectile of the target critics' min over dataset actions.
    q_t = jax.lax.stop_gradient(jnp.min(
        hp.critic_module.apply(params["critic_target"], obs, actions), axis=0))
    vmod = hp.value_module

    def v_loss_fn(p):
        return expectile_loss(q_t - vmod.apply(p, obs)[..., 0], coef["expectile"])

    v_loss, v_grads = jax.value_and_grad(v_loss_fn)(params["value"])
    v_upd, v_opt = hp.optimizer(hp.value_lr).update(v_grads, params["value_opt"], params["value"])
    value = optax.apply_updates(params["value"], v_upd)
    # Critics: TD toward r + gamma (1 - d) V(o').
    target_q = jax.lax.stop_gradient(
        batch["rewards"] + coef["gamma"] * (1.0 - batch["dones"])
        * vmod.apply(value, batch["next_obs"])[..., 0])
    (c_loss, c_aux), c_grads = jax.value_and_grad(common.td_critic_loss, argnums=2,
                                                  has_aux=True)(
        hp, coef, params["critic"], batch, target_q)
    c_upd, c_opt = hp.optimizer(hp.critic_lr).update(c_grads, params["critic_opt"],
                                                     params["critic"])
    critic = optax.apply_updates(params["critic"], c_upd)
    new = dict(behavior=behavior, behavior_opt=b_opt, value=value, value_opt=v_opt,
               critic=critic, critic_opt=c_opt,
               critic_target=soft_update(params["critic_target"], critic, coef["rho"]))
    metrics = {"behavior_loss": b_loss, "value_loss": v_loss, "critic_loss": c_loss,
               "behavior_grad_norm": optax.tree.norm(b_grads),
               "critic_grad_norm": optax.tree.norm(c_grads), **c_aux}
    return new, metrics


def update(state: SfBCState, batch: Dict[str, Array], key: Array):
    """One update of all agents (vmap of ``agent_update``); batch arrays [A, B, ...]."""
    return common.update_agents(state, batch, key, agent_update, _FIELDS)

