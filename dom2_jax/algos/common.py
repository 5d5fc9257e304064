"""Pieces every learner shares (DOM2, MA-CQL, OMAR, MA-TD3+BC, MA-SfBC, BC).

Every algorithm module has the same shape: a frozen ``Hparams`` dataclass whose fields are its
config, each written once with its default (``HparamsBase.default_config`` turns them into the
``ml_collections`` config), carried as a static field of a ``flax.struct`` state that holds one
``flax.training.train_state.TrainState`` per trained network (agents stacked on axis 0), target
and EMA parameters, a step counter and ``coef``: the loss weights and rates as float32 scalars,
read only from there, so changing them never changes the program and a sweep over them is a
``vmap`` like seeds. ``init / update / act`` are written with ``def``; ``update`` is ``vmap`` of a
per-agent update over the agent axis (independent learners: agent j only sees its own o_j, a_j,
r_j, o'_j).

This module holds: ``HparamsBase``, ``make_coef``, ``make_optimizer`` / ``train_state`` (one
optax chain and one TrainState per network), ``update_agents`` (batch check + the vmap over
agents), ``act_per_agent``, ``apply_loss`` (one optimiser step of a TrainState on a loss) and
``DiffusionActorModules``. The losses live in ``dom2_jax.algos.losses`` (re-exported here), the
TD3-style learner of MA-CQL, OMAR and MA-TD3+BC in ``dom2_jax.algos.td3_family``; the one loop
over updates is ``dom2_jax.training.trainer.scan_updates``.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable, ClassVar, Dict, Sequence, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax.training.train_state import TrainState

from dom2_jax import diffusion
from dom2_jax.algos.losses import (critic_loss, expectile_loss, noisy_proposals,  # noqa: F401
                                   td_critic_loss, td_target)
from dom2_jax.networks import DoubleCritic

Array = jax.Array
TRANSITION_KEYS = ("obs", "actions", "rewards", "next_obs", "dones")


# ----------------------------------------------------------------------------- config
@functools.lru_cache(maxsize=None)
def make_optimizer(lr: float, grad_clip: float):
    """Adam, after a global-norm clip of each network's gradients when ``grad_clip > 0``.

    Cached: equal arguments give the same object, so TrainStates built by separate ``init``
    calls have equal static fields (one compiled program, comparable pytrees)."""
    if grad_clip > 0:
        return optax.chain(optax.clip_by_global_norm(grad_clip), optax.adam(lr))
    return optax.adam(lr)


def _is_tuple_field(f: dataclasses.Field) -> bool:
    t = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    return t.startswith(("Tuple", "tuple", "typing.Tuple"))


@dataclasses.dataclass(frozen=True)
class HparamsBase:
    """Hashable, resolved config (a static pytree field of each algorithm's state).

    Subclasses add their fields with defaults (the algorithm's defaults; ``default_config``
    reads them), set ``NAME`` (used in error messages) and
    ``COEF_NAMES`` (the fields mirrored as dynamic float32 scalars in ``state.coef``), and
    may extend ``checks()``.
    """

    NAME: ClassVar[str] = "algorithm"
    COEF_NAMES: ClassVar[Tuple[str, ...]] = ()
    # Fields added after runs were recorded: a stored config without one means the default
    # (what those runs used), so old runs still load and resume.
    LATER_FIELDS: ClassVar[Tuple[str, ...]] = ()

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
        missing = known - set(config.keys()) - set(cls.LATER_FIELDS)
        if missing:
            raise ValueError(f"{cls.NAME} config lacks fields {sorted(missing)}")
        vals = {k: config[k] for k in known if k in config}
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
    def with_later_fields(cls, agent_config: dict) -> dict:
        """``agent_config`` (a stored dict) with any missing ``LATER_FIELDS`` at their
        defaults: the config an older run was trained with, in today's field set."""
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        return {**{k: defaults[k] for k in cls.LATER_FIELDS}, **agent_config}

    @classmethod
    def default_config(cls):
        """The fields' defaults (all but num_agents, obs_dim, act_dim) as a ConfigDict."""
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
        return make_optimizer(float(lr), float(getattr(self, "grad_clip", 0.0)))

    def train_state(self, module, params, lr) -> TrainState:
        """A TrainState of ``params`` for ``module`` with this config's optimiser at ``lr``."""
        return TrainState.create(apply_fn=module.apply, params=params, tx=self.optimizer(lr))


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
    agent; ``params`` is the dict of this agent's slices of ``state.<field>`` for ``fields``
    (TrainStates and target parameters). Returns (state with step + 1, metrics [A] per term).
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


SELECTIONS = ("softmax", "argmax")


def select(q: Array, key: Array, selection: str, temperature) -> Array:
    """Index of the chosen candidate along the last axis of q [..., K]: ``argmax``, or a draw
    from softmax(z / temperature), z = q standardised over the K candidates (free of the
    task's reward scale; SfBC's exp(alpha Q) selection)."""
    if selection == "argmax":
        return jnp.argmax(q, axis=-1)
    z = (q - jnp.mean(q, -1, keepdims=True)) / (jnp.std(q, -1, keepdims=True) + 1e-6)
    return jax.random.categorical(key, z / temperature, axis=-1)


def select_candidates(cand: Array, q: Array, key: Array, selection: str, temperature) -> Array:
    """Chosen action per row: cand [..., K, d], q [..., K] -> [..., d]."""
    i = select(q, key, selection, temperature)
    return jnp.take_along_axis(cand, i[..., None, None], axis=-2)[..., 0, :]


def apply_loss(ts: TrainState, loss_fn: Callable):
    """One optimiser step of ``ts`` on ``loss_fn(params) -> (loss, aux)``.

    Returns ``(new_ts, loss, aux, grads)`` (grads before the optimiser's clip)."""
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(ts.params)
    return ts.apply_gradients(grads=grads), loss, aux, grads


@functools.lru_cache(maxsize=None)
def module(factory: Callable, *args):
    """``factory(*args)``, cached: equal arguments give the same flax module, so the
    ``apply_fn`` of TrainStates from separate ``init`` calls compare equal."""
    return factory(*args)


def tree_select(flag: Array, new, old):
    """``new`` where the scalar bool ``flag`` holds, else ``old`` (leafwise)."""
    return jax.tree.map(lambda n, o: jnp.where(flag, n, o), new, old)


# ----------------------------------------------------------------------------- diffusion learners
class DiffusionActorModules:
    """Modules of the diffusion-policy learners (DOM2, MA-SfBC), rebuilt at trace time from the
    static fields ``beta_min, beta_max, noise_net, act_dim, noise_hidden, critic_hidden``."""

    @property
    def schedule(self):
        return diffusion.VPSchedule(self.beta_min, self.beta_max)

    @property
    def noise_net_module(self):
        return module(diffusion.make_noise_net, self.noise_net, self.act_dim, self.noise_hidden)

    @property
    def critic_module(self):
        return module(DoubleCritic, self.critic_hidden)

    def diffusion_checks(self):
        """Validity checks of the solver and noise-net fields, as (ok, message) pairs."""
        return [
            (self.solver_order in (1, 2, 3), f"solver_order must be 1, 2 or 3, got {self.solver_order}"),
            (self.num_solver_steps >= 1, f"num_solver_steps must be >= 1, got {self.num_solver_steps}"),
            (self.solver_grid in diffusion.solvers.GRIDS,
             f"solver_grid must be one of {diffusion.solvers.GRIDS}"),
            (self.noise_net in diffusion.NOISE_NETS,
             f"noise_net must be one of {diffusion.NOISE_NETS}"),
            (0.0 < self.t_end < 1.0, f"t_end must be in (0, 1), got {self.t_end}"),
        ]
