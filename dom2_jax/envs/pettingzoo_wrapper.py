"""PettingZoo ``ParallelEnv`` view of any dom2_jax JAX environment.

    from dom2_jax.envs import make
    from dom2_jax.envs.pettingzoo_wrapper import PettingZooParallelEnv
    penv = PettingZooParallelEnv(make("mpe_tag"), seed=0)
    obs, infos = penv.reset(seed=0)
    obs, rewards, terminations, truncations, infos = penv.step(
        {a: penv.action_space(a).sample() for a in penv.agents})

Agents are the env's learning agents (``env.agent_names``); scripted agents (the prey of
tag/world) act inside the env. Spaces: ``Box(-inf, inf, (obs_dim,), float32)`` and
``Box(-1, 1, (act_dim,), float32)``. Episodes end by time limit: after
``env.episode_length`` steps every agent is *truncated* (never terminated) and ``agents``
becomes empty. An agent missing from the action dict acts with zeros. reset/step are
jitted once; the PRNG key is kept on the wrapper (seeded by ``reset(seed=...)``).
``render()`` (``render_mode="rgb_array"``, MPE envs) returns the current frame.
"""
from __future__ import annotations

import functools
from typing import Any, Dict, Optional

import jax
import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv


class PettingZooParallelEnv(ParallelEnv):
    """Wraps a ``dom2_jax.envs.api.Env`` as a PettingZoo ParallelEnv (see module docstring)."""

    metadata = {"render_modes": ["rgb_array"], "is_parallelizable": True, "render_fps": 10}

    def __init__(self, env, seed: Optional[int] = None, render_mode: Optional[str] = None):
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"unsupported render_mode {render_mode!r}; expected None or "
                             "'rgb_array'")
        self.env = env
        self.render_mode = render_mode
        self.metadata = dict(self.metadata, name=getattr(env, "name", type(env).__name__))
        self.possible_agents = list(env.agent_names)
        self.agents: list = []
        self._obs_spaces = {a: spaces.Box(-np.inf, np.inf, (env.obs_dim,), np.float32)
                            for a in self.possible_agents}
        self._act_spaces = {a: spaces.Box(-1.0, 1.0, (env.act_dim,), np.float32)
                            for a in self.possible_agents}
        self._key = jax.random.PRNGKey(np.random.SeedSequence().entropy % (2 ** 31)
                                       if seed is None else seed)
        self._state = None
        self._obs = None

        def reset(key):
            key, sub = jax.random.split(key)
            return (key,) + tuple(env.reset(sub))

        def step(key, state, actions):
            key, sub = jax.random.split(key)
            return (key,) + tuple(env.step(sub, state, actions))

        self._reset_fn = jax.jit(reset)
        self._step_fn = jax.jit(step)

    # -------------------------------------------------------------------- spaces
    @functools.lru_cache(maxsize=None)
    def observation_space(self, agent):
        return self._obs_spaces[agent]

    @functools.lru_cache(maxsize=None)
    def action_space(self, agent):
        return self._act_spaces[agent]

    # -------------------------------------------------------------------- dynamics
    def _obs_dict(self, obs) -> Dict[str, np.ndarray]:
        obs = np.asarray(obs, np.float32)
        return {a: obs[i] for i, a in enumerate(self.possible_agents)}

    def reset(self, seed: Optional[int] = None, options: Optional[dict] = None):
        if seed is not None:
            self._key = jax.random.PRNGKey(seed)
        self._key, obs, self._state = self._reset_fn(self._key)
        self._obs = obs
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
        self._key, obs, self._state, reward, done, info = self._step_fn(
            self._key, self._state, act)
        self._obs = obs
        reward = np.asarray(reward)
        truncated = bool(done)
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
        """Global state: all learning agents' observations concatenated."""
        if self._obs is None:
            raise RuntimeError("state() called before reset()")
        return np.asarray(self._obs, np.float32).reshape(-1)

    def render(self):
        if self.render_mode is None:
            return None
        if self._state is None or not hasattr(self._state, "p_pos"):
            raise RuntimeError("render() needs an MPE env after reset()")
        from dom2_jax.envs.render import render_frames  # (a) matplotlib: render() only
        return render_frames(self.env, self._state)[0]

    def close(self):
        pass
