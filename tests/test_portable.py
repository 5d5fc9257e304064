"""Portable rollouts (``dom2_jax.envs.portable``): the MPE datasets are the same bits on every
x86 CPU, as the HalfCheetah ones (``tests/test_mamujoco.py``), so runs on two machines share
their data and a run resumes on another machine."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import outputs_under_two_instruction_sets
from dom2_jax.envs import make, portable

_SCRIPT = r"""
import hashlib, json
import jax, jax.numpy as jnp, numpy as np
from dom2_jax.envs import make, portable
from dom2_jax.envs.rollout import rollout

env = make("mpe_spread")
def policy(params, obs, key):  # a matmul (CPU-specific kernels) + Gaussian noise, like TD3's
    a = jnp.tanh(obs @ params["w"] + params["b"])
    return jnp.clip(a + 0.1 * jax.random.normal(key, a.shape, a.dtype), -1.0, 1.0)
# parameters as a shipped policy's: read, not computed (a float32 draw would itself differ)
params = {"w": (np.random.default_rng(1).normal(size=(18, 2)) * 0.7).astype(np.float32),
          "b": np.full((2,), 0.1, np.float32)}
digest = lambda out: {k: hashlib.sha256(np.ascontiguousarray(out[k]).tobytes()).hexdigest()
                      for k in ("obs", "actions", "rewards", "next_obs", "score")}
key = jax.random.PRNGKey(0)
print(json.dumps({"portable": digest(portable.rollout(env, policy, params, key, 1000,
                                                      return_trajectory=True)),
                  "float32": digest(jax.tree.map(np.asarray, rollout(
                      env, policy, params, key, 1000, return_trajectory=True)))}))
"""


def test_portable_mpe_rollouts_are_the_same_bits_whatever_code_the_cpu_gets(tmp_path):
    """1000 spread episodes of a noisy linear policy give the same bits when XLA compiles for
    SSE4.2 instead of the host's instruction set (no FMA, other vector widths), as on another
    CPU. The float32 rollouts do not on an FMA machine (recorded in the message only: the
    premise, not the claim)."""
    outs = outputs_under_two_instruction_sets(_SCRIPT, tmp_path)
    float32_same = outs[0]["float32"] == outs[1]["float32"]
    assert outs[0]["portable"] == outs[1]["portable"], (
        f"portable rollouts differ under SSE4.2 code (float32 ones same: {float32_same})")


def test_quantized_states_rewards_and_observations():
    """States and rewards lie on the shifted grid, observations are the env's own function of
    the rounded state, and a step moves the state as the float32 env does, to within a grid
    step (the physics is unchanged). Rollout outputs are float32, chain from step to step, and
    the score is the summed mean reward (spread)."""
    env = make("mpe_spread")
    g, off = portable.STATE_GRID, portable.STATE_OFFSET

    def policy(params, obs, key):
        return jnp.tanh(obs[:, :2] * params)
    with jax.enable_x64(True):
        qenv = portable.QuantizedEnv(env)
        obs, state = jax.jit(qenv.reset)(jax.random.PRNGKey(0))
        assert state.p_pos.dtype == jnp.float64
        step = jax.jit(qenv.step)
        for _ in range(5):
            a = portable.round_to_grid(policy(3.0, obs, None), portable.ACTION_GRID)
            prev = jax.tree.map(np.asarray, state)
            obs, state, reward, _, _ = step(jax.random.PRNGKey(1), state, a)
        for x in (state.p_pos, state.p_vel, state.speed, reward):
            n = np.round(np.asarray(x) / g + off)
            np.testing.assert_array_equal(np.asarray(x), (n - off) * g)
        np.testing.assert_array_equal(np.asarray(obs), np.asarray(env.observe(state)))
        a = np.asarray(a, np.float32)
    prev32 = jax.tree.map(lambda x: x.astype(np.float32) if x.dtype == np.float64 else x, prev)
    _, s32, r32, _, _ = jax.jit(env.step)(jax.random.PRNGKey(1), prev32, a)
    np.testing.assert_allclose(np.asarray(state.p_pos), s32.p_pos, atol=g)
    np.testing.assert_allclose(np.asarray(state.p_vel), s32.p_vel, atol=g)
    np.testing.assert_allclose(np.asarray(reward), r32, atol=g + 1e-5)

    out = portable.rollout(env, policy, 3.0, jax.random.PRNGKey(2), 8, return_trajectory=True)
    assert all(out[k].dtype == np.float32 for k in ("obs", "actions", "rewards", "score"))
    assert out["obs"].shape == (8, env.episode_length, 3, 18)
    np.testing.assert_array_equal(out["next_obs"][:, :-1], out["obs"][:, 1:])
    np.testing.assert_allclose(out["score"], out["rewards"].mean(-1).sum(1), rtol=1e-5)


def test_portable_refuses_an_env_that_cannot_recompute_its_reward():
    from dom2_jax.envs.mamujoco.halfcheetah import HalfCheetah2x3
    assert portable.supports(make("mpe_tag")) and portable.supports(make("mpe_world"))
    with pytest.raises(ValueError, match="cannot be made portable"):
        portable.QuantizedEnv(HalfCheetah2x3())
