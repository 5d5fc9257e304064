"""MAMuJoCo HalfCheetah 2x3 on MJX (``mujoco.mjx``): pure, jittable, vmappable.

    env = make_halfcheetah_2x3(obsk=0, shift=None)
    obs, state = env.reset(key)                      # obs [2, obs_dim]
    obs, state, reward, done, info = env.step(key, state, actions)   # actions [2, 3]

Physics: gymnasium's ``half_cheetah.xml`` (loaded from the installed gymnasium package),
timestep 0.01, frame_skip 5 (dt 0.05), 1000-step episodes (``done`` marks step 1000; the env
does not reset itself). Reward as HalfCheetah-v5: x-velocity - 0.1 * sum(actions^2), the same
team reward for both agents (reward [2], equal entries; ``score`` = reward[..., 0]).

Shifts (``shift="R"|"E"``): per-episode factors (power, density, friction) live in the state
(``state.scalings`` [3]); ``step`` builds the scaled ``mjx.Model`` fields from them, so envs
with different shifts run side by side in one ``vmap``.
"""
from __future__ import annotations

import contextlib
import io
from typing import Any, Dict, Tuple

import jax
import jax.numpy as jnp
from flax import struct

from dom2_jax.envs import api
from dom2_jax.envs.mamujoco import common

Array = jax.Array


_WARP_NOTICES = ("Failed to import warp:", "Failed to import mujoco_warp:")


def _mjx():
    """``mujoco.mjx``, imported lazily. Its first import prints "Failed to import warp" when
    the optional NVIDIA Warp backend is absent (we do not use it); those two lines are
    dropped, anything else it prints is passed on."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        from mujoco import mjx  # (a) heavy (~2 s), MJX path only; its notices are filtered here
    for line in buf.getvalue().splitlines():
        if not line.startswith(_WARP_NOTICES):
            print(line)
    return mjx


@struct.dataclass
class HalfCheetahState:
    """State of one HalfCheetah 2x3 episode (add leading axes with vmap).

    Attributes:
      data:     ``mjx.Data`` after the last physics step (``data.qpos`` [9], ``data.qvel`` [9]
                in gymnasium HalfCheetah-v5 layout; ``data.qacc_warmstart`` carries the
                solver warm start like C MuJoCo). Derived quantities (xpos, contacts, ...) are
                those of the last substep's forward pass (not computed after ``reset``).
      t:        [] int32, steps taken in this episode.
      scalings: [3] float32 (power, density, friction) factors; ones without shift.
    """

    data: Any
    t: Array
    scalings: Array

    @property
    def qpos(self) -> Array:
        """[..., 9] generalised positions (rootx, rootz, rooty, bthigh, ..., ffoot)."""
        return self.data.qpos

    @property
    def qvel(self) -> Array:
        """[..., 9] generalised velocities (same order as qpos)."""
        return self.data.qvel


class HalfCheetah2x3(api.Env):
    """Two-agent HalfCheetah (agent 0: bthigh, bshin, bfoot; agent 1: fthigh, fshin, ffoot).

    Args: see ``common.HalfCheetahConfig`` (obsk, global_categories, shift, episode_length,
    frame_skip, forward_reward_weight, ctrl_cost_weight, reset_noise_scale).
    """

    name = "mamujoco_halfcheetah_2x3"
    act_dim = 3

    def __init__(self, **config):
        self.config = common.HalfCheetahConfig(**config)
        self.num_agents = len(common.PARTITION_2X3)
        self.agent_names = common.AGENT_NAMES
        self.episode_length = int(self.config.episode_length)
        self.shift = self.config.shift
        self.obsk = self.config.obsk
        self.obs_index = common.observation_index(self.config.obsk,
                                                  self.config.global_categories)
        self.obs_labels = common.observation_labels(self.config.obsk,
                                                    self.config.global_categories)
        self.obs_dim = int(self.obs_index.shape[1])
        self.mj_model = common.load_model()  # gymnasium's model, untouched
        solver_model = common.load_model()
        if self.config.mjx_ls_iterations is not None:
            solver_model.opt.ls_iterations = int(self.config.mjx_ls_iterations)
        if self.config.mjx_iterations is not None:
            solver_model.opt.iterations = int(self.config.mjx_iterations)
        mjx = _mjx()
        self.mjx_model = mjx.put_model(solver_model)
        self._base_fields = {f: getattr(self.mjx_model, f) for f in common.SCALED_FIELDS}
        self._data0 = mjx.make_data(self.mjx_model)

    # ----------------------------------------------------------------- helpers
    @property
    def dt(self) -> float:
        return self.config.dt

    def model_for(self, scalings: Array):
        """``mjx.Model`` with (power, density, friction) factors [3] applied (traceable)."""
        fields = common.scaled_model_fields(self._base_fields, scalings.astype(jnp.float32))
        return self.mjx_model.replace(**fields)

    def observe(self, state: HalfCheetahState) -> Array:
        """Observations [num_agents, obs_dim] of ``state`` (works with leading axes too)."""
        return common.observe(state.qpos, state.qvel, self.obs_index)

    def state_from_qpos(self, qpos, qvel, scalings=None, t=0) -> HalfCheetahState:
        """Builds a state from explicit arrays qpos [9], qvel [9], scalings [3] (tests,
        parity checks, replays). The solver warm start is zero, as after ``mj_resetData``."""
        qpos = jnp.asarray(qpos, jnp.float32)
        qvel = jnp.asarray(qvel, jnp.float32)
        if qpos.shape != (common.NQ,) or qvel.shape != (common.NV,):
            raise ValueError(f"qpos and qvel must have shape ({common.NQ},), got "
                             f"{qpos.shape} and {qvel.shape}")
        scalings = (jnp.ones((3,), jnp.float32) if scalings is None
                    else jnp.asarray(scalings, jnp.float32))
        if scalings.shape != (3,):
            raise ValueError(f"scalings must have shape (3,) (power, density, friction), "
                             f"got {scalings.shape}")
        data = self._data0.replace(qpos=qpos, qvel=qvel)
        return HalfCheetahState(data=data, t=jnp.asarray(t, jnp.int32), scalings=scalings)

    # ----------------------------------------------------------------- public API
    def reset(self, key: Array) -> Tuple[Array, HalfCheetahState]:
        """key -> (obs [2, obs_dim], state). HalfCheetah-v5 reset noise; shift factors
        sampled here (once per episode)."""
        qpos, qvel, scalings = common.sample_initial(key, self.config)
        state = self.state_from_qpos(qpos, qvel, scalings)
        return self.observe(state), state

    def step(self, key: Array, state: HalfCheetahState, actions: Array
             ) -> Tuple[Array, HalfCheetahState, Array, Array, Dict[str, Array]]:
        """actions [2, 3] (clipped to [-1, 1]) -> (obs [2, obs_dim], state, reward [2],
        done [] (True once t >= episode_length), info {x_position, x_velocity,
        reward_forward, reward_ctrl} scalars). ``key`` is unused (deterministic physics)."""
        del key
        actions = jnp.asarray(actions)
        common.check_actions_shape(actions.shape)
        clipped = jnp.clip(actions.astype(jnp.float32), -1.0, 1.0)
        model = self.model_for(state.scalings)
        mjx = _mjx()
        x_before = state.data.qpos[0]
        data = state.data.replace(ctrl=common.actions_to_ctrl(clipped))
        data = jax.lax.fori_loop(0, self.config.frame_skip, lambda _, d: mjx.step(model, d),
                                 data)
        reward, x_velocity, forward, ctrl_cost = common.reward_terms(
            x_before, data.qpos[0], clipped, self.config)
        t = state.t + 1
        new_state = HalfCheetahState(data=data, t=t, scalings=state.scalings)
        reward = jnp.full((self.num_agents,), reward, jnp.float32)
        info = {"x_position": data.qpos[0], "x_velocity": x_velocity,
                "reward_forward": forward, "reward_ctrl": -ctrl_cost}
        return self.observe(new_state), new_state, reward, t >= self.episode_length, info

    def global_state(self, state: HalfCheetahState, obs: Array = None) -> Array:
        """[17] the single-agent HalfCheetah observation (qpos[1:], qvel) for centralised
        critics: it holds the body velocity the reward depends on, which no obsk-0 agent sees."""
        del obs
        return jnp.concatenate([state.qpos[..., 1:], state.qvel], axis=-1)

    def score(self, reward: Array) -> Array:
        """Team reward: reward[..., 0] (all agents get the same reward)."""
        return reward[..., 0]


def make_halfcheetah_2x3(**overrides) -> HalfCheetah2x3:
    """Factory registered as ``mamujoco_halfcheetah_2x3``.

    Overrides: ``obsk`` (0 default: 6-dim own-joint obs as OMAR / the DOM2 paper; 1:
    gymnasium-robotics ``mamujoco_v1`` default layout, 12 dims), ``global_categories``,
    ``shift`` (None, "R", "E"), ``episode_length`` (1000), ``frame_skip`` (5),
    ``forward_reward_weight``, ``ctrl_cost_weight``, ``reset_noise_scale``,
    ``mjx_ls_iterations`` (8), ``mjx_iterations`` (None); see ``common.HalfCheetahConfig``.
    """
    return HalfCheetah2x3(**overrides)
