"""Trainer and launcher: vmapped seeds = single seeds, determinism, resume, results, errors."""
import json
import os
import re
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import launch_train
from dom2_jax import data, envs
from dom2_jax.training.trainer import make_train
from experiments.train import resolve_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def smoke_config():
    config, _ = resolve_config("dom2", "mpe_spread", "random", "smoke")
    return config


@pytest.fixture(scope="module")
def trainer(spread_random_dataset_dir):
    ds = data.load(spread_random_dataset_dir, expected_env="mpe_spread")
    return make_train(smoke_config(), data.to_device(ds), envs.make("mpe_spread"))


def test_two_vmapped_seeds_equal_two_single_runs_and_are_deterministic(trainer):
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    train = jax.jit(jax.vmap(trainer.train))
    both = train(keys)
    again = train(keys)
    singles = [train(keys[i:i + 1]) for i in range(2)]
    for i in range(2):
        for a, b in zip(jax.tree.leaves(both), jax.tree.leaves(singles[i])):
            # different batch shapes reassociate float sums (~1e-6 after 4 Adam steps)
            np.testing.assert_allclose(np.asarray(a)[i], np.asarray(b)[0], rtol=1e-3, atol=1e-4)
    for a, b in zip(jax.tree.leaves(both), jax.tree.leaves(again)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    carry, metrics, evals = both
    assert evals["score_mean"].shape == (2, trainer.num_chunks)
    assert not np.allclose(evals["score_mean"][0], evals["score_mean"][1])


def test_config_precedence_and_errors():
    c, cli = resolve_config("dom2", "mpe_spread", "expert", None)
    assert c.agent.gamma == 0.95 and c.agent.zeta == 5.0 and c.agent.num_solver_steps == 5
    c, _ = resolve_config("dom2", "mamujoco_halfcheetah_2x3", "random", "quick")
    assert c.agent.num_solver_steps == 10 and c.agent.zeta == 1.0 and c.num_updates == 3000
    with pytest.raises(ValueError, match="multiple of eval_every"):
        cfg = smoke_config()
        cfg.num_updates = 5
        make_train(cfg, {}, envs.make("mpe_spread"))


_launch = launch_train


def test_launcher_bad_flags_fail_fast_with_clear_messages(tmp_path, spread_random_dataset_dir):
    cache = str(tmp_path / "cache")
    r = _launch(["--env=mpe_spread", "--workdir=" + str(tmp_path / "w"), "--shift=R",
                 "--dataset=" + spread_random_dataset_dir], cache)
    assert r.returncode != 0 and "--shift=R does not apply to mpe_spread" in r.stderr + r.stdout
    r = _launch(["--env=mpe_spread", "--quality=expert", "--workdir=" + str(tmp_path / "w"),
                 "--data_root=" + str(tmp_path / "nodata")], cache)
    assert r.returncode != 0 and "does not exist. Generate it with" in r.stderr + r.stdout
    r = _launch(["--env=mpe_nope", "--workdir=x"], cache)
    assert r.returncode != 0 and "mpe_nope" in r.stderr
    r = _launch(["--env=mpe_spread", "--dataset=" + spread_random_dataset_dir,
                 "--workdir=" + str(tmp_path / "w"), "--config.agent.solver_order=7"], cache)
    assert r.returncode != 0 and "solver_order must be 1, 2 or 3" in r.stderr + r.stdout
    r = _launch(["--env=mpe_spread", "--dataset=" + spread_random_dataset_dir,
                 "--workdir=" + str(tmp_path / "w"), "--config.agent.etaa=1"], cache)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert ('error: --config.agent.etaa: unknown field etaa Did you mean "eta"'
            in r.stderr), r.stderr
    r = _launch(["--env=mpe_spread", "--dataset=" + spread_random_dataset_dir,
                 "--workdir=/proc/no_such_dir/w"], cache)
    assert r.returncode != 0 and "cannot create --workdir '/proc/no_such_dir/w'" in r.stderr
    assert "Traceback" not in r.stderr
    # a dataset found by name under --data_root must have the size the config asks for
    (tmp_path / "root" / "mpe_spread").mkdir(parents=True)
    os.symlink(spread_random_dataset_dir, tmp_path / "root" / "mpe_spread" / "random-n2000")
    r = _launch(["--env=mpe_spread", "--quality=random", f"--data_root={tmp_path / 'root'}",
                 "--preset=smoke", f"--workdir={tmp_path / 'sized'}"], cache)
    assert r.returncode != 0 and "holds 1000 transitions but the config asks for " \
        "dataset_size=2000; regenerate it, or pass --config.dataset_size=1000" in r.stderr
    assert not (tmp_path / "sized").exists()


def test_launcher_results_and_resume_equals_uninterrupted(tmp_path, spread_random_dataset_dir):
    cache = str(tmp_path / "cache")
    args = ["--algo=dom2", "--env=mpe_spread", "--dataset=" + spread_random_dataset_dir,
            "--preset=smoke", "--num_seeds=2", "--shift=speed"]
    full = tmp_path / "full"
    r = _launch(args + [f"--workdir={full}"], cache)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.load(open(full / "results.json"))
    for k in ("config", "seeds", "wall_clock_s", "updates_per_s_per_seed", "system",
              "reference_returns", "final_score_mean_over_seeds"):
        assert k in res, k
    assert len(res["seeds"]) == 2
    for s in res["seeds"]:
        for k in ("final_score_mean", "final_score_std", "best_eval_score",
                  "final_shift_score_mean", "final_normalized_score"):
            assert np.isfinite(s[k]), k
    assert (full / "learning_curve.png").stat().st_size > 1000
    assert (full / "metrics.csv").read_text().count("\n") == 3  # header + 2 evaluations
    # --progress=false (logs, sweeps, device runs) still prints one line per evaluation
    assert re.search(r"update 2/4: eval -?\d+\.\d \(\d+ s\)", r.stdout), r.stdout
    assert "update 4/4: eval" in r.stdout
    assert json.load(open(full / "config.json"))["config"]["agent"]["noise_hidden"] == [32]
    # what it runs, a word before the compile, the shifted score in the final line
    assert "dom2 on mpe_spread: 4 updates of batch" in r.stderr
    assert "compiling the training program" in r.stderr and "compiled in" in r.stderr
    assert re.search(r"final score .*; shifted \(speed\) -?\d+\.\d", r.stdout), r.stdout
    assert res["compile_s"] > 0 and res["first_chunk_s"] >= 0

    # An interrupted run: only the first checkpoint survived, plus a half-written one left by
    # a process killed while saving. Re-running the command resumes and ends identically.
    part = tmp_path / "part"
    shutil.copytree(full, part)
    shutil.rmtree(part / "checkpoints" / "2")
    os.makedirs(part / "checkpoints" / "2.orbax-checkpoint-tmp-1234567")
    (part / "checkpoints" / "2.orbax-checkpoint-tmp-1234567" / "junk").write_text("partial")
    os.remove(part / "results.json")
    r = _launch(args + [f"--workdir={part}"], cache)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resumed from chunk 1" in r.stderr
    assert "update 4/4: eval" in r.stdout and "update 2/4" not in r.stdout
    res2 = json.load(open(part / "results.json"))
    for a, b in zip(res["seeds"], res2["seeds"]):
        assert a["final_score_mean"] == pytest.approx(b["final_score_mean"], rel=1e-6)
    p_full, p_part = _latest_checkpoint(full), _latest_checkpoint(part)
    assert len(jax.tree.leaves(p_full)) > 10
    for a, b in zip(jax.tree.leaves(p_full), jax.tree.leaves(p_part)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    # A different config in the same workdir is refused instead of silently resumed.
    r = _launch(args + [f"--workdir={part}", "--config.agent.eta=0.5"], cache)
    assert r.returncode != 0 and "different config" in r.stderr + r.stdout

    # The same path holding other data (a regenerated dataset) is refused too, before compiling.
    cfg = json.load(open(part / "config.json"))
    assert len(cfg["dataset_sha256"]) == 64
    cfg["dataset_sha256"] = "0" * 64
    (part / "config.json").write_text(json.dumps(cfg))
    r = _launch(args + [f"--workdir={part}"], cache)
    assert r.returncode != 0 and "other data than" in r.stderr + r.stdout


def _latest_checkpoint(workdir):
    """The newest checkpoint of a run as a raw pytree (every parameter, optimiser state, key)."""
    import orbax.checkpoint as ocp
    mgr = ocp.CheckpointManager(str(workdir / "checkpoints"))
    assert mgr.latest_step() == 2
    return mgr.restore(2, args=ocp.args.StandardRestore())


def test_cpu_eval_backend_matches_in_chunk_evaluation():
    """--eval_backend=cpu: the chunk hands back its eval key, the C MuJoCo evaluator is
    deterministic in it and agrees in distribution with the in-chunk (MJX) evaluation."""
    from dom2_jax.algos import bc
    from dom2_jax.training.host_eval import make_cpu_evaluate, resolve_eval_backend
    env = envs.make("mamujoco_halfcheetah_2x3", episode_length=25)
    config, _ = resolve_config("bc", "mamujoco_halfcheetah_2x3", "expert", "smoke")
    config.eval_episodes = 8
    arrays = data.to_device(_synthetic_dataset(env, 16))
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    host_t = make_train(config, arrays, env, evaluate_in_chunk=False)
    jax_t = make_train(config, arrays, env)
    carry, _, ev = jax.jit(jax.vmap(host_t.chunk))(jax.jit(jax.vmap(host_t.init))(keys))
    carry_j, _, ev_j = jax.jit(jax.vmap(jax_t.chunk))(jax.jit(jax.vmap(jax_t.init))(keys))
    assert set(ev) == {"eval_key"}
    for a, b in zip(jax.tree.leaves(carry), jax.tree.leaves(carry_j)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # the handed-back key is the one the in-chunk evaluation used
    mjx = jax.device_get(jax.jit(jax.vmap(jax_t.evaluate))(carry.state, ev["eval_key"]))
    np.testing.assert_allclose(mjx["score_mean"], np.asarray(ev_j["score_mean"]), rtol=1e-6)
    evaluate = make_cpu_evaluate(bc.act, env, None, config.eval_episodes)
    cpu = evaluate(carry.state, ev["eval_key"])
    again = evaluate(carry.state, ev["eval_key"])
    np.testing.assert_array_equal(cpu["score_mean"], again["score_mean"])
    assert cpu["score_mean"].shape == (2,) and set(cpu) == {"score_mean", "score_std"}
    # different initial states: agree within 4 standard errors (plus float32 slack)
    se = np.sqrt((cpu["score_std"] ** 2 + mjx["score_std"] ** 2) / config.eval_episodes)
    assert np.all(np.abs(cpu["score_mean"] - mjx["score_mean"])
                  <= 4 * se + 1e-2 * np.abs(mjx["score_mean"]) + 1e-3), (cpu, mjx)
    assert resolve_eval_backend(env, "auto") == ("cpu" if jax.default_backend() == "cpu"
                                                 else "jax")
    assert resolve_eval_backend(envs.make("mpe_spread"), "auto") == "jax"
    with pytest.raises(ValueError, match="unknown eval backend"):
        resolve_eval_backend(env, "gpu")


def test_normalize_obs_trains_and_acts_on_standardised_observations(spread_random_dataset_dir):
    """config.normalize_obs: the trainer standardises the dataset with its per-agent mean/std
    (+1e-3) and Trainer.act applies the same map to raw observations."""
    from dom2_jax.algos import bc
    ds = data.load(spread_random_dataset_dir, expected_env="mpe_spread")
    env = envs.make("mpe_spread")
    config, _ = resolve_config("bc", "mpe_spread", "random", "smoke")
    arrays = data.to_device(ds)
    config.normalize_obs = True
    t_norm = make_train(config, arrays, env)
    obs = np.asarray(ds.obs)
    np.testing.assert_allclose(t_norm.obs_stats["mean"], obs.mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(t_norm.obs_stats["std"], obs.std(0) + 1e-3, rtol=1e-4, atol=1e-5)
    mu, sd = np.asarray(t_norm.obs_stats["mean"]), np.asarray(t_norm.obs_stats["std"])
    st = t_norm.obs_stats
    pre = dict(arrays, obs=(arrays["obs"] - st["mean"]) / st["std"],
               next_obs=(arrays["next_obs"] - st["mean"]) / st["std"])
    config.normalize_obs = False
    t_pre = make_train(config, pre, env)
    assert t_pre.obs_stats is None
    key = jax.random.PRNGKey(0)
    c_norm = t_norm.chunk(t_norm.init(key))[0]
    c_pre = t_pre.chunk(t_pre.init(key))[0]
    for a, b in zip(jax.tree.leaves(c_norm.state), jax.tree.leaves(c_pre.state)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    raw = jnp.asarray(obs[:5])
    np.testing.assert_allclose(t_norm.act(c_norm.state, raw, key),
                               bc.act(c_norm.state, (raw - mu) / sd, key), rtol=1e-6)
    assert not np.allclose(t_norm.act(c_norm.state, raw, key), bc.act(c_norm.state, raw, key))


@pytest.mark.parametrize("preset", [None, "quick", "cpu"])
def test_preprocessing_and_protocol_are_per_task_never_per_algorithm(preset):
    """Equal treatment (issue #26): every algorithm gets the same observation preprocessing on
    a task (standardised on HalfCheetah, raw on MPE), and under --preset=cpu the same budget,
    dataset size and evaluation episodes."""
    algos = ("dom2", "macql", "omar", "masfbc", "matd3bc", "bc")
    for env, norm in (("mamujoco_halfcheetah_2x3", True), ("mpe_spread", False)):
        for q in ("medium", "expert", "random"):
            cfgs = [resolve_config(a, env, q, preset)[0] for a in algos]
            assert {c.normalize_obs for c in cfgs} == {norm}, (env, q)
            if preset == "cpu":
                assert {(c.num_updates, c.eval_every, c.eval_episodes, c.dataset_size)
                        for c in cfgs} == {(30_000, 5_000, 100, 1_000_000)}, (env, q)


_SAVE_ON_SECOND_DEVICE = """
import os, sys
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
import jax, jax.numpy as jnp
from dom2_jax.training.checkpoint import Checkpointer
c = Checkpointer(sys.argv[1])
c.save(1, {"a": jax.device_put(jnp.arange(3.0), jax.devices()[1]), "b": jnp.full((2, 2), 7.0)})
c.close()
"""


def test_checkpoint_restores_on_a_different_device_topology(tmp_path):
    # A checkpoint records where its arrays lived (here cpu:1 of a 2-device process). Restoring
    # from a shape-only template must place them on this process's device instead of failing
    # with orbax's "Topology mismatch" (seen restoring a CPU-written checkpoint on a GPU host).
    from dom2_jax.training.checkpoint import Checkpointer
    ckpt_dir = str(tmp_path / "ckpt")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    subprocess.run([sys.executable, "-c", _SAVE_ON_SECOND_DEVICE, ckpt_dir], check=True, env=env,
                   cwd=ROOT, timeout=120)
    template = jax.eval_shape(lambda: {"a": jnp.zeros(3), "b": jnp.zeros((2, 2))})
    restored = Checkpointer(ckpt_dir).restore(template)
    np.testing.assert_array_equal(restored["a"], [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(restored["b"], np.full((2, 2), 7.0))
    assert restored["a"].devices() == {jax.local_devices()[0]}


def test_bad_run_settings_are_refused_before_anything_is_written(tmp_path):
    """eval_every=0, a budget that is not a multiple of eval_every or a data fraction above 1
    is one clear error from the config resolution (no workdir, no compile)."""
    for algo in ("dom2", "bc", "masfbc"):
        for preset in (None, "smoke", "quick", "cpu"):
            resolve_config(algo, "mamujoco_halfcheetah_2x3", "medium", preset)  # defaults pass
    for cli, msg in (({"eval_every": 0}, "config.eval_every must be an integer >= 1, got 0"),
                     ({"num_updates": 5}, "config.num_updates must be a multiple of eval_every"),
                     ({"data_fraction": 2.0}, r"config.data_fraction must be in \(0, 1\]"),
                     ({"eval_episodes": -1}, "config.eval_episodes must be an integer >= 1")):
        with pytest.raises(ValueError, match=msg):
            resolve_config("dom2", "mpe_spread", "expert", "smoke", cli)
    wd = tmp_path / "run"
    out = subprocess.run([sys.executable, "-m", "experiments.train", "--algo=bc",
                          "--env=mpe_spread", "--quality=expert", "--preset=smoke",
                          "--config.eval_every=0", f"--workdir={wd}"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "error: config.eval_every must be an integer >= 1, got 0" in out.stderr
    assert not wd.exists()


def test_missing_dataset_leaves_no_workdir_and_a_usable_hint(tmp_path):
    wd, missing = tmp_path / "run", tmp_path / "nodata"
    out = subprocess.run([sys.executable, "-m", "experiments.train", "--algo=bc",
                          "--env=mpe_spread", "--preset=smoke", f"--dataset={missing}",
                          f"--workdir={wd}"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert f"dataset '{missing}' does not exist" in out.stderr
    assert "--quality=None" not in out.stderr and "--quality=QUALITY" in out.stderr
    assert not wd.exists()


def test_a_second_launch_on_a_busy_workdir_is_refused(tmp_path):
    from experiments.train import lock_workdir
    fd = lock_workdir(str(tmp_path))
    try:
        out = subprocess.run([sys.executable, "-c", "from experiments.train import lock_workdir; "
                              f"lock_workdir({str(tmp_path)!r})"], cwd=ROOT, capture_output=True,
                             text=True, timeout=120)
        assert out.returncode != 0
        assert f"is in use by another experiments.train (pid {os.getpid()})" in out.stderr
    finally:
        os.close(fd)  # released: the next launch gets it
    out = subprocess.run([sys.executable, "-c", "from experiments.train import lock_workdir; "
                          f"lock_workdir({str(tmp_path)!r})"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr


@pytest.mark.slow  # a training interrupted mid-run: timing-sensitive on a loaded CI box
def test_ctrl_c_ends_with_one_line_and_a_resumable_run(tmp_path, spread_random_dataset_dir):
    import signal
    import time
    wd = tmp_path / "run"
    p = subprocess.Popen([sys.executable, "-m", "experiments.train", "--algo=bc",
                          "--env=mpe_spread", f"--dataset={spread_random_dataset_dir}",
                          "--preset=smoke", "--config.num_updates=2000",
                          "--config.eval_every=2", "--progress=false", f"--workdir={wd}"],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (wd / "metrics.csv").exists() and time.time() < deadline and p.poll() is None:
        time.sleep(0.2)  # wait until it trains (a chunk is done), then Ctrl-C
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 130, err
    assert "Traceback" not in err and "interrupted: re-run the same command" in err
    assert (wd / "checkpoints").is_dir()


def test_nan_guard_names_the_first_term_and_update_in_time():
    from dom2_jax.training.trainer import first_nonfinite
    k = 10
    summary = {  # 'a_loss' goes bad at update 7, 'z_loss' at update 3 (first in time)
        "a_loss": np.float32(np.nan), "a_loss/nonfinite": np.array([2, 0]),
        "a_loss/first_nonfinite": np.array([6, k]),
        "z_loss": np.float32(np.nan), "z_loss/nonfinite": np.array([0, 5]),
        "z_loss/first_nonfinite": np.array([k, 2]),
        "ok": np.float32(1.0), "ok/nonfinite": np.array([0, 0]),
        "ok/first_nonfinite": np.array([k, k])}
    assert first_nonfinite(summary) == ("z_loss", 2)
    assert first_nonfinite({"ok": 1.0, "ok/nonfinite": np.array([0]),
                            "ok/first_nonfinite": np.array([k])}) is None


def test_finished_and_nearly_finished_runs_give_the_uninterrupted_numbers(
        tmp_path, spread_random_dataset_dir):
    """Re-running a finished run prints its stored result and changes nothing; a run killed
    after its last checkpoint but before results.json gets the uninterrupted run's final
    scores back (from metrics.csv), not a new evaluation with another key."""
    wd = tmp_path / "run"
    args = ["--algo=bc", "--env=mpe_spread", f"--dataset={spread_random_dataset_dir}",
            "--preset=smoke", f"--workdir={wd}"]
    first = launch_train(args, tmp_path / "cache")
    assert first.returncode == 0, first.stderr
    results = (wd / "results.json").read_text()
    again = launch_train(args, tmp_path / "cache")
    assert again.returncode == 0, again.stderr
    assert "holds a finished run" in again.stderr and "final score" in again.stdout
    assert (wd / "results.json").read_text() == results  # byte for byte: nothing rewritten
    (wd / "results.json").unlink()  # as if killed after the last checkpoint
    resumed = launch_train(args, tmp_path / "cache")
    assert resumed.returncode == 0, resumed.stderr
    old, new = json.loads(results), json.loads((wd / "results.json").read_text())
    assert [s["final_score_mean"] for s in new["seeds"]] == \
        [s["final_score_mean"] for s in old["seeds"]]
    assert [s["final_score_std"] for s in new["seeds"]] == \
        [s["final_score_std"] for s in old["seeds"]]


def test_a_full_disk_ends_in_one_line_naming_the_workdir(monkeypatch):
    """ENOSPC anywhere in the exception chain (orbax wraps it) -> one line, exit non-zero,
    telling the user the run resumes; other errors still raise."""
    import errno
    from experiments import train

    class OrbaxLike(RuntimeError):
        pass

    def full():
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as e:
            raise OrbaxLike("save failed") from e

    monkeypatch.setattr(train, "run", full)
    monkeypatch.setattr(train.FLAGS["workdir"], "value", "/some/run")
    with pytest.raises(SystemExit, match="no space left on device while writing /some/run .*"
                                         "resumes from the newest complete checkpoint"):
        train.main(["train"])
    assert train.disk_full(RuntimeError("tensorstore: No space left on device"))
    assert not train.disk_full(RuntimeError("other"))
    monkeypatch.setattr(train, "run", lambda: (_ for _ in ()).throw(RuntimeError("other")))
    with pytest.raises(RuntimeError, match="other"):
        train.main(["train"])


def test_chunk_with_the_dataset_as_an_argument_equals_the_closed_over_one(algo="dom2"):
    """``Trainer.chunk_on(carry, data)`` (what the launcher compiles: the dataset is an
    argument, not a constant of the program) gives the same bits as ``chunk(carry)``."""
    env = envs.make("mpe_spread")
    config, _ = resolve_config(algo, "mpe_spread", "expert", "smoke")
    t = make_train(config, data.to_device(_synthetic_dataset(env, 12)), env)
    carry = jax.jit(jax.vmap(t.init))(jax.random.split(jax.random.PRNGKey(0), 2))
    a = jax.jit(jax.vmap(t.chunk))(carry)
    b = jax.jit(jax.vmap(t.chunk_on, in_axes=(0, None)))(carry, t.data)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _synthetic_dataset(env, episodes, length=25):
    """``episodes`` episodes of ``length`` random transitions of ``env`` (a valid Dataset)."""
    rng = np.random.default_rng(0)
    n, A = episodes * length, env.num_agents
    obs = rng.normal(size=(n, A, env.obs_dim)).astype(np.float32)
    return data.build_dataset(obs, rng.uniform(-1, 1, (n, A, env.act_dim)).astype(np.float32),
                              rng.normal(size=(n, A)).astype(np.float32), obs,
                              np.zeros((n, A), bool), np.full(episodes, length, np.int64),
                              np.zeros(episodes, np.float32), env=env.name, quality="expert",
                              generator={"test": "synthetic"})
