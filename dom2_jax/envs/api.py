"""The environment interface shared by every dom2_jax environment.

An environment is a plain Python object holding static configuration; all dynamics are
pure functions of (key, state, actions), so they can be jitted and vmapped:

    obs, state = env.reset(key)
    obs, state, reward, done, info = env.step(key, state, actions)

Shapes (one environment; add leading axes with ``jax.vmap``):
    obs      [num_agents, obs_dim]  float32, zero-padded where agents' observations differ
    actions  [num_agents, act_dim]  float32 in [-1, 1]
    reward   [num_agents]           float32
    done     []                     bool (True on the last step of an episode)

``env.score(rewards)`` maps a per-step reward vector [..., num_agents] to the per-step
contribution to the score the papers report (spread: mean over agents; tag/world: predator 0;
HalfCheetah: the team reward). Summing it over an episode gives the episode score.

``env.global_state(state)`` [state_dim] is what a centralised critic may see during training
(decentralised actors never do): by default all agents' observations concatenated; HalfCheetah
returns the single-agent HalfCheetah observation (qpos[1:], qvel: 17 dims, with the body
velocity no agent observes under obsk 0).
"""
from __future__ import annotations

import abc
from typing import Any, Dict, Sequence, Tuple

import jax

Array = jax.Array


class Env(abc.ABC):
    """Abstract multi-agent environment with a JaxMARL-like pure functional API."""

    name: str
    num_agents: int
    obs_dim: int
    act_dim: int
    episode_length: int
    agent_names: Sequence[str]

    @abc.abstractmethod
    def reset(self, key: Array) -> Tuple[Array, Any]:
        """Returns (obs [num_agents, obs_dim], state)."""

    @abc.abstractmethod
    def step(self, key: Array, state: Any, actions: Array) -> Tuple[Array, Any, Array, Array, Dict]:
        """Returns (obs, state, reward [num_agents], done [], info dict)."""

    def score(self, reward: Array) -> Array:
        """Per-step score contribution from a reward vector [..., num_agents]."""
        return reward.mean(axis=-1)

    def global_state(self, state: Any, obs: Array) -> Array:
        """Training-time state features [state_dim] (default: ``obs.reshape(-1)``); ``obs``
        is the observation of ``state`` (passed so the default needs no recomputation)."""
        del state
        return obs.reshape(-1)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, num_agents={self.num_agents}, "
                f"obs_dim={self.obs_dim}, act_dim={self.act_dim}, "
                f"episode_length={self.episode_length})")
