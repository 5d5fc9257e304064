"""Independent TD3 (behaviour-policy learner): learns a toy task; buffer / replay bookkeeping."""
import jax
import jax.numpy as jnp
import numpy as np

from dom2_jax.envs.api import Env
from dom2_jax.online import behaviour, policies
from dom2_jax.online import td3 as td3_lib


class ReachEnv(Env):
    """Toy contextual bandit: each agent observes a target in [-0.8, 0.8]^2 (resampled every
    step) and is rewarded -||a - target||^2; 5-step episodes. Optimal score 0."""

    name = "toy_reach"
    num_agents = 2
    obs_dim = 2
    act_dim = 2
    episode_length = 5
    agent_names = ("a0", "a1")

    def reset(self, key):
        obs = jax.random.uniform(key, (2, 2), minval=-0.8, maxval=0.8)
        return obs, {"target": obs, "t": jnp.zeros((), jnp.int32)}

    def step(self, key, state, actions):
        reward = -((jnp.clip(actions, -1, 1) - state["target"]) ** 2).sum(-1)
        obs = jax.random.uniform(key, (2, 2), minval=-0.8, maxval=0.8)
        t = state["t"] + 1
        return obs, {"target": obs, "t": t}, reward, t >= self.episode_length, {}


def tiny_config():
    c = td3_lib.default_config("mpe_spread")
    c.hidden_dims = (32, 32)
    c.batch_size = 64
    c.num_envs = 8
    c.iters_per_chunk = 40
    c.buffer_size = 8 * 400
    c.start_steps = 160
    c.learning_starts = 160
    c.actor_lr = c.critic_lr = 3e-3
    c.gamma = 0.5
    c.eval_episodes = 50
    return c


def test_td3_learns_toy_task_and_buffer_bookkeeping(tmp_path):
    env = ReachEnv()
    c = tiny_config()
    td3 = td3_lib.TD3(env, c)
    collected = []

    def on_chunk(i, state, metrics):
        collected.append(td3_lib.buffer_slice(state, (i * 320) % c.buffer_size, 320))
        behaviour.save_replay_chunk(str(tmp_path / "snap"), i + 1, state, c)
        assert int(state.env_steps) == (i + 1) * 320
        assert int(state.buf_size) == min((i + 1) * 320, c.buffer_size)

    saved = []
    snaps = behaviour.run_training(td3, seed=0, num_chunks=6, eval_every=1, on_chunk=on_chunk,
                                   on_snapshot=lambda s: saved.append(
                                       behaviour.save_snapshot(str(tmp_path), s)),
                                   log=lambda s: None)
    # snapshots saved while training (for --select_only) load back equal, in chunk order
    assert len(saved) == 6
    back_snaps = behaviour.load_snapshots(str(tmp_path))
    assert [b["chunk"] for b in back_snaps] == [s["chunk"] for s in snaps]
    assert [b["score"] for b in back_snaps] == [s["score"] for s in snaps]
    assert (policies.params_digest(back_snaps[3]["flat_params"])
            == policies.params_digest(snaps[3]["flat_params"]))
    scores = [s["score"] for s in snaps]
    # uniform warm-up policy scores about 5 * -(2/3 + 0.43) ~ -5.5; a learned one near 0
    assert scores[0] < -1.0, scores
    assert scores[-1] > -0.4, scores
    assert scores[-1] > scores[0] + 1.0, scores
    # buffer slices are exactly the collected transitions: stored reward = -||a - target||^2
    # with target = stored obs (the toy env observes its target)
    t = {k: np.concatenate([p[k] for p in collected]) for k in collected[0]}
    assert t["obs"].shape == (6 * 320, 2, 2)
    want = -((t["actions"] - t["obs"]) ** 2).sum(-1)
    # the per-chunk replay files (train_behaviour --save_replay) hold the same transitions
    replay = behaviour.load_replay(str(tmp_path / "snap"), 6)
    assert replay["obs"].shape == (6 * 40, 8, 2, 2)   # [iterations, envs, agents, obs]
    for k in t:
        np.testing.assert_array_equal(replay[k].reshape(t[k].shape), t[k])
    np.testing.assert_allclose(t["rewards"], want, rtol=1e-5, atol=1e-6)
    assert np.all(np.abs(t["actions"]) <= 1.0)
    # snapshots round-trip through the .npz format (no pickle) bit-exactly
    flat = snaps[-1]["flat_params"]
    assert all(v.shape[0] == 2 for v in flat.values())  # agents stacked on axis 0
    back = td3_lib.flatten_params(td3_lib.unflatten_params(flat))
    assert policies.params_digest(back) == policies.params_digest(flat)
    # episodes_from_parallel: [I, E] collection order -> whole episodes of one env each
    trans = {k: v.reshape((6 * 40, 8) + v.shape[1:]) for k, v in t.items()}
    eps = behaviour.episodes_from_parallel(trans, env.episode_length)
    assert eps["obs"].shape == (6 * 40 // 5 * 8, 5, 2, 2)
    np.testing.assert_array_equal(eps["obs"][1, :, 0], trans["obs"][0:5, 1, 0])
    np.testing.assert_array_equal(eps["obs"][8, :, 0], trans["obs"][5:10, 0, 0])


def test_policy_file_roundtrip(tmp_path):
    flat = {"params/MLP_0/Dense_0/kernel": np.ones((3, 4, 2), np.float32)}
    path = str(tmp_path / "x_expert.npz")
    policies.save_policy(path, flat, {"env": "x", "hidden_dims": [4]})
    back, meta = policies.load_policy(path)
    assert meta == {"env": "x", "hidden_dims": [4]}
    np.testing.assert_array_equal(back["params/MLP_0/Dense_0/kernel"], flat[
        "params/MLP_0/Dense_0/kernel"])


def test_central_critic_td3_learns_toy_task():
    """MATD3-style option: critics see all agents' obs and actions; actors stay local."""
    env = ReachEnv()
    c = tiny_config()
    c.central_critic = True
    td3 = td3_lib.TD3(env, c)
    state = td3.init(jax.random.PRNGKey(0))
    shapes = [x.shape for x in jax.tree.leaves(state.critic.params)]
    assert (2, 2 * 2 + 2 * 2, 32) in shapes       # [agents, state (A*obs) + A*act, hidden]
    assert state.buffer["state"].shape == (c.buffer_size, 4)
    snaps = behaviour.run_training(td3, seed=0, num_chunks=6, eval_every=3, log=lambda s: None)
    assert snaps[0]["score"] < snaps[-1]["score"] and snaps[-1]["score"] > -0.4, \
        [s["score"] for s in snaps]


def test_shipped_policies_match_their_records():
    """Every shipped behaviour policy loads, matches the digest and dims recorded in
    behaviour_returns.json; the HalfCheetah expert runs (C MuJoCo, 2 episodes) near its
    recorded score (3414.6 +- 95.8 over 100 episodes)."""
    import jax.numpy as jnp
    returns = policies.read_returns()
    for env_name, entry in returns.items():
        for q in ("expert", "medium"):
            flat, meta = policies.require_policy(env_name, q)
            assert policies.params_digest(flat) == entry[q]["params_sha256"], (env_name, q)
            assert meta["quality"] == q and meta["env"] == env_name
            kernel0 = [v for k, v in flat.items() if k.endswith("Dense_0/kernel")][0]
            assert kernel0.shape == (meta["num_agents"], meta["obs_dim"], meta["hidden_dims"][0])
        assert entry["random"]["score"] < entry["medium"]["score"] < entry["expert"]["score"]
    hc = "mamujoco_halfcheetah_2x3"
    assert returns[hc]["training"]["td3_config"]["central_critic"] is True
    from dom2_jax.envs.mamujoco.cpu import HalfCheetahCPU, rollout_batch
    td3 = behaviour.make_td3(hc, td3_lib.default_config(hc))
    flat, _ = policies.require_policy(hc, "expert")
    params = td3.policy_params(jax.tree.map(jnp.asarray, td3_lib.unflatten_params(flat)))
    out = rollout_batch(HalfCheetahCPU(2), td3.policy_fn, params, jax.random.PRNGKey(0), 2)
    assert out["score"].mean() > 3000.0, out["score"]
