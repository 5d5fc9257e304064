"""Portable rollouts: the same bits on every x86 CPU, as dataset generation needs.

float32 XLA programs round differently on different CPUs (FMA contraction, vector widths,
matmul kernels): the same command and seed gave other HalfCheetah data on an Intel Xeon and an
AMD EPYC, and other spread data when XLA compiles for SSE4.2 instead of the host's AVX-512
(the spread env alone differs from step 1: ``p + v * dt`` is fused into one FMA or not). A
dataset that differs per machine cannot be shared by runs made on two machines, and a run
cannot resume on another one (the launcher refuses other data).

The recipe: compute in float64 (``jax.enable_x64`` around the jitted call) and round every
value that carries over from one step to the next to a power-of-two grid. CPUs then differ by
a few float64 ulps (~1e-16), far below the grids, so the rounded values are the same bits
everywhere except with probability ~1e-16 / grid per value (~1e-3 per 1e6-transition MPE
dataset with these grids; ``tests/test_portable.py`` checks it against SSE4.2 code):

* the behaviour policy runs in float64 and its actions are rounded to ``ACTION_GRID``
  (``portable_policy``; the same for C MuJoCo's HalfCheetah, ``mamujoco.cpu``);
* a JAX environment with ``observe(state)`` and ``reward(state)`` (the MPE) runs in float64
  with the floating leaves of its state rounded to ``STATE_GRID`` (shifted by
  ``STATE_OFFSET``, see there) after every reset and step,
  and its reward likewise (``QuantizedEnv``); observations are recomputed from the rounded
  state, so they are exact functions of grid values.

``rollout(env, policy_fn, params, key, n)`` is ``dom2_jax.envs.rollout.rollout`` made so, with
float32 host arrays out. C MuJoCo (one binary, float64) needs only the policy part.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Dict

import jax
import jax.numpy as jnp
import numpy as np

from dom2_jax.envs.rollout import make_rollout

ACTION_GRID = 2.0 ** -20   # policy actions (|a| <= 1: exact in float32)
STATE_GRID = 2.0 ** -16    # MPE positions, velocities and rewards after every step
# The MPE state is rounded to the shifted grid (n - STATE_OFFSET) * STATE_GRID. Without the
# shift, one step maps grid values to exact rationals of the grid (damping 0.75 v, p + 0.1 v,
# actions on their own dyadic grid), which land on rounding midpoints in ~1e-4 of the values,
# and there the CPUs' ulp differences decide (seen against SSE4.2 code). An irrational shift
# keeps those sums >= 1e-3 of a grid step away from every midpoint.
STATE_OFFSET = (3.0 - 5.0 ** 0.5) / 2.0


def round_to_grid(x, grid: float, offset: float = 0.0):
    """``x`` rounded to the nearest ``(n - offset) * grid`` inside a traced program (float64
    under x64). With a power-of-two ``grid`` each side is one IEEE operation on exact
    values, so equal integers n give equal bits on every CPU."""
    if offset == 0.0:
        return jnp.round(x / grid) * grid
    return (jnp.round(x / grid + offset) - offset) * grid


def to_float64(tree):
    """The floating leaves of ``tree`` as float64 (call inside ``jax.enable_x64``)."""
    return jax.tree.map(lambda x: jnp.asarray(x, jnp.float64)
                        if jnp.issubdtype(jnp.result_type(x), jnp.floating) else x, tree)


def portable_policy(policy_fn: Callable) -> Callable:
    """``policy_fn(params, obs, key)`` run on float64 params and observations, its actions
    rounded to ``ACTION_GRID`` (trace under x64)."""
    def act(params, obs, key):
        a = policy_fn(to_float64(params), jnp.asarray(obs, jnp.float64), key)
        return round_to_grid(jnp.asarray(a, jnp.float64), ACTION_GRID)
    return act


def supports(env) -> bool:
    """Whether ``QuantizedEnv`` can wrap ``env``: it must recompute observations and rewards
    from a state (the MPE can; MJX HalfCheetah's reward needs the previous state)."""
    return callable(getattr(env, "observe", None)) and callable(getattr(env, "reward", None))


class QuantizedEnv:
    """``env`` with the floating leaves of its state rounded to the shifted ``grid``
    (``round_to_grid``) after every reset and step, observations recomputed from the rounded
    state and rewards rounded too. Everything else is ``env``'s. Run under x64 for
    portability (module docstring)."""

    def __init__(self, env, grid: float = STATE_GRID, offset: float = STATE_OFFSET):
        if not supports(env):
            raise ValueError(f"{getattr(env, 'name', env)!r} has no observe(state) / "
                             "reward(state): its rollouts cannot be made portable here")
        self.env, self.grid, self.offset = env, float(grid), float(offset)

    def __getattr__(self, name):  # episode_length, num_agents, score, name, ...
        return getattr(self.env, name)

    def _round_state(self, state):
        return jax.tree.map(
            lambda x: round_to_grid(x, self.grid, self.offset)
            if jnp.issubdtype(x.dtype, jnp.floating)
            else x, state)

    def reset(self, key):
        _, state = self.env.reset(key)
        state = self._round_state(state)
        return self.env.observe(state), state

    def step(self, key, state, actions):
        _, state, _, done, info = self.env.step(key, state, actions)
        state = self._round_state(state)
        reward = round_to_grid(self.env.reward(state), self.grid, self.offset)
        return self.env.observe(state), state, reward, done, info


@functools.lru_cache(maxsize=16)
def _program(env, policy_fn, num_episodes: int, return_trajectory: bool):
    return jax.jit(make_rollout(QuantizedEnv(env), portable_policy(policy_fn),
                                num_episodes, return_trajectory=return_trajectory))


def rollout(env, policy_fn, params, key, num_episodes: int, *,
            return_trajectory: bool = False) -> Dict[str, Any]:
    """``dom2_jax.envs.rollout.rollout`` made portable (module docstring): the same keys and
    output layout, as host numpy arrays with every floating array float32 (exact casts of
    float64 values that are the same on every CPU)."""
    with jax.enable_x64(True):
        out = _program(env, policy_fn, int(num_episodes), bool(return_trajectory))(
            to_float64(params), key)
        out = jax.tree.map(np.asarray, out)
    return {k: v.astype(np.float32) if np.issubdtype(v.dtype, np.floating) else v
            for k, v in out.items()}
