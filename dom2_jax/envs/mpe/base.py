"""Shared machinery of the JAX MPE scenarios: state, reset/step, shifts, validation.

A scenario subclasses ``MPEEnv`` and provides
  * ``spawn_half_width`` [n_entities]: entity e starts uniform in [-w_e, w_e]^2;
  * ``_learner_obs(p_pos, p_vel) -> [num_agents, obs_dim]``;
  * ``_learner_reward(p_pos, p_vel) -> [num_agents]``;
and, if it has scripted (fixed-policy) agents, ``_scripted_actions(state, key) -> [n_scripted, 2]``.

World agents are split into learners (``learner_idx``, the agents a learning algorithm
controls, in ``agent_names`` order) and scripted agents (``scripted_idx``; e.g. the prey of
tag/world, driven by a fixed policy inside ``step``).
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from dom2_jax.envs import api
from dom2_jax.envs.mpe import core

Array = jax.Array

SHIFTS = (None, "speed")


@struct.dataclass
class MPEState:
    """State of one MPE episode.

    Attributes:
      p_pos: [n_entities, 2] positions; every world agent (mpe2's ``world.agents`` order,
             learners and scripted ones) then the landmarks.
      p_vel: [n_entities, 2] velocities (zero for landmarks).
      t:     [] int32, number of steps taken in this episode.
      speed: [n_world_agents] float32 speed factors (1 without shift; U[v_min, 1] for the
             learning agents under ``shift="speed"``); scale action force and max speed.
    """

    p_pos: Array
    p_vel: Array
    t: Array
    speed: Array


class MPEEnv(api.Env):
    """Base class of the pure-JAX MPE scenarios (see module docstring)."""

    act_dim = 2
    default_v_min = 0.3

    def __init__(self, spec: core.WorldSpec, learner_idx: Sequence[int],
                 agent_names: Sequence[str], obs_dim: int, *, episode_length: int = 25,
                 shift: Optional[str] = None, v_min: Optional[float] = None,
                 integration: str = "original", force_model: str = "original"):
        if shift not in SHIFTS:
            raise ValueError(f"unknown shift {shift!r} for {self.name}; expected one of {SHIFTS}")
        if integration not in core.INTEGRATIONS:
            raise ValueError(f"unknown integration {integration!r}; expected one of "
                             f"{core.INTEGRATIONS}")
        if force_model not in core.FORCE_MODELS:
            raise ValueError(f"unknown force_model {force_model!r}; expected one of "
                             f"{core.FORCE_MODELS}")
        if int(episode_length) < 1:
            raise ValueError(f"episode_length must be >= 1, got {episode_length}")
        self.spec = spec
        self.learner_idx = np.asarray(learner_idx, np.int32)
        self.scripted_idx = np.asarray(
            [i for i in range(spec.n_agents) if i not in set(learner_idx)], np.int32)
        self.num_agents = len(learner_idx)
        self.agent_names = tuple(agent_names)
        self.obs_dim = int(obs_dim)
        self.episode_length = int(episode_length)
        self.shift = shift
        self.v_min = float(self.default_v_min if v_min is None else v_min)
        if not 0.0 < self.v_min <= 1.0:
            raise ValueError(f"v_min must be in (0, 1], got {self.v_min}")
        self.integration = integration
        self.force_model = force_model

    # ----------------------------------------------------------------- scenario hooks
    spawn_half_width: np.ndarray   # [n_entities], set by the scenario

    def _learner_obs(self, p_pos: Array, p_vel: Array) -> Array:
        raise NotImplementedError

    def _learner_reward(self, p_pos: Array, p_vel: Array) -> Array:
        raise NotImplementedError

    def _scripted_actions(self, state: MPEState, key: Array) -> Array:
        return jnp.zeros((len(self.scripted_idx), 2), core.float_dtype())

    # ----------------------------------------------------------------- public API
    def reset(self, key: Array) -> Tuple[Array, MPEState]:
        """Samples a new episode. key -> (obs [num_agents, obs_dim], MPEState)."""
        # One RNG call for everything (threefry dominates the compile time of reset).
        n = self.spec.n_entities
        u = jax.random.uniform(key, (2 * n + self.num_agents,), core.float_dtype())
        half = np.asarray(self.spawn_half_width, np.float32)[:, None]
        p_pos = (2.0 * u[: 2 * n].reshape(n, 2) - 1.0) * half
        p_vel = jnp.zeros_like(p_pos)
        speed = jnp.ones((self.spec.n_agents,), core.float_dtype())
        if self.shift == "speed":
            v = self.v_min + (1.0 - self.v_min) * u[2 * n:]
            speed = speed.at[self.learner_idx].set(v)
        state = MPEState(p_pos=p_pos, p_vel=p_vel, t=jnp.zeros((), jnp.int32), speed=speed)
        return self._learner_obs(p_pos, p_vel), state

    def scripted_actions(self, state: MPEState, key: Optional[Array] = None) -> Array:
        """Actions [n_scripted, 2] in [-1, 1] of the fixed-policy agents in ``state``."""
        if key is None:
            key = jax.random.PRNGKey(0)
        return jnp.clip(self._scripted_actions(state, key), -1.0, 1.0)

    def step(self, key: Array, state: MPEState, actions: Array
             ) -> Tuple[Array, MPEState, Array, Array, Dict[str, Any]]:
        """One step: actions [num_agents, 2] (clipped to [-1, 1]) -> (obs, state, reward
        [num_agents], done [] (True after ``episode_length`` steps), info {})."""
        actions = jnp.asarray(actions)
        if actions.shape != (self.num_agents, self.act_dim):
            raise ValueError(f"{self.name}: actions must have shape "
                             f"({self.num_agents}, {self.act_dim}), got {actions.shape}")
        u = jnp.zeros((self.spec.n_agents, 2), core.float_dtype())
        u = u.at[self.learner_idx].set(jnp.clip(actions.astype(core.float_dtype()), -1.0, 1.0))
        if len(self.scripted_idx):
            u = u.at[self.scripted_idx].set(self.scripted_actions(state, key))
        p_pos, p_vel = core.world_step(self.spec, state.p_pos, state.p_vel, u,
                                       state.speed, self.integration, self.force_model)
        t = state.t + 1
        new_state = MPEState(p_pos=p_pos, p_vel=p_vel, t=t, speed=state.speed)
        obs = self._learner_obs(p_pos, p_vel)
        reward = self._learner_reward(p_pos, p_vel).astype(core.float_dtype())
        done = t >= self.episode_length
        return obs, new_state, reward, done, {}

    def observe(self, state: MPEState) -> Array:
        """Observations [num_agents, obs_dim] of the learning agents in ``state``."""
        return self._learner_obs(state.p_pos, state.p_vel)

    def reward(self, state: MPEState) -> Array:
        """Rewards [num_agents] of the learning agents for ``state`` (post-step state)."""
        return self._learner_reward(state.p_pos, state.p_vel)

    def state_from_positions(self, p_pos, p_vel=None, speed=None, t=0) -> MPEState:
        """Builds an ``MPEState`` from explicit arrays (tests, parity checks, replays)."""
        p_pos = jnp.asarray(p_pos, core.float_dtype())
        if p_pos.shape != (self.spec.n_entities, 2):
            raise ValueError(f"p_pos must have shape ({self.spec.n_entities}, 2), "
                             f"got {p_pos.shape}")
        p_vel = jnp.zeros_like(p_pos) if p_vel is None else jnp.asarray(p_vel, core.float_dtype())
        speed = (jnp.ones((self.spec.n_agents,), core.float_dtype()) if speed is None
                 else jnp.asarray(speed, core.float_dtype()))
        return MPEState(p_pos=p_pos, p_vel=p_vel, t=jnp.asarray(t, jnp.int32), speed=speed)


# ------------------------------------------------------------------ shared helpers
def others_index(n: int) -> np.ndarray:
    """[n, n-1] table: row i lists 0..n-1 without i (the MPE's "for other in agents")."""
    return np.asarray([[j for j in range(n) if j != i] for i in range(n)], np.int32)

