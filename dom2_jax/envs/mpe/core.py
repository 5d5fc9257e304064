"""Particle physics of the multi-agent particle environments (MPE), in JAX.

A world holds ``n_entities = n_agents + n_landmarks`` discs in 2-D. Agents come first (in
mpe2's ``world.agents`` order), then landmarks, exactly like ``world.entities`` in the
original MPE and in mpe2. The static description of a world (sizes, masses, which entities
move or collide, accelerations, speed limits, colours) lives in a ``WorldSpec`` made of
numpy arrays; the dynamic state is just ``p_pos`` and ``p_vel`` arrays [n_entities, 2].

One physics step (``world_step``) does what ``World.step`` of the MPE does:

1. action force of agent i (``u`` in [-1, 1]^2), by ``force_model``:
   ``"original"``: ``u_i * accel_i`` (original MPE and mpe2: the env scales u by the
   "sensitivity" ``accel``, 5.0 when unset, and the world adds no further factor);
   ``"omar"``: OMAR's copy of ``core.py`` multiplies the already scaled action again by
   ``mass * accel`` when ``accel`` is set, i.e. ``u * accel**2`` (9x / 16x in tag and world;
   spread, whose accel is unset, is unaffected: ``5 u``);
2. contact force between every pair of colliding entities (at least one movable):
   ``F = contact_force * delta / dist * k * logaddexp(0, -(dist - dist_min) / k)``,
   ``k = contact_margin``, ``dist_min`` = sum of radii; applied +F / -F to the two entities,
   scaled by the mass ratio when both move (all MPE masses are 1, so the ratio is 1);
3. integration, in one of two orders:

   ``"original"`` (the original MPE of Lowe et al. and OMAR's copy of it; our default)::

       v = v * (1 - damping); v += F / m * dt; clip |v| to max_speed; p += v * dt

   ``"mpe2"`` (PettingZoo's MPE / mpe2; JaxMARL follows it)::

       p += v * dt; v = v * (1 - damping); v += F / m * dt; clip |v| to max_speed

Landmarks (non-movable entities) never change state.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

INTEGRATIONS = ("original", "mpe2")
FORCE_MODELS = ("original", "omar")


def float_dtype():
    """The dtype the MPE computes in: float32, or float64 inside ``jax.enable_x64`` (the
    portable rollouts of dataset generation, ``dom2_jax.envs.portable``). Read at trace time."""
    return jax.dtypes.canonicalize_dtype(jnp.float64)


@dataclasses.dataclass(frozen=True, eq=False)
class WorldSpec:
    """Static description of an MPE world (numpy arrays; never traced).

    Attributes (n = n_agents + n_landmarks):
      n_agents:      number of agents (learning and scripted), first in the entity order.
      size:          [n] radii.
      movable:       [n] bool.
      collide:       [n] bool.
      mass:          [n] masses (1 everywhere in the MPE scenarios used here).
      accel:         [n_agents] action-force scale ("sensitivity"; 5.0 when the MPE leaves
                     ``agent.accel`` as None).
      accel_set:     [n_agents] bool, whether the scenario sets ``agent.accel`` (matters for
                     ``force_model="omar"`` only).
      max_speed:     [n] speed limit; ``inf`` where the MPE has ``max_speed=None``.
      color:         [n, 3] RGB in [0, 1], for rendering only.
      names:         entity names, for rendering and error messages.
      dt, damping, contact_force, contact_margin: world constants (MPE defaults).
    """

    n_agents: int
    size: np.ndarray
    movable: np.ndarray
    collide: np.ndarray
    mass: np.ndarray
    accel: np.ndarray
    accel_set: np.ndarray
    max_speed: np.ndarray
    color: np.ndarray
    names: tuple
    dt: float = 0.1
    damping: float = 0.25
    contact_force: float = 1e2
    contact_margin: float = 1e-3

    @property
    def n_entities(self) -> int:
        return int(self.size.shape[0])

    @property
    def n_landmarks(self) -> int:
        return self.n_entities - self.n_agents


def make_world_spec(agents: Sequence[dict], landmarks: Sequence[dict], **world_kwargs) -> WorldSpec:
    """Builds a ``WorldSpec`` from per-entity dicts.

    Each agent dict may hold ``name, size (0.05), accel (5.0), max_speed (None), collide
    (True), mass (1.0), color``; each landmark dict ``name, size (0.05), collide (True),
    color``. Defaults are the MPE's ``Entity``/``Agent`` defaults.
    """
    ents = list(agents) + list(landmarks)
    n_agents = len(agents)

    def col(key, default, dtype):
        return np.asarray([e.get(key, default) for e in ents], dtype=dtype)

    max_speed = np.asarray(
        [np.inf if e.get("max_speed") is None else e["max_speed"] for e in ents], np.float32)
    accel = np.asarray([a.get("accel", 5.0) if a.get("accel") is not None else 5.0
                        for a in agents], np.float32)
    color = np.asarray([e.get("color", (0.25, 0.25, 0.25)) for e in ents], np.float32)
    return WorldSpec(
        n_agents=n_agents,
        size=col("size", 0.05, np.float32),
        movable=np.asarray([True] * n_agents + [False] * len(landmarks)),
        collide=col("collide", True, bool),
        mass=col("mass", 1.0, np.float32),
        accel=accel,
        accel_set=np.asarray([a.get("accel") is not None for a in agents], bool),
        max_speed=max_speed,
        color=color,
        names=tuple(e.get("name", f"entity_{i}") for i, e in enumerate(ents)),
        **world_kwargs,
    )


def pairwise_delta(a: Array, b: Array) -> Array:
    """``a[:, None] - b[None, :]``: [n, 2], [m, 2] -> [n, m, 2]."""
    return a[:, None, :] - b[None, :, :]


def norm(x: Array, axis: int = -1) -> Array:
    """Euclidean norm over ``axis`` (sqrt of sum of squares, as the MPE computes it)."""
    return jnp.sqrt(jnp.sum(jnp.square(x), axis=axis))


def contact_forces(spec: WorldSpec, p_pos: Array) -> Array:
    """Environment (contact) forces on every entity: p_pos [n, 2] -> [n, 2].

    Pairs interact when both entities collide, at least one moves, and they are distinct.
    Non-movable entities receive zero force.
    """
    n = spec.n_entities
    both_collide = spec.collide[:, None] & spec.collide[None, :]
    some_movable = spec.movable[:, None] | spec.movable[None, :]
    active = both_collide & some_movable & ~np.eye(n, dtype=bool)           # [n, n] static
    if not active.any():
        return jnp.zeros_like(p_pos)
    # Force on i from j is +F_ij; scaled by m_j / m_i when both move (OMAR's core.py).
    both_movable = spec.movable[:, None] & spec.movable[None, :]
    ratio = np.where(both_movable, spec.mass[None, :] / spec.mass[:, None], 1.0)
    weight = (active * ratio * spec.movable[:, None]).astype(np.float32)   # [n, n] static
    dist_min = (spec.size[:, None] + spec.size[None, :]).astype(np.float32)

    delta = pairwise_delta(p_pos, p_pos)                                     # [n, n, 2]
    sq = jnp.sum(jnp.square(delta), axis=-1)
    dist = jnp.sqrt(jnp.where(active, sq, 1.0))                              # safe on diagonal
    k = spec.contact_margin
    penetration = jnp.logaddexp(0.0, -(dist - dist_min) / k) * k
    force = spec.contact_force * delta / dist[..., None] * penetration[..., None]
    return jnp.sum(force * weight[..., None], axis=1)


def action_forces(spec: WorldSpec, u: Array, accel_scale: Optional[Array] = None,
                  force_model: str = "original") -> Array:
    """Action forces of the agents padded to all entities: u [n_agents, 2] -> [n, 2].

    ``accel_scale`` [n_agents] multiplies each agent's action force (speed shift).
    ``force_model``: "original" (``u * accel``) or "omar" (``u * accel * mass * accel``
    where accel is set); see the module docstring.
    """
    if force_model not in FORCE_MODELS:
        raise ValueError(f"unknown force_model {force_model!r}; expected one of {FORCE_MODELS}")
    gain = spec.accel.astype(np.float32)
    if force_model == "omar":
        mass = spec.mass[: spec.n_agents]
        gain = gain * np.where(spec.accel_set, mass * spec.accel, mass)
    accel = jnp.asarray(gain, float_dtype())
    if accel_scale is not None:
        accel = accel * accel_scale
    f = u * accel[:, None]
    pad = jnp.zeros((spec.n_landmarks, 2), f.dtype)
    return jnp.concatenate([f, pad], axis=0)


def clip_speed(p_vel: Array, max_speed: Array) -> Array:
    """Rescales velocities [n, 2] whose norm exceeds ``max_speed`` [n] to that norm."""
    speed = norm(p_vel)
    over = speed > max_speed
    scale = jnp.where(over, max_speed / jnp.where(over, speed, 1.0), 1.0)
    return p_vel * scale[:, None]


def integrate(spec: WorldSpec, p_pos: Array, p_vel: Array, force: Array,
              max_speed: Array, integration: str = "original"):
    """Integrates one step. Returns (p_pos, p_vel), both [n, 2].

    ``max_speed`` [n] (``inf`` = no limit). ``integration`` is "original" or "mpe2"
    (see the module docstring).
    """
    if integration not in INTEGRATIONS:
        raise ValueError(f"unknown integration {integration!r}; expected one of {INTEGRATIONS}")
    movable = spec.movable[:, None]
    mass = jnp.asarray(spec.mass)[:, None]
    new_pos = p_pos + p_vel * spec.dt if integration == "mpe2" else None
    v = p_vel * (1.0 - spec.damping)
    v = v + (force / mass) * spec.dt
    v = clip_speed(v, max_speed)
    if integration == "original":
        new_pos = p_pos + v * spec.dt
    return jnp.where(movable, new_pos, p_pos), jnp.where(movable, v, p_vel)


def world_step(spec: WorldSpec, p_pos: Array, p_vel: Array, u: Array,
               speed_factor: Optional[Array] = None, integration: str = "original",
               force_model: str = "original"):
    """One MPE physics step.

    Args:
      p_pos, p_vel: [n_entities, 2].
      u: [n_agents, 2] agent actions (already clipped to [-1, 1]).
      speed_factor: optional [n_agents]; scales each agent's action force and max speed.
      integration: "original" (default) or "mpe2".
      force_model: "original" (default, ``u * accel``) or "omar" (``u * accel**2``).
    Returns:
      (p_pos, p_vel) after the step.
    """
    max_speed = jnp.asarray(spec.max_speed)
    if speed_factor is not None:
        pad = jnp.ones((spec.n_landmarks,), float_dtype())
        max_speed = max_speed * jnp.concatenate([speed_factor, pad])
    force = action_forces(spec, u, speed_factor, force_model) + contact_forces(spec, p_pos)
    return integrate(spec, p_pos, p_vel, force, max_speed, integration)


def collisions(p_a: Array, size_a: np.ndarray, p_b: Array, size_b: np.ndarray) -> Array:
    """Scenario collision test ``dist < r_a + r_b``: [n, 2], [m, 2] -> bool [n, m]."""
    dist = norm(pairwise_delta(p_a, p_b))
    return dist < (np.asarray(size_a)[:, None] + np.asarray(size_b)[None, :])
