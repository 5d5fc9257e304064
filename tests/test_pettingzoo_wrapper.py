"""The PettingZoo ParallelEnv wrapper passes PettingZoo's API test and mirrors the JAX env."""
from __future__ import annotations

import jax
import numpy as np
import pytest

pytest.importorskip("pettingzoo")
from pettingzoo.test import parallel_api_test  # noqa: E402

from dom2_jax.envs import make  # noqa: E402
from dom2_jax.envs.pettingzoo_wrapper import PettingZooParallelEnv  # noqa: E402


def test_parallel_api():
    penv = PettingZooParallelEnv(make("mpe_tag"), seed=0)
    parallel_api_test(penv, num_cycles=60)


def test_episode_matches_jax_env_and_truncates():
    env = make("mpe_world")
    penv = PettingZooParallelEnv(env, render_mode="rgb_array")
    obs, infos = penv.reset(seed=3)
    assert penv.agents == list(env.agent_names) and set(infos) == set(env.agent_names)

    @jax.jit
    def reference(key):   # same key scheme as the wrapper; constant actions 0.5
        key, sub = jax.random.split(key)
        obs0, state = env.reset(sub)

        def body(carry, _):
            key, state = carry
            key, sub = jax.random.split(key)
            obs, state, reward, done, _ = env.step(sub, state, np.full((3, 2), 0.5, np.float32))
            return (key, state), reward

        return obs0, jax.lax.scan(body, (key, state), None, length=env.episode_length)[1]

    ref_obs0, ref_rewards = reference(jax.random.PRNGKey(3))
    np.testing.assert_array_equal(np.stack([obs[a] for a in env.agent_names]), ref_obs0)
    ret = {a: 0.0 for a in penv.agents}
    for t in range(env.episode_length):
        acts = {a: np.full(2, 0.5, np.float32) for a in penv.agents}
        obs, rew, term, trunc, info = penv.step(acts)
        for a, r in rew.items():
            ret[a] += r
        assert not any(term.values())
        assert all(trunc.values()) == (t == env.episode_length - 1)
        assert all(o.shape == (24,) and o.dtype == np.float32 for o in obs.values())
    assert penv.agents == []
    np.testing.assert_allclose([ret[a] for a in env.agent_names], ref_rewards.sum(0), rtol=1e-5)
    with pytest.raises(RuntimeError, match="reset"):
        penv.step({})
    frame = penv.render()
    assert frame.ndim == 3 and frame.shape[-1] == 3 and frame.dtype == np.uint8
    assert penv.state().shape == (3 * 24,)
    with pytest.raises(ValueError, match="shape"):
        penv.reset(seed=0)
        penv.step({"adversary_0": np.zeros(3)})
