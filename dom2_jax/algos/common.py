"""Pieces shared by DOM2 and the offline MARL baselines (MA-CQL, OMAR, MA-TD3+BC, MA-SfBC, BC).

Every algorithm module mirrors ``dom2_jax.algos.dom2``: a hashable ``Hparams`` (static field of
the state) built from an ``ml_collections`` config, a ``flax.struct`` state whose array leaves
have the agent axis first, a ``coef`` dict of float32 scalars (loss weights and rates that can
change without recompiling and can be vmapped like seeds), and ``init / update / act``
written with ``def``. ``update`` is ``vmap`` of a per-agent update over the agent axis (independent
learners: agent j only sees its own o_j, a_j, r_j, o'_j).

This module holds what they share:
  * ``critic_loss``: the CQL(H) double-critic loss with uniform actions (DOM2's Eq. 1, MA-CQL's
    and OMAR's critic), optionally with the policy's noisy actions too (``cql_policy_actions``,
    OMAR's MuJoCo variant); ``td_critic_loss``: the same without the CQL term (TD3+BC);
    ``td_target``: y = r + gamma (1 - done) min_k Qbar_k(o', a').
  * ``HparamsBase``: config -> validated frozen dataclass; ``make_coef``; ``make_optimizer``.
  * ``update_agents`` (batch check + vmap of a per-agent update over agents; each module's
    ``update`` calls it) and ``act_per_agent`` ([..., A, obs_dim] -> per-agent vmap). The one
    loop over updates is ``dom2_jax.training.trainer.scan_updates``.
  * The TD3-style deterministic actor-critic learner used by MA-CQL, OMAR and MA-TD3+BC
    (``ActorCriticState``, ``init_actor_critic``, ``actor_critic_agent_update``,
    ``deterministic_act``); each of them only supplies its actor loss.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, ClassVar, Dict, Sequence, Tuple

import flax
import jax
import jax.numpy as jnp
import optax

from dom2_jax.networks import DeterministicActor, DoubleCritic, soft_update

Array = jax.Array
TRANSITION_KEYS = ("obs", "actions", "rewards", "next_obs", "dones")


# ----------------------------------------------------------------------------- critics
def critic_loss(hp, coef, critic_params, batch, target_q: Array, key: Array,
                extra_actions=None):
    """CQL(H) double-critic loss for one agent (DOM2 Eq. 1, MA-CQL, OMAR).

      sum_k E[(y - Q_k(o, a))^2]
      + zeta sum_k E[logsumexp_m (Q_k(o, a~_m) - log 0.5^d) - log M - Q_k(o, a)],
      a~_m ~ U[-1, 1]^d, m = 1..M.

    batch arrays [B, ...]; target_q [B] (no gradient). ``hp`` needs ``critic_module``,
    ``num_cql_actions``, ``cql_density_correction`` and ``act_dim``; ``coef["zeta"]`` weighs
    the CQL term. ``extra_actions``: optional ``(actions [K, B, d], log_density [K, B])`` that
    join the uniform ones in the logsumexp (with ``- log_density`` under the density
    correction; ``- log(M + K)`` replaces ``- log M``): the current policy's noisy actions of
    OMAR's MuJoCo MA-CQL (``cql_policy_actions``). Without them the loss is unchanged.
    """
    critic = hp.critic_module
    obs, actions = batch["obs"], batch["actions"]
    q_data = critic.apply(critic_params, obs, actions)  # [2, B]
    td = jnp.mean(jnp.square(q_data - target_q[None]), axis=-1)  # [2]
    m = hp.num_cql_actions
    rand_a = jax.random.uniform(key, (m,) + actions.shape, actions.dtype, -1.0, 1.0)  # [M, B, d]
    # log density of each sampled action under its proposal: uniform on [-1, 1]^d, or given
    log_p = jnp.full(rand_a.shape[:2], hp.act_dim * jnp.log(0.5))  # [M, B]
    if extra_actions is not None:
        rand_a = jnp.concatenate([rand_a, extra_actions[0]], axis=0)  # [M + K, B, d]
        log_p = jnp.concatenate([log_p, extra_actions[1]], axis=0)
    q_all = jax.vmap(lambda a: critic.apply(critic_params, obs, a))(rand_a)  # [M + K, 2, B]
    if hp.cql_density_correction:
        q_all = q_all - log_p[:, None] - jnp.log(q_all.shape[0])
    q_rand = q_all[:m]  # the uniform actions' terms (metrics)
    lse = jax.scipy.special.logsumexp(q_all, axis=0)  # [2, B]
    cql = jnp.mean(lse - q_data, axis=-1)  # [2]
    loss = jnp.sum(td) + coef["zeta"] * jnp.sum(cql)
    aux = {"critic_td": jnp.mean(td), "critic_cql": jnp.mean(cql),
           "q_data": jnp.mean(q_data), "q_random": jnp.mean(q_rand),
           "cql_gap": jnp.mean(jnp.mean(q_rand, 0) - q_data)}
    return loss, aux


def td_critic_loss(hp, coef, critic_params, batch, target_q: Array, key: Array = None):
    """Plain clipped double-Q TD loss sum_k E[(y - Q_k(o, a))^2] (same signature as
    ``critic_loss``; ``coef`` and ``key`` are unused)."""
    del coef, key
    q_data = hp.critic_module.apply(critic_params, batch["obs"], batch["actions"])  # [2, B]
    td = jnp.mean(jnp.square(q_data - target_q[None]), axis=-1)
    return jnp.sum(td), {"critic_td": jnp.mean(td), "q_data": jnp.mean(q_data)}


def td_target(critic_module, target_params, batch, next_actions: Array, gamma) -> Array:
    """y = r + gamma (1 - done) min_k Qbar_k(o', a') with no gradient; [B]."""
    q_next = critic_module.apply(target_params, batch["next_obs"], next_actions)
    y = batch["rewards"] + gamma * (1.0 - batch["dones"]) * jnp.min(q_next, axis=0)
    return jax.lax.stop_gradient(y)


# ----------------------------------------------------------------------------- config
def make_optimizer(lr: float, grad_clip: float):
    """Adam, after a global-norm clip of each network's gradients when ``grad_clip > 0``."""
    if grad_clip > 0:
        return optax.chain(optax.clip_by_global_norm(grad_clip), optax.adam(lr))
    return optax.adam(lr)


def _is_tuple_field(f: dataclasses.Field) -> bool:
    t = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    return t.startswith(("Tuple", "tuple", "typing.Tuple"))


@dataclasses.dataclass(frozen=True)
class HparamsBase:
    """Hashable, resolved config (a static pytree field of each algorithm's state).

    Subclasses add fields (all without defaults), set ``NAME`` (used in error messages) and
    ``COEF_NAMES`` (the fields mirrored as dynamic float32 scalars in ``state.coef``), and
    may extend ``checks()``.
    """

    NAME: ClassVar[str] = "algorithm"
    COEF_NAMES: ClassVar[Tuple[str, ...]] = ()

    num_agents: int
    obs_dim: int
    act_dim: int

    @classmethod
    def from_config(cls, config, num_agents, obs_dim, act_dim):
        fields = dataclasses.fields(cls)
        known = {f.name for f in fields} - {"num_agents", "obs_dim", "act_dim"}
        unknown = set(config.keys()) - known
        if unknown:
            raise ValueError(f"unknown {cls.NAME} config fields {sorted(unknown)}; "
                             f"known fields: {sorted(known)}")
        missing = known - set(config.keys())
        if missing:
            raise ValueError(f"{cls.NAME} config lacks fields {sorted(missing)}")
        vals = {k: config[k] for k in known}
        for f in fields:
            if f.name in vals and _is_tuple_field(f):
                vals[f.name] = tuple(int(x) for x in vals[f.name])
        hp = cls(num_agents=int(num_agents), obs_dim=int(obs_dim), act_dim=int(act_dim), **vals)
        hp.validate()
        return hp

    @classmethod
    def resolve(cls, config, num_agents, obs_dim, act_dim):
        """``config`` itself when it is already an instance, else ``from_config``."""
        if isinstance(config, cls):
            return config
        return cls.from_config(config, num_agents, obs_dim, act_dim)

    @classmethod
    def default_config(cls):
        """The fields' defaults (all but num_agents, obs_dim, act_dim) as a ConfigDict."""
        import ml_collections
        return ml_collections.ConfigDict({
            f.name: f.default for f in dataclasses.fields(cls)
            if f.name not in ("num_agents", "obs_dim", "act_dim")})

    def checks(self):
        """(ok, message) pairs; subclasses extend the list."""
        out = [(self.num_agents >= 1 and self.obs_dim >= 1 and self.act_dim >= 1,
                "num_agents, obs_dim and act_dim must be positive")]
        g = lambda name, default=None: getattr(self, name, default)
        if g("rho") is not None:
            out.append((0.0 < self.rho <= 1.0, f"rho must be in (0, 1], got {self.rho}"))
        if g("gamma") is not None:
            out.append((0.0 <= self.gamma <= 1.0, f"gamma must be in [0, 1], got {self.gamma}"))
        if g("batch_size") is not None:
            out.append((self.batch_size >= 1, "batch_size must be >= 1"))
        for lr in ("actor_lr", "critic_lr", "value_lr"):
            if g(lr) is not None:
                out.append((g(lr) > 0, f"{lr} must be > 0, got {g(lr)}"))
        return out

    def validate(self):
        for ok, msg in self.checks():
            if not ok:
                raise ValueError(f"invalid {self.NAME} config: {msg}")

    def optimizer(self, lr):
        return make_optimizer(lr, getattr(self, "grad_clip", 0.0))


def make_coef(hp, names: Sequence[str] = None, **overrides) -> Dict[str, Array]:
    """The dynamic coefficients as float32 scalars (``overrides`` replace hp's values)."""
    names = hp.COEF_NAMES if names is None else names
    unknown = set(overrides) - set(names)
    if unknown:
        raise ValueError(f"unknown coefficients {sorted(unknown)}; {hp.NAME} has {list(names)}")
    return {k: jnp.asarray(overrides.get(k, getattr(hp, k)), jnp.float32) for k in names}


# ----------------------------------------------------------------------------- batching
def check_batch(hp, batch):
    """Raises a clear error unless batch holds [num_agents, B, ...] arrays (agent axis first)."""
    a = hp.num_agents
    expected = {"obs": (a, None, hp.obs_dim), "actions": (a, None, hp.act_dim),
                "rewards": (a, None), "next_obs": (a, None, hp.obs_dim), "dones": (a, None)}
    for k, shape in expected.items():
        if k not in batch:
            raise ValueError(f"batch lacks {k!r}; expected keys {sorted(expected)}")
        got = tuple(batch[k].shape)
        if len(got) != len(shape) or any(s is not None and s != g for s, g in zip(shape, got)):
            pretty = tuple("B" if s is None else s for s in shape)
            raise ValueError(f"batch[{k!r}] has shape {got}, expected {pretty} "
                             "(agent axis first)")


def update_agents(state, batch: Dict[str, Array], key: Array, agent_update: Callable,
                  fields: Sequence[str]):
    """One update of all agents: ``vmap`` of ``agent_update`` over the agent axis.

    ``agent_update(hp, coef, params, batch, key, step) -> (new_params, metrics)`` acts on ONE
    agent; ``params`` is the dict of this agent's slices of ``state.<field>`` for ``fields``.
    Returns (state with step + 1, metrics [A] per term).
    """
    hp = state.hp
    check_batch(hp, batch)
    params = {f: getattr(state, f) for f in fields}
    keys = jax.random.split(key, hp.num_agents)
    batch = {k: batch[k].astype(jnp.float32) for k in TRANSITION_KEYS}
    new, metrics = jax.vmap(lambda p, b, k: agent_update(hp, state.coef, p, b, k, state.step))(
        params, batch, keys)
    return state.replace(step=state.step + 1, **new), metrics


def act_per_agent(hp, agent_act: Callable, params, obs: Array, key: Array) -> Array:
    """obs [..., A, obs_dim] -> actions [..., A, act_dim] with ``agent_act(params_j, obs_j
    [M, obs_dim], key_j) -> [M, act_dim]`` vmapped over the agent axis of ``params``."""
    if obs.shape[-2:] != (hp.num_agents, hp.obs_dim):
        raise ValueError(f"act expects obs [..., {hp.num_agents}, {hp.obs_dim}], got {obs.shape}")
    lead = obs.shape[:-2]
    obs_a = jnp.moveaxis(obs.reshape((-1,) + obs.shape[-2:]), 1, 0)  # [A, M, obs_dim]
    keys = jax.random.split(key, hp.num_agents)
    acts = jax.vmap(agent_act)(params, obs_a, keys)
    return jnp.moveaxis(acts, 0, 1).reshape(lead + (hp.num_agents, hp.act_dim))


def grad_step(optimizer, loss_fn: Callable, params, opt_state):
    """One optimiser step on ``loss_fn(params) -> (loss, aux)``.

    Returns ``(new_params, new_opt_state, loss, aux, grads)``."""
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    upd, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, upd), opt_state, loss, aux, grads


def tree_select(flag: Array, new, old):
    """``new`` where the scalar bool ``flag`` holds, else ``old`` (leafwise)."""
    return jax.tree.map(lambda n, o: jnp.where(flag, n, o), new, old)


# ----------------------------------------------------------------------------- TD3-style learner
class DiffusionActorModules:
    """Modules of the diffusion-policy learners (DOM2, MA-SfBC), rebuilt at trace time from the
    static fields ``beta_min, beta_max, noise_net, act_dim, noise_hidden, critic_hidden``."""

    @property
    def schedule(self):
        from dom2_jax import diffusion
        return diffusion.VPSchedule(self.beta_min, self.beta_max)

    @property
    def noise_net_module(self):
        from dom2_jax import diffusion
        return diffusion.make_noise_net(self.noise_net, self.act_dim, self.noise_hidden)

    @property
    def critic_module(self):
        return DoubleCritic(self.critic_hidden)

    def diffusion_checks(self):
        """Validity checks of the solver and noise-net fields, as (ok, message) pairs."""
        from dom2_jax import diffusion
        return [
            (self.solver_order in (1, 2, 3), f"solver_order must be 1, 2 or 3, got {self.solver_order}"),
            (self.num_solver_steps >= 1, f"num_solver_steps must be >= 1, got {self.num_solver_steps}"),
            (self.solver_grid in diffusion.solvers.GRIDS,
             f"solver_grid must be one of {diffusion.solvers.GRIDS}"),
            (self.noise_net in diffusion.NOISE_NETS,
             f"noise_net must be one of {diffusion.NOISE_NETS}"),
            (0.0 < self.t_end < 1.0, f"t_end must be in (0, 1), got {self.t_end}"),
        ]


@dataclasses.dataclass(frozen=True)
class ActorCriticHparams(HparamsBase):
    """Fields of the deterministic-actor / double-critic learners (MA-CQL, OMAR, MA-TD3+BC)."""

    USES_CQL: ClassVar[bool] = False

    gamma: float
    rho: float                    # target update rate (tau)
    actor_hidden: Tuple[int, ...]
    critic_hidden: Tuple[int, ...]
    policy_noise: float           # TD3 target policy smoothing std (0: none, as in OMAR's code)
    noise_clip: float
    policy_delay: int             # actor and target updates every policy_delay critic updates
    batch_size: int
    actor_lr: float
    critic_lr: float
    grad_clip: float              # global-norm clip per network (<= 0: none)

    def checks(self):
        return super().checks() + [
            (self.policy_delay >= 1, f"policy_delay must be >= 1, got {self.policy_delay}"),
            (self.policy_noise >= 0 and self.noise_clip >= 0,
             "policy_noise and noise_clip must be >= 0"),
        ]

    @property
    def actor_module(self):
        return DeterministicActor(self.act_dim, self.actor_hidden)

    @property
    def critic_module(self):
        return DoubleCritic(self.critic_hidden)


@dataclasses.dataclass(frozen=True)
class CQLHparams(ActorCriticHparams):
    """Actor-critic with CQL(H) critics (MA-CQL, OMAR)."""

    USES_CQL: ClassVar[bool] = True

    zeta: float                   # CQL weight (OMAR's cql_alpha)
    num_cql_actions: int
    cql_density_correction: bool
    act_reg: float                # weight of mean(pi(o)^2) in the actor loss (OMAR code: 1e-3)
    # > 0: the CQL logsumexp also takes num_cql_actions noisy actions pi(o) + N(0, s^2) and as
    # many pi(o') + N(0, s^2), clipped to [-1, 1] (OMAR's MuJoCo code, s = 0.2); 0: uniform only.
    cql_policy_noise: float

    def checks(self):
        return super().checks() + [
            (self.zeta >= 0, f"zeta must be >= 0, got {self.zeta}"),
            (self.num_cql_actions >= 1, "num_cql_actions must be >= 1"),
            (self.act_reg >= 0, "act_reg must be >= 0"),
            (self.cql_policy_noise >= 0, "cql_policy_noise must be >= 0"),
        ]


@flax.struct.dataclass
class ActorCriticState:
    """Training state of the TD3-style learners; array leaves are [num_agents, ...]."""

    actor: Any
    actor_target: Any
    critic: Any
    critic_target: Any
    actor_opt: Any
    critic_opt: Any
    step: Array
    coef: Dict[str, Array]
    hp: Any = flax.struct.field(pytree_node=False)


AC_FIELDS = ("actor", "actor_target", "critic", "critic_target", "actor_opt", "critic_opt")


def init_actor_critic(key: Array, hp: ActorCriticHparams) -> ActorCriticState:
    """Independent per-agent actor and double critic; targets start as copies."""
    actor_mod, critic_mod = hp.actor_module, hp.critic_module
    o0, a0 = jnp.zeros((1, hp.obs_dim)), jnp.zeros((1, hp.act_dim))

    def init_agent(k):
        ka, kc = jax.random.split(k)
        actor, critic = actor_mod.init(ka, o0), critic_mod.init(kc, o0, a0)
        return (actor, critic, hp.optimizer(hp.actor_lr).init(actor),
                hp.optimizer(hp.critic_lr).init(critic))

    actor, critic, aopt, copt = jax.vmap(init_agent)(jax.random.split(key, hp.num_agents))
    return ActorCriticState(actor=actor, actor_target=actor, critic=critic, critic_target=critic,
                            actor_opt=aopt, critic_opt=copt, step=jnp.zeros((), jnp.int32),
                            coef=make_coef(hp), hp=hp)


def cql_policy_actions(actor_mod, actor_params, batch, key: Array, m: int, sigma: float):
    """OMAR's MuJoCo CQL samples: m actions pi(o) + N(0, sigma^2) and m actions pi(o') +
    N(0, sigma^2), clipped to [-1, 1], with the log density of their noise (a Gaussian's log
    pdf; OMAR's code subtracts the pdf itself). Returns (actions [2m, B, d], log_density
    [2m, B]), without gradient (the critic loss must not train the actor)."""
    pi = jnp.stack([actor_mod.apply(actor_params, batch["obs"]),
                    actor_mod.apply(actor_params, batch["next_obs"])])  # [2, B, d]
    return noisy_proposals(pi, key, m, sigma)


def noisy_proposals(pi: Array, key: Array, m: int, sigma: float):
    """m noisy copies pi + N(0, sigma^2), clipped to [-1, 1], of each of the P policy actions
    ``pi`` [P, B, d], with the log density of their noise. Returns (actions [P m, B, d],
    log_density [P m, B]) without gradient (CQL proposals must not train the actor)."""
    p = pi.shape[0]
    noise = sigma * jax.random.normal(key, (p, m) + pi.shape[1:])  # [P, m, B, d]
    acts = jnp.clip(pi[:, None] + noise, -1.0, 1.0).reshape((p * m,) + pi.shape[1:])
    log_density = jnp.sum(jax.scipy.stats.norm.logpdf(noise, scale=sigma), axis=-1)
    return jax.lax.stop_gradient((acts, log_density.reshape((p * m,) + pi.shape[1:2])))


def actor_critic_agent_update(hp: ActorCriticHparams, coef, params, batch, key, step,
                              actor_loss_fn: Callable):
    """One TD3-style update of ONE agent.

    critic: y = r + gamma (1 - d) min_k Qbar_k(o', clip(pibar(o') + clip(N(0, s^2), -c, c)));
            ``critic_loss`` (CQL) when ``hp.USES_CQL`` else ``td_critic_loss``.
    actor:  ``actor_loss_fn(hp, coef, actor_params, critic_params, batch, key) -> (loss, aux)``
            against the freshly updated critic; applied, with the soft target updates, only
            on steps where ``step % policy_delay == 0``.
    """
    k_noise, k_cql, k_actor = jax.random.split(key, 3)
    actor_mod, critic_mod = hp.actor_module, hp.critic_module
    next_a = actor_mod.apply(params["actor_target"], batch["next_obs"])
    if hp.policy_noise > 0:
        noise = jnp.clip(hp.policy_noise * jax.random.normal(k_noise, next_a.shape),
                         -hp.noise_clip, hp.noise_clip)
        next_a = jnp.clip(next_a + noise, -1.0, 1.0)
    target_q = td_target(critic_mod, params["critic_target"], batch, next_a, coef["gamma"])
    if hp.USES_CQL and hp.cql_policy_noise > 0:
        k_cql, k_pi = jax.random.split(k_cql)
        extra = cql_policy_actions(actor_mod, params["actor"], batch, k_pi, hp.num_cql_actions,
                                   hp.cql_policy_noise)
        loss_fn = functools.partial(critic_loss, extra_actions=extra)
    else:
        loss_fn = critic_loss if hp.USES_CQL else td_critic_loss
    critic, critic_opt, c_loss, c_aux, c_grads = grad_step(
        hp.optimizer(hp.critic_lr), lambda p: loss_fn(hp, coef, p, batch, target_q, k_cql),
        params["critic"], params["critic_opt"])

    actor, actor_opt, a_loss, a_aux, a_grads = grad_step(
        hp.optimizer(hp.actor_lr), lambda p: actor_loss_fn(hp, coef, p, critic, batch, k_actor),
        params["actor"], params["actor_opt"])
    delayed = dict(actor=actor, actor_opt=actor_opt,
                   actor_target=soft_update(params["actor_target"], actor, coef["rho"]),
                   critic_target=soft_update(params["critic_target"], critic, coef["rho"]))
    if hp.policy_delay > 1:
        do = (step % hp.policy_delay) == 0
        delayed = tree_select(do, delayed, {k: params[k] for k in delayed})
    metrics = {"critic_loss": c_loss, "actor_loss": a_loss,
               "critic_grad_norm": optax.tree.norm(c_grads),
               "actor_grad_norm": optax.tree.norm(a_grads), **c_aux, **a_aux}
    return dict(critic=critic, critic_opt=critic_opt, **delayed), metrics


def deterministic_act(state: ActorCriticState, obs: Array, key: Array = None) -> Array:
    """a = pi_j(o_j) (tanh actor; no exploration noise): [..., A, obs_dim] -> [..., A, act_dim]."""
    hp = state.hp
    key = jax.random.PRNGKey(0) if key is None else key
    actor = hp.actor_module
    return act_per_agent(hp, lambda p, o, k: jnp.clip(actor.apply(p, o), -1.0, 1.0),
                         state.actor, obs, key)


def q1_of(hp, critic_params, obs: Array, actions: Array) -> Array:
    """Q_1(o, a) for one agent, broadcasting obs [..., obs_dim] against actions [..., M, d]
    when actions have one more axis than obs."""
    if actions.ndim == obs.ndim + 1:
        obs = jnp.broadcast_to(obs[..., None, :], actions.shape[:-1] + obs.shape[-1:])
    return hp.critic_module.apply(critic_params, obs, actions)[0]
