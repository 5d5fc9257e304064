"""make_rollout / rollout: shapes, bookkeeping, determinism, genericity over api.Env."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct

from dom2_jax.envs import api, make
from dom2_jax.envs.rollout import make_rollout, random_policy, rollout


@struct.dataclass
class CounterState:
    x: jax.Array   # [num_agents, 3]
    t: jax.Array


class CounterEnv(api.Env):
    """A tiny non-MPE env: 2 agents, act_dim 3, 7 steps; reward = sum of actions + t."""

    name = "counter"
    num_agents, obs_dim, act_dim, episode_length = 2, 4, 3, 7
    agent_names = ("a", "b")

    def reset(self, key):
        # cheap deterministic function of the key (no threefry: keeps compile time down)
        x = jnp.sin(jnp.arange(6.0).reshape(2, 3) + jax.random.key_data(key)[-1] % 1000)
        st = CounterState(x=x, t=jnp.zeros((), jnp.int32))
        return self._obs(st), st

    def _obs(self, st):
        return jnp.concatenate([st.x, jnp.broadcast_to(st.t, (2, 1)).astype(jnp.float32)], -1)

    def step(self, key, state, actions):
        st = CounterState(x=state.x + actions, t=state.t + 1)
        reward = actions.sum(-1) + state.t.astype(jnp.float32)
        return self._obs(st), st, reward, st.t >= self.episode_length, {}

    def score(self, reward):
        return reward[..., 1]


def linear_policy(params, obs, key):
    return jnp.tanh(obs @ params["w"])


def test_generic_env_bookkeeping():
    env = CounterEnv()
    params = {"w": jnp.full((4, 3), 0.1)}
    run = jax.jit(make_rollout(env, linear_policy, 5, return_trajectory=True,
                               return_states=True))
    out = run(params, jax.random.PRNGKey(0))
    e, t = 5, env.episode_length
    assert out["score"].shape == (e,) and out["returns"].shape == (e, 2)
    assert out["obs"].shape == (e, t, 2, 4) and out["next_obs"].shape == (e, t, 2, 4)
    assert out["actions"].shape == (e, t, 2, 3) and out["rewards"].shape == (e, t, 2)
    assert out["dones"].shape == (e, t)
    assert out["states"].x.shape == (e, t, 2, 3) and out["initial_state"].x.shape == (e, 2, 3)
    np.testing.assert_allclose(out["returns"], out["rewards"].sum(1), rtol=1e-6)
    np.testing.assert_allclose(out["score"], out["rewards"][..., 1].sum(1), rtol=1e-6)
    np.testing.assert_allclose(out["next_obs"][:, :-1], out["obs"][:, 1:])
    np.testing.assert_allclose(out["actions"], np.tanh(out["obs"] @ np.full((4, 3), 0.1)),
                               rtol=1e-5, atol=1e-6)
    assert np.asarray(out["dones"])[:, -1].all() and not np.asarray(out["dones"])[:, :-1].any()
    # episodes get different keys
    assert np.unique(np.asarray(out["initial_state"].x[:, 0, 0])).size == e
    # vmappable over params (e.g. seeds)
    many = {"w": jnp.stack([jnp.full((4, 3), 0.1), jnp.full((4, 3), -0.1)])}
    scores = jax.jit(jax.vmap(make_rollout(env, linear_policy, 5), in_axes=(0, None)))(
        many, jax.random.PRNGKey(0))["score"]
    np.testing.assert_allclose(scores[0], out["score"], rtol=1e-6)
    assert scores.shape == (2, 5)


def toward_first_landmark(params, obs, key):
    """Deterministic spread policy (no PRNG in the compiled loop: cheaper to compile)."""
    return jnp.clip(obs[:, 4:6] * params, -1.0, 1.0)


def test_rollout_mpe_deterministic_and_cached():
    env = make("mpe_spread")
    a = rollout(env, toward_first_landmark, 2.0, jax.random.PRNGKey(1), 8)
    b = rollout(env, toward_first_landmark, 2.0, jax.random.PRNGKey(1), 8)
    c = rollout(env, toward_first_landmark, 3.0, jax.random.PRNGKey(2), 8)
    np.testing.assert_array_equal(a["score"], b["score"])
    assert not np.allclose(a["score"], c["score"])
    assert a["score"].shape == (8,) and a["returns"].shape == (8, 3)
    np.testing.assert_allclose(a["score"], a["returns"].mean(-1), rtol=1e-5)
    assert set(a) == {"score", "returns"}
    import dom2_jax.envs.rollout as mod
    assert len([k for k in mod._CACHE if k[0] == id(env)]) == 1
    # the uniform random policy has the right shape and range
    acts = jax.jit(random_policy)(None, jnp.zeros((3, 18)), jax.random.PRNGKey(0))
    assert acts.shape == (3, 2) and float(jnp.abs(acts).max()) <= 1.0


def test_rollout_package_export_and_errors():
    import dom2_jax.envs.rollout as mod
    assert callable(mod) and mod.rollout is rollout   # module is callable, see rollout.py
    with pytest.raises(ValueError, match="num_episodes"):
        make_rollout(CounterEnv(), linear_policy, 0)
