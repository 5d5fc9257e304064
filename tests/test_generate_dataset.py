"""Dataset generator: tiny random / expert / medium-expert spread datasets validate, are
deterministic given the seed, carry the paper score and provenance; missing policies fail
clearly. Uses a freshly initialised actor written to a temporary assets dir, so the test does
not depend on the shipped checkpoints (and all rollouts share one compiled program)."""
import os

import jax
import numpy as np
import pytest

from dom2_jax import data
from dom2_jax.online import policies
from dom2_jax.online import td3 as td3_lib
from dom2_jax.training import reporting
from experiments import generate_dataset as gen


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("assets"))
    c = td3_lib.default_config("mpe_spread")
    from dom2_jax.online.behaviour import make_td3
    td3 = make_td3("mpe_spread", c)
    init_actor = jax.jit(td3.init_actor)
    for i, q in enumerate(("expert", "medium")):
        flat = td3_lib.flatten_params(jax.device_get(init_actor(jax.random.PRNGKey(i))))
        policies.save_policy(policies.policy_path("mpe_spread", q, d), flat, dict(
            env="mpe_spread", env_kwargs={}, quality=q, hidden_dims=list(c.hidden_dims),
            params_sha256=policies.params_digest(flat), env_steps=0, score=0.0, seed=i))
    return d


def test_generate_random_expert_deterministic_and_loadable(assets, tmp_path):
    ds = gen.generate("mpe_spread", "expert", 500, seed=3, assets_dir=assets, log=lambda s: None)
    assert ds.num_transitions == 500 and ds.num_episodes == 20
    assert ds.obs.shape == (500, 3, 18) and ds.actions.shape == (500, 3, 2)
    assert not ds.dones.any()
    assert np.abs(ds.actions).max() <= 1.0
    # episode_returns = the env's paper score (spread: mean over agents of summed rewards)
    np.testing.assert_allclose(ds.episode_returns,
                               ds.rewards.reshape(20, 25, 3).sum(1).mean(1), rtol=1e-5)
    refs = ds.reference_returns
    assert set(refs) == {"random", "expert"} and refs["random"] > 100  # spread random ~160
    g = ds.meta["generator"]
    assert g["config"]["sigma"] == gen.DEFAULT_SIGMA and "expert" in g["policies"]
    # where it was generated (recorded), though MPE rollouts are portable: the same bits on
    # every CPU (dom2_jax.envs.portable; tests/test_portable.py)
    assert g["config"]["portable_rollouts"] is True
    assert g["system"]["backend"] == "cpu" and "xla_flags" in g["system"]
    assert g["system"]["cpu_model"] == reporting.cpu_model()
    # consecutive transitions chain inside an episode
    np.testing.assert_array_equal(ds.next_obs[:24], ds.obs[1:25])
    # deterministic given the seed; another seed differs
    again = gen.generate("mpe_spread", "expert", 500, seed=3, assets_dir=assets,
                         log=lambda s: None)
    for k in data.ARRAY_NAMES:
        np.testing.assert_array_equal(getattr(ds, k), getattr(again, k))
    other = gen.generate("mpe_spread", "expert", 500, seed=4, assets_dir=assets,
                         log=lambda s: None)
    assert not np.array_equal(other.obs, ds.obs)
    # saved atomically and loadable (checksums, env check)
    path = data.save(ds, str(tmp_path / "expert"))
    back = data.load(path, expected_env="mpe_spread")
    np.testing.assert_array_equal(back.actions, ds.actions)
    assert back.meta["quality"] == "expert"

    rnd = gen.generate("mpe_spread", "random", 500, seed=3, assets_dir=assets,
                       log=lambda s: None)
    assert rnd.reference_returns == refs
    assert rnd.actions.min() < -0.95 and rnd.actions.max() > 0.95  # uniform actions
    data.load(data.save(rnd, str(tmp_path / "random")), expected_env="mpe_spread")

    mix = gen.generate("mpe_spread", "medium-expert", 500, seed=3, assets_dir=assets,
                       log=lambda s: None)
    assert mix.num_episodes == 20 and mix.meta["generator"]["config"]["parts"] == [
        ["medium", 10], ["expert", 10]]


def test_missing_policy_names_the_training_command(tmp_path):
    with pytest.raises(policies.MissingPolicyError, match="experiments.train_behaviour "
                                                          "--env=mpe_tag"):
        gen.generate("mpe_tag", "expert", 500, seed=0, assets_dir=str(tmp_path),
                     log=lambda s: None)
    with pytest.raises(policies.MissingPolicyError, match="train_behaviour"):
        gen.generate("mpe_tag", "medium-replay", 500, seed=0, assets_dir=str(tmp_path),
                     log=lambda s: None)


@pytest.mark.slow
def test_medium_replay_regenerates_the_training_buffer(tmp_path):
    """Tiny TD3 run recorded like train_behaviour does; medium-replay regenerates exactly the
    transitions of its first 2 chunks and verifies the medium actor bit-for-bit."""
    from dom2_jax.online import behaviour
    d = str(tmp_path)
    c = td3_lib.default_config("mpe_spread")
    c.update(dict(hidden_dims=(16, 16), num_envs=4, iters_per_chunk=25, buffer_size=400,
                  start_steps=100, learning_starts=100, batch_size=32, eval_episodes=10))
    td3 = behaviour.make_td3("mpe_spread", c)
    snap_dir = str(tmp_path / "snapshots")   # as train_behaviour --snapshot_dir writes it
    snaps = behaviour.run_training(
        td3, seed=1, num_chunks=3, log=lambda s: None,
        on_chunk=lambda i, st, m: behaviour.save_replay_chunk(snap_dir, i + 1, st, c),
        on_snapshot=lambda snap: behaviour.save_snapshot(snap_dir, snap))
    policies.write_json(os.path.join(snap_dir, "run.json"), dict(
        env="mpe_spread", seed=1, env_kwargs={}, td3_config=td3_lib.config_to_dict(c)))
    flat = snaps[1]["flat_params"]
    sha = policies.params_digest(flat)
    meta = dict(env="mpe_spread", env_kwargs={}, quality="medium", hidden_dims=[16, 16],
                params_sha256=sha, env_steps=200, score=snaps[1]["score"], seed=1)
    policies.save_policy(policies.policy_path("mpe_spread", "medium", d), flat, meta)
    policies.update_returns("mpe_spread", {
        "medium": {"chunk": 2, "params_sha256": sha},
        "training": {"seed": 1, "env_kwargs": {}, "td3_config": td3_lib.config_to_dict(c)}}, d)
    ds = gen.generate("mpe_spread", "medium-replay", 10 ** 6, seed=0, assets_dir=d,
                      log=lambda s: None)
    assert ds.num_transitions == 200 and ds.num_episodes == 8
    cfg = ds.meta["generator"]["config"]
    assert cfg["replay_verified"] and cfg["replay_episodes_available"] == 8
    np.testing.assert_allclose(ds.episode_returns,
                               ds.rewards.reshape(8, 25, 3).sum(1).mean(1), rtol=1e-5)
    np.testing.assert_array_equal(ds.next_obs[:24], ds.obs[1:25])
    assert np.abs(ds.actions[:100]).max() <= 1.0  # warm-up: uniform actions
    small = gen.generate("mpe_spread", "medium-replay", 100, seed=0, assets_dir=d,
                         log=lambda s: None)   # the most recent 4 episodes
    np.testing.assert_array_equal(small.obs, ds.obs[100:])
    # the transitions saved during training give the same dataset without a re-run
    saved = gen.generate("mpe_spread", "medium-replay", 10 ** 6, seed=0, assets_dir=d,
                         replay_dir=snap_dir, log=lambda s: None)
    for k in ("obs", "actions", "rewards", "next_obs", "episode_returns"):
        np.testing.assert_array_equal(getattr(saved, k), getattr(ds, k))
    assert saved.meta["generator"]["config"]["replay_verified"]
    assert saved.meta["generator"]["config"]["replay_source"] == "saved chunks"
    policies.write_json(os.path.join(snap_dir, "run.json"), dict(
        env="mpe_spread", seed=2, env_kwargs={}, td3_config=td3_lib.config_to_dict(c)))
    with pytest.raises(ValueError, match="not the run that trained"):
        gen.generate("mpe_spread", "medium-replay", 100, seed=0, assets_dir=d,
                     replay_dir=snap_dir, log=lambda s: None)


@pytest.mark.parametrize("args,message", [
    (["--num_samples=-100"], "--num_samples must be >= 1"),
    (["--num_samples=0"], "--num_samples must be >= 1"),
    (["--sigma=-0.1"], "--sigma must be >= 0"),
    (["--env_kwargs={bad"], "--env_kwargs is not valid JSON"),
    (["--env_kwargs=[1]"], "--env_kwargs must be a JSON object"),
    (["EXISTING"], "already exists; pass --overwrite"),
])
def test_cli_refuses_bad_input_in_one_line_before_any_rollout(tmp_path, args, message):
    import subprocess
    import sys
    out = tmp_path / "ds"
    if args == ["EXISTING"]:
        out.mkdir()
        args = []
    r = subprocess.run([sys.executable, "-m", "experiments.generate_dataset", f"--out={out}",
                        "--quality=random", *args], capture_output=True, text=True, timeout=120,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert r.returncode != 0 and message in r.stderr + r.stdout, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    assert not (out.exists() and any(out.iterdir()))   # nothing written
    with pytest.raises(ValueError, match="num_samples must be >= 1"):
        gen.generate("mpe_spread", "random", 0, seed=0)
