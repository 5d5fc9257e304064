"""experiments.evaluate: re-evaluating a trained run's checkpoint (standard and shifted envs).

Exact check: given the key the launcher's last chunk evaluated with, the re-evaluation of the
final checkpoint reproduces the launcher's final standard and shifted scores for every seed
(checkpoint restore, seed order, observation standardisation from results.json, shifted env)."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import launch_train
from experiments import evaluate



@pytest.fixture(scope="module")
def bc_run(tmp_path_factory, spread_random_dataset_dir):
    wd = tmp_path_factory.mktemp("eval") / "bc"
    r = launch_train(["--algo=bc", "--env=mpe_spread", "--dataset=" + spread_random_dataset_dir,
                      "--preset=smoke", "--num_seeds=2", "--seed_group=2", "--shift=speed",
                      "--config.normalize_obs=True", f"--workdir={wd}"], wd.parent / "cache")
    assert r.returncode == 0, r.stderr[-3000:]
    return wd


def _final_chunk_eval_keys(wd, last_chunk):
    """The eval keys of the launcher's last chunk: split(key after the previous chunk, 3)[2]."""
    import orbax.checkpoint as ocp
    mgr = ocp.CheckpointManager(str(wd / "checkpoints"))
    raw = mgr.restore(last_chunk - 1, args=ocp.args.StandardRestore())
    mgr.close()
    return jax.vmap(lambda k: jax.random.split(k, 3)[2])(np.asarray(raw["key"]))


def test_reproduces_the_launchers_final_scores(bc_run):
    res = json.load(open(bc_run / "results.json"))
    assert "obs_normalization" in res
    last = res["num_updates"] // res["config"]["eval_every"]
    keys = _final_chunk_eval_keys(bc_run, last)
    out = evaluate.evaluate_workdir(str(bc_run), shift="speed", keys=keys,
                                    episodes=res["eval_episodes"])
    assert out["final_parameters"] and out["updates"] == res["num_updates"]
    for mine, theirs in zip(out["seeds"], res["seeds"]):
        assert mine["score_mean"] == pytest.approx(theirs["final_shift_score_mean"], rel=1e-5)
        assert mine["standard_score_mean"] == pytest.approx(theirs["final_score_mean"], rel=1e-5)
        assert mine["normalized_score"] is not None
    assert os.path.exists(out["path"]) and "shift-speed-" in out["path"]


def test_default_keys_deterministic_and_written(bc_run):
    a = evaluate.evaluate_workdir(str(bc_run), episodes=16)
    b = evaluate.evaluate_workdir(str(bc_run), episodes=16)
    c = evaluate.evaluate_workdir(str(bc_run), episodes=16, eval_seed=1)
    assert [s["score_mean"] for s in a["seeds"]] == [s["score_mean"] for s in b["seeds"]]
    assert [s["score_mean"] for s in a["seeds"]] != [s["score_mean"] for s in c["seeds"]]
    assert a["shift"] is None and a["score_mean_over_seeds"] == a["standard_score_mean_over_seeds"]
    saved = json.load(open(bc_run / "evaluations" / os.path.basename(a["path"])))
    assert saved["seeds"] == a["seeds"] and os.path.basename(a["path"]) == (
        f"standard-u{a['updates']}-e16-k0.json")
    # an older checkpoint is not the final parameters
    d = evaluate.evaluate_workdir(str(bc_run), episodes=4, chunk=1)
    assert not d["final_parameters"] and d["checkpoint_chunk"] == 1


def test_clear_errors(bc_run, tmp_path):
    with pytest.raises(SystemExit, match="--episodes must be >= 1"):
        evaluate.evaluate_workdir(str(bc_run), episodes=0)
    with pytest.raises(SystemExit, match="--shift=R does not apply to mpe_spread"):
        evaluate.evaluate_workdir(str(bc_run), shift="R")
    with pytest.raises(SystemExit, match="has no checkpoint 7"):
        evaluate.evaluate_workdir(str(bc_run), chunk=7)
    with pytest.raises(SystemExit, match="not an experiments.train workdir"):
        evaluate.evaluate_workdir(str(tmp_path))
    with pytest.raises(SystemExit, match="bc has no acting option act_candidates"):
        evaluate.evaluate_workdir(str(bc_run), act_overrides={"act_candidates": 4})
    # a run that has not written a checkpoint yet: one line, and nothing is created there
    import shutil
    young = tmp_path / "young"
    young.mkdir()
    shutil.copy(bc_run / "config.json", young / "config.json")
    with pytest.raises(SystemExit, match="has no checkpoints yet"):
        evaluate.evaluate_workdir(str(young))
    assert sorted(p.name for p in young.iterdir()) == ["config.json"]
    (young / "config.json").write_text("{")  # a damaged config.json is named
    with pytest.raises(SystemExit, match="young/config.json is not valid JSON"):
        evaluate.evaluate_workdir(str(young))


def test_damaged_metrics_csv_is_named(tmp_path):
    from dom2_jax.training.reporting import MetricsLog
    path = tmp_path / "metrics.csv"
    path.write_text("step,eval/seed0\n5000,1.5\n10000,abc\n")
    with pytest.raises(ValueError, match="metrics.csv line 3 is not a row of numbers"):
        MetricsLog.load(str(path))
    path.write_text("step,eval/seed0\n5000,1.5\n")  # a resumed log keeps integer steps
    log = MetricsLog.load(str(path))
    log.append({"step": 10000, "eval/seed0": 2.0})
    assert path.read_text() == "step,eval/seed0\n5000,1.5\n10000,2.0\n"


def test_with_acting_changes_only_how_a_dom2_state_acts():
    """evaluate --act_candidates / --act_selection: the restored DOM2 state acts with K
    candidates chosen by Q; the parameters are untouched; a bad value is one line."""
    import flax
    from typing import Any
    from dom2_jax.algos import dom2

    @flax.struct.dataclass
    class Carry:
        state: Any

    cfg = dom2.default_config()
    cfg.noise_hidden, cfg.critic_hidden = (16,), (16, 16)
    carry = Carry(state=dom2.init(jax.random.PRNGKey(0), cfg, 2, 4, 3))
    out = evaluate.with_acting(carry, {"act_candidates": 4, "act_selection": "argmax"})
    assert (out.state.hp.act_candidates, out.state.hp.act_selection) == (4, "argmax")
    assert out.state.actor is carry.state.actor and carry.state.hp.act_candidates == 1
    assert evaluate.with_acting(carry, {}) is carry
    with pytest.raises(SystemExit, match="act_candidates must be >= 1"):
        evaluate.with_acting(carry, {"act_candidates": 0})


def test_with_acting_sets_masfbcs_number_of_behaviour_samples():
    """--act_candidates=1 on MA-SfBC acts on one diffusion-BC sample (its num_candidates):
    what selection adds to MA-SfBC is then measured on the same checkpoint."""
    import flax
    from typing import Any
    from dom2_jax.algos import masfbc

    @flax.struct.dataclass
    class Carry:
        state: Any

    cfg = masfbc.default_config()
    cfg.noise_hidden, cfg.critic_hidden, cfg.value_hidden = (16,), (16, 16), (16, 16)
    carry = Carry(state=masfbc.init(jax.random.PRNGKey(0), cfg, 2, 4, 3))
    out = evaluate.with_acting(carry, {"act_candidates": 1, "act_selection": "argmax"})
    assert (out.state.hp.num_candidates, out.state.hp.selection) == (1, "argmax")
    assert carry.state.hp.num_candidates == 32
    with pytest.raises(SystemExit, match="num_candidates must be >= 1"):
        evaluate.with_acting(carry, {"act_candidates": 0})


@pytest.mark.parametrize("algo_name", ["dom2", "masfbc"])
def test_candidate_statistics_of_a_policy_and_its_critic(algo_name):
    """experiments.candidates: per-agent spread of K samples and the critic's argmax gain,
    checked against a direct recomputation for agent 0 (same key split)."""
    from dom2_jax.algos import dom2, masfbc
    from experiments import candidates
    algo = {"dom2": dom2, "masfbc": masfbc}[algo_name]
    cfg = algo.default_config()
    cfg.noise_hidden, cfg.critic_hidden = (16,), (16, 16)
    if algo_name == "masfbc":
        cfg.value_hidden = (16, 16)
    state = algo.init(jax.random.PRNGKey(0), cfg, 2, 4, 3)
    obs = jax.random.normal(jax.random.PRNGKey(1), (50, 2, 4))
    acts = jax.random.uniform(jax.random.PRNGKey(2), (50, 2, 3), minval=-1, maxval=1)
    out = candidates.candidate_stats(algo_name, state, obs, acts, jax.random.PRNGKey(3), 8)
    assert set(out) == {"sample_std", "saturation", "q_spread", "q_gain", "q_mean", "q_data"}
    assert all(len(v) == 2 for v in out.values())
    assert min(out["sample_std"]) > 0.05 and min(out["q_gain"]) >= 0   # untrained: diverse
    assert all(0.0 <= s <= 1.0 for s in out["saturation"])
    sample, q_apply, (pol, crit) = candidates.sampler_and_critic(algo_name, state)
    k0 = jax.random.split(jax.random.PRNGKey(3), 2)[0]
    p0, c0 = jax.tree.map(lambda x: x[0], pol), jax.tree.map(lambda x: x[0], crit)
    cand = sample(p0, obs[:, 0], k0, 8)
    q = jnp.min(q_apply(c0, jnp.broadcast_to(obs[:, 0, None], (50, 8, 4)), cand), axis=0)
    np.testing.assert_allclose(out["sample_std"][0], cand.std(axis=1).mean(), rtol=1e-4)
    np.testing.assert_allclose(out["q_gain"][0], (q.max(1) - q.mean(1)).mean(), rtol=1e-4)
