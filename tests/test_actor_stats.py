"""experiments.actor_stats: policy-vs-data statistics of a trained run's checkpoint."""
import json
import shutil

import jax
import numpy as np
import pytest

from conftest import launch_train
from experiments import actor_stats
from dom2_jax.training.restore import load_run


@pytest.fixture(scope="module")
def omar_run(tmp_path_factory, spread_random_dataset_dir):
    wd = tmp_path_factory.mktemp("actor_stats") / "omar"
    r = launch_train(["--algo=omar", "--env=mpe_spread", "--dataset=" + spread_random_dataset_dir,
                      "--preset=smoke", "--num_seeds=2", "--seed_group=2",
                      "--config.normalize_obs=True", f"--workdir={wd}"], wd.parent / "cache")
    assert r.returncode == 0, r.stderr[-3000:]
    return wd


def test_statistics_match_a_direct_computation(omar_run):
    from dom2_jax import data
    out = actor_stats.actor_stats(str(omar_run), samples=50, seed=3)
    assert len(out["seeds"]) == 2 and out["samples"] == 50 and out["standardised_inputs"]
    # The same draw, computed here without the vmaps over seeds and agents.
    run = load_run(str(omar_run))
    arrays = data.to_device(data.load(run.resolved["dataset"]))
    idx = np.sort(np.random.RandomState(3).choice(arrays["obs"].shape[0], 50, replace=False))
    obs, act = np.asarray(arrays["obs"])[idx], np.asarray(arrays["actions"])[idx]
    x = (obs - np.asarray(run.stats["mean"])) / np.asarray(run.stats["std"])
    for s in (0, 1):
        state = jax.tree.map(lambda v: v[s], run.carry.state)
        for j in (0, 2):
            actor = jax.tree.map(lambda v: v[j], state.actor.params)
            critic = jax.tree.map(lambda v: v[j], state.critic.params)
            pi = np.clip(np.asarray(state.hp.actor_module.apply(actor, x[:, j])), -1, 1)
            q = lambda a: float(np.mean(state.hp.critic_module.apply(critic, x[:, j], a)[0]))
            got = {k: v[j] for k, v in out["seeds"][s].items()}
            assert got["mse_to_data"] == pytest.approx(np.mean((pi - act[:, j]) ** 2), rel=1e-4)
            assert got["sat_data"] == pytest.approx(np.mean(np.abs(act[:, j]) > 0.99))
            assert got["q_data"] == pytest.approx(q(act[:, j]), rel=1e-4, abs=1e-5)
            assert got["q_policy"] == pytest.approx(q(pi), rel=1e-4, abs=1e-5)
            assert 0.0 <= got["search_better_frac"] <= 1.0 and 0.0 <= got["search_sat"] <= 1.0
    # the two seeds' policies differ; the file holds what was returned; same flags, same numbers
    assert out["seeds"][0]["q_policy"] != out["seeds"][1]["q_policy"]
    assert json.load(open(out["path"]))["seeds"] == out["seeds"]
    assert actor_stats.actor_stats(str(omar_run), samples=50, seed=3)["seeds"] == out["seeds"]
    lines = actor_stats.format_lines(out)
    assert len(lines) == 4 and "search:" in lines[1]


def test_clear_error_without_the_dataset(omar_run, tmp_path):
    wd = tmp_path / "moved"
    shutil.copytree(omar_run, wd)
    cfg = json.load(open(wd / "config.json"))
    cfg["dataset"] = str(tmp_path / "gone")
    json.dump(cfg, open(wd / "config.json", "w"))
    with pytest.raises(SystemExit, match="dataset .* is gone"):
        actor_stats.actor_stats(str(wd), samples=8)


def test_bad_samples_fail_before_the_restore(tmp_path):
    with pytest.raises(SystemExit, match="--samples must be >= 1"):
        actor_stats.actor_stats(str(tmp_path), samples=0)
