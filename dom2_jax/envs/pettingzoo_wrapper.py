"""PettingZoo views of any dom2_jax JAX environment: a ``ParallelEnv`` and, through
PettingZoo's own ``parallel_to_aec``, an ``AECEnv``.

    from dom2_jax.envs.pettingzoo_wrapper import env, parallel_env
    penv = parallel_env("mpe_tag", shift="speed", seed=0)      # or PettingZooParallelEnv(make(...))
    obs, infos = penv.reset(seed=0)
    obs, rewards, terminations, truncations, infos = penv.step(
        {a: penv.action_space(a).sample() for a in penv.agents})
    aec = env("mamujoco_halfcheetah_2x3", shift="R", max_cycles=100, render_mode="rgb_array")

Agents are the env's learning agents (``env.agent_names``); scripted agents (the prey of
tag/world) act inside the env. Spaces: ``Box(-inf, inf, (obs_dim,), float32)`` and
``Box(-1, 1, (act_dim,), float32)``; ``state_space`` ``Box(-inf, inf, (state_dim,), float32)``.
Episodes end by time limit: after ``max_cycles`` steps (default and at most
``env.episode_length``; a longer episode needs ``episode_length=...`` on the env) every agent
is *truncated* (never terminated) and ``agents`` becomes empty. An agent missing from the
action dict acts with zeros. reset/step are jitted once per env object and shared by every
wrapper of it (``parallel_env``/``env`` reuse one env object per name and overrides); the PRNG
key is kept on the wrapper (seeded by ``reset(seed=...)``).

``state()`` is ``env.global_state`` (what the online TD3's central critics see): MPE, all
learning agents' observations concatenated; HalfCheetah, gymnasium's HalfCheetah-v5
observation (qpos[1:], qvel; 17 dims). ``render()`` with ``render_mode="rgb_array"`` returns
the current frame (uint8 [H, W, 3]): MPE through ``dom2_jax.envs.render`` (matplotlib),
HalfCheetah through ``dom2_jax.envs.mamujoco.render.FrameRenderer`` (MuJoCo, needs an OpenGL
backend; raises ``RenderingUnavailable`` without one). ``render_mode="human"`` is accepted,
with a warning, because PettingZoo's tools construct every env that way, but there is no
window: ``render()`` returns None, as PettingZoo specifies for human mode, and
``metadata["render_modes"]`` lists only ``"rgb_array"``.

Passes PettingZoo's ``parallel_api_test``, ``parallel_seed_test``, ``api_test``, ``seed_test``,
``max_cycles_test``, ``state_test`` and ``render_test`` for every task and shift
(tests/test_pettingzoo_suites.py).
"""
from __future__ import annotations

import functools
import warnings
import weakref
from typing import Any, Dict, Optional

import jax
import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv
from pettingzoo.utils.conversions import parallel_to_aec

from dom2_jax import envs as _envs

RENDER_MODES = ("rgb_array",)

# env object -> (jitted reset, jitted step, global-state shape). Weak keys, and the programs
# reach the env only through a weak reference, so an env nobody holds is dropped with them.
_PROGRAMS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _programs(env):
    """The jitted reset and step of ``env`` (compiled once per env object) and the shape of
    its global state."""
    if env in _PROGRAMS:
        return _PROGRAMS[env]
    ref = weakref.ref(env)

    def reset(key):
        key, sub = jax.random.split(key)
        obs, state = ref().reset(sub)
        return key, obs, state, ref().global_state(state, obs)

    def step(key, state, actions):
        key, sub = jax.random.split(key)
        obs, state, reward, done, _ = ref().step(sub, state, actions)
        return key, obs, state, reward, done, ref().global_state(state, obs)

    reset_fn, step_fn = jax.jit(reset), jax.jit(step)
    key = jax.eval_shape(lambda: jax.random.PRNGKey(0))  # abstract: nothing compiles
    state_shape = tuple(jax.eval_shape(reset_fn, key)[3].shape)
    _PROGRAMS[env] = (reset_fn, step_fn, state_shape)
    return _PROGRAMS[env]


class PettingZooParallelEnv(ParallelEnv):
    """Wraps a ``dom2_jax.envs.api.Env`` as a PettingZoo ParallelEnv (see module docstring).

    Args:
      env: the JAX environment.
      seed: PRNG seed used until ``reset(seed=...)`` (None: fresh entropy).
      render_mode: None, "rgb_array" or "human" (no window; ``render()`` returns None).
      max_cycles: steps per episode, 1..``env.episode_length`` (default: the latter).
    """

    metadata = {"render_modes": list(RENDER_MODES), "is_parallelizable": True,
                "render_fps": 10}

    def __init__(self, env, seed: Optional[int] = None, render_mode: Optional[str] = None,
                 max_cycles: Optional[int] = None):
        if render_mode == "human":
            warnings.warn("render_mode='human' opens no window here: render() returns None "
                          "(use render_mode='rgb_array' for frames)", stacklevel=2)
        elif render_mode not in (None,) + RENDER_MODES:
            raise ValueError(f"unsupported render_mode {render_mode!r}; expected None, "
                             "'rgb_array' or 'human'")
        max_cycles = env.episode_length if max_cycles is None else max_cycles
        if int(max_cycles) != max_cycles or not 1 <= max_cycles <= env.episode_length:
            raise ValueError(f"max_cycles must be an integer in [1, {env.episode_length}] (the "
                             f"episode length of {env.name}; make the env with "
                             f"episode_length=... for longer episodes), got {max_cycles!r}")
        self.env = env
        self.render_mode = render_mode
        self.max_cycles = int(max_cycles)
        self.metadata = dict(self.metadata, name=getattr(env, "name", type(env).__name__))
        if getattr(env, "dt", None):  # MuJoCo: one frame per env step (1 / dt = 20)
            self.metadata["render_fps"] = int(round(1.0 / env.dt))
        self.possible_agents = list(env.agent_names)
        self.agents: list = []
        self._obs_spaces = {a: spaces.Box(-np.inf, np.inf, (env.obs_dim,), np.float32)
                            for a in self.possible_agents}
        self._act_spaces = {a: spaces.Box(-1.0, 1.0, (env.act_dim,), np.float32)
                            for a in self.possible_agents}
        self._reset_fn, self._step_fn, state_shape = _programs(env)
        self.state_space = spaces.Box(-np.inf, np.inf, state_shape, np.float32)
        self._key = jax.random.PRNGKey(np.random.SeedSequence().entropy % (2 ** 31)
                                       if seed is None else seed)
        self._state = None
        self._global_state = None
        self._t = 0
        self._renderer = None

    # -------------------------------------------------------------------- spaces
    def observation_space(self, agent):
        return self._obs_spaces[agent]

    def action_space(self, agent):
        return self._act_spaces[agent]

    # -------------------------------------------------------------------- dynamics
    def _obs_dict(self, obs) -> Dict[str, np.ndarray]:
        obs = np.asarray(obs, np.float32)
        return {a: obs[i] for i, a in enumerate(self.possible_agents)}

    def reset(self, seed: Optional[int] = None, options: Optional[dict] = None):
        if seed is not None:
            self._key = jax.random.PRNGKey(seed)
        self._key, obs, self._state, self._global_state = self._reset_fn(self._key)
        self._t = 0
        self.agents = list(self.possible_agents)
        return self._obs_dict(obs), {a: {} for a in self.agents}

    def step(self, actions: Dict[str, Any]):
        if not self.agents:
            raise RuntimeError("step() called on a finished episode; call reset() first")
        unknown = set(actions) - set(self.possible_agents)
        if unknown:
            raise ValueError(f"actions for unknown agents {sorted(unknown)}; agents are "
                             f"{self.possible_agents}")
        act = np.zeros((len(self.possible_agents), self.env.act_dim), np.float32)
        for i, a in enumerate(self.possible_agents):
            if a in actions:
                x = np.asarray(actions[a], np.float32)
                if x.shape != (self.env.act_dim,):
                    raise ValueError(f"action of {a} must have shape ({self.env.act_dim},), "
                                     f"got {x.shape}")
                act[i] = x
        self._key, obs, self._state, reward, done, self._global_state = self._step_fn(
            self._key, self._state, act)
        self._t += 1
        reward = np.asarray(reward)
        truncated = bool(done) or self._t >= self.max_cycles
        agents = self.agents
        obs_d = self._obs_dict(obs)
        rewards = {a: float(reward[i]) for i, a in enumerate(self.possible_agents)}
        terminations = {a: False for a in agents}
        truncations = {a: truncated for a in agents}
        infos = {a: {} for a in agents}
        if truncated:
            self.agents = []
        return ({a: obs_d[a] for a in agents}, {a: rewards[a] for a in agents},
                terminations, truncations, infos)

    def state(self) -> np.ndarray:
        """Global state [state_dim] float32: ``env.global_state`` of the current state."""
        if self._global_state is None:
            raise RuntimeError("state() called before reset()")
        return np.asarray(self._global_state, np.float32)

    # -------------------------------------------------------------------- rendering
    def render(self):
        """The current frame, uint8 [H, W, 3] (``render_mode="rgb_array"``); else None."""
        if self.render_mode != "rgb_array":
            return None
        if self._state is None:
            raise RuntimeError("render() called before reset()")
        if hasattr(self._state, "p_pos"):  # MPE
            from dom2_jax.envs.render import render_frames  # (a) matplotlib: render() only
            return render_frames(self.env, self._state)[0]
        if hasattr(self._state, "qpos"):  # MuJoCo
            if self._renderer is None:
                from dom2_jax.envs.mamujoco.render import FrameRenderer  # (a) OpenGL: render() only
                self._renderer = FrameRenderer()
            return self._renderer(np.asarray(self._state.qpos))
        raise NotImplementedError(f"no renderer for {self.metadata['name']} states")

    def close(self):
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None


# ------------------------------------------------------------------------ constructors
@functools.lru_cache(maxsize=None)
def _shared_env(name: str, overrides: tuple):
    return _envs.make(name, **dict(overrides))


def _env_object(name: str, overrides: dict):
    """One env object per (name, overrides) in this process, so wrappers share its compiled
    reset/step; overrides that cannot be hashed (e.g. prey parameters) get a fresh env."""
    try:
        key = tuple(sorted(overrides.items()))
        hash(key)
    except TypeError:
        return _envs.make(name, **overrides)
    return _shared_env(name, key)


def parallel_env(name: str, *, seed: Optional[int] = None, render_mode: Optional[str] = None,
                 max_cycles: Optional[int] = None, **overrides) -> PettingZooParallelEnv:
    """``PettingZooParallelEnv`` of task ``name`` (``dom2_jax.registry.TASKS``) built with
    ``dom2_jax.envs.make(name, **overrides)`` (e.g. ``shift="speed"``)."""
    return PettingZooParallelEnv(_env_object(name, overrides), seed=seed,
                                 render_mode=render_mode, max_cycles=max_cycles)


def env(name: str, **kwargs):
    """AEC view of ``parallel_env(name, **kwargs)`` through PettingZoo's ``parallel_to_aec``
    (with its ``OrderEnforcingWrapper``)."""
    return parallel_to_aec(parallel_env(name, **kwargs))


__all__ = ["PettingZooParallelEnv", "RENDER_MODES", "env", "parallel_env"]
