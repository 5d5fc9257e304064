"""Batched, jitted evaluation rollouts for any ``dom2_jax.envs.api.Env``.

    run = make_rollout(env, policy_fn, num_episodes=10)
    out = jax.jit(run)(params, key)          # or: rollout(env, policy_fn, params, key, 10)
    out["score"]    [num_episodes]            sum over steps of env.score(reward)
    out["returns"]  [num_episodes, num_agents] per-agent summed reward

``policy_fn(params, obs [num_agents, obs_dim], key) -> actions [num_agents, act_dim]``.
Episodes are vmapped; the steps of an episode are a ``lax.scan`` over ``env.episode_length``
(every episode runs its full length; ``done`` only marks the last step). The function is
pure, so it can be vmapped again over params / keys (e.g. over seeds).

With ``return_trajectory=True`` the output also holds per-step arrays with leading axes
[num_episodes, episode_length]:
  ``obs`` [.., num_agents, obs_dim] (observation the action was taken on), ``actions``
  [.., num_agents, act_dim] (as returned by the policy, before the env clips them),
  ``rewards`` [.., num_agents], ``next_obs`` [.., num_agents, obs_dim], ``dones`` [..] bool.
With ``return_states=True`` it holds ``states``: the env state pytree after each step
(leading axes [num_episodes, episode_length]) and ``initial_state`` ([num_episodes, ...]),
e.g. for ``dom2_jax.envs.render``.
"""
from __future__ import annotations

import sys
import types
from typing import Any, Callable, Dict

import jax
import jax.numpy as jnp

from dom2_jax.envs.api import Env

Array = jax.Array
PolicyFn = Callable[[Any, Array, Array], Array]


def make_rollout(env: Env, policy_fn: PolicyFn, num_episodes: int, *,
                 return_trajectory: bool = False,
                 return_states: bool = False) -> Callable[[Any, Array], Dict[str, Array]]:
    """Returns a pure ``run(params, key) -> dict`` evaluating ``num_episodes`` episodes."""
    num_episodes = int(num_episodes)
    if num_episodes < 1:
        raise ValueError(f"num_episodes must be >= 1, got {num_episodes}")

    def episode(params, key):
        # All keys of the episode from one split (threefry dominates compile time on CPU):
        # keys[0] resets, keys[1 + t] drives the policy and keys[1 + T + t] the env at step t.
        t_max = env.episode_length
        keys = jax.random.split(key, 2 * t_max + 1)
        obs, state = env.reset(keys[0])

        def body(carry, step_keys):
            obs, state = carry
            key_policy, key_env = step_keys
            actions = policy_fn(params, obs, key_policy)
            next_obs, next_state, reward, done, _ = env.step(key_env, state, actions)
            out = {"score": env.score(reward), "reward": reward}
            if return_trajectory:
                out.update(obs=obs, actions=actions, rewards=reward, next_obs=next_obs,
                           dones=done)
            if return_states:
                out["states"] = next_state
            return (next_obs, next_state), out

        step_keys = (keys[1: t_max + 1], keys[t_max + 1:])
        _, per_step = jax.lax.scan(body, (obs, state), step_keys)
        result = {"score": per_step.pop("score").sum(0),
                  "returns": per_step.pop("reward").sum(0)}
        result.update(per_step)
        if return_states:
            result["initial_state"] = state
        return result

    def run(params, key):
        keys = jax.random.split(key, num_episodes)
        return jax.vmap(episode, in_axes=(None, 0))(params, keys)

    return run


def rollout(env: Env, policy_fn: PolicyFn, params: Any, key: Array, num_episodes: int,
            **kwargs) -> Dict[str, Array]:
    """``jax.jit(make_rollout(env, policy_fn, num_episodes, **kwargs))(params, key)``.

    The jitted function is cached per (env, policy_fn, num_episodes, kwargs), so repeated
    evaluations with new params do not recompile.
    """
    return _jitted(env, policy_fn, int(num_episodes), tuple(sorted(kwargs.items())))(params, key)


_CACHE: Dict[Any, Callable] = {}


def _jitted(env, policy_fn, num_episodes, kwargs):
    cache_key = (id(env), policy_fn, num_episodes, kwargs)
    entry = _CACHE.get(cache_key)
    if entry is None or entry[0] is not env:
        if len(_CACHE) >= 32:  # bounded: drop everything rather than grow without limit
            _CACHE.clear()
        entry = (env, jax.jit(make_rollout(env, policy_fn, num_episodes, **dict(kwargs))))
        _CACHE[cache_key] = entry
    return entry[1]


def random_policy(params: Any, obs: Array, key: Array, act_dim: int = None) -> Array:
    """Uniform actions in [-1, 1]; ``act_dim`` defaults to 2 (MPE). Useful for tests."""
    del params
    return jax.random.uniform(key, (obs.shape[0], act_dim or 2), jnp.float32, -1.0, 1.0)


class _CallableModule(types.ModuleType):
    """``dom2_jax.envs.rollout`` names both this module and the function ``rollout``; once the
    module is imported, ``from dom2_jax.envs import rollout`` yields the module. Making the
    module callable (forwarding to the function) keeps ``rollout(env, ...)`` working either way."""

    def __call__(self, *args, **kwargs):
        return rollout(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
