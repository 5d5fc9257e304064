"""benchmarks.solver_steps and benchmarks.env_speed end to end at tiny sizes."""
import json
import os

import jax
import numpy as np
import pytest

from benchmarks import env_speed, solver_steps

ROW_KEYS = {"solver", "num_steps", "grid", "network_calls", "return_mean", "return_std",
            "return_stderr", "normalized_score", "latency_ms_median", "latency_ms_p90",
            "throughput_joint_actions_per_s", "throughput_batch", "compile_s"}
ACC_KEYS = {"solver", "num_steps", "network_calls", "sliced_w1", "mean_error", "cov_error",
            "mode_weight_error", "gaussian_flow_max_error"}


@pytest.fixture(scope="module")
def solver_steps_run(tmp_path_factory, spread_random_dataset_dir):
    """--quick: a smoke-preset DOM2 policy trained for 2 updates on the tiny random dataset."""
    tmp = tmp_path_factory.mktemp("solver_steps")
    out = str(tmp / "out")
    train_dir = str(tmp / "train")
    result = solver_steps.run(solver_steps.Options(
        quick=True, dataset=spread_random_dataset_dir, train_dir=train_dir, out=out,
        solvers="dpm2,ddpm", accuracy_samples=128))
    return result, out, train_dir


def test_solver_steps_quick_writes_documented_outputs(solver_steps_run):
    result, out, _ = solver_steps_run
    for ext in ("json", "md", "png"):
        path = os.path.join(out, f"solver_steps.{ext}")
        assert os.path.getsize(path) > 100, path
    js = json.load(open(os.path.join(out, "solver_steps.json")))
    for k in ("benchmark", "env", "device_kind", "device_label", "system", "command", "settings",
              "policy", "note", "rows", "accuracy", "not_run"):
        assert k in js, k
    assert "TRAINED" in js["note"] and "swaps" in js["note"]
    assert js["policy"]["trained_with"] == {"solver": "dpm1", "num_steps": 2, "grid": "logsnr"}
    assert js["policy"]["num_updates_done"] == 2
    rows = js["rows"]
    assert [(r["solver"], r["num_steps"]) for r in rows] == [
        (s, n) for s in ("dpm2", "ddpm") for n in (1, 2)]
    for r in rows:
        assert ROW_KEYS <= set(r), set(r) ^ ROW_KEYS
        assert np.isfinite(r["return_mean"]) and r["latency_ms_median"] > 0
        assert r["throughput_joint_actions_per_s"] > 0 and r["normalized_score"] is not None
    assert [r["network_calls"] for r in rows if r["solver"] == "dpm2"] == [2, 4]
    assert js["library_sampler_check"] is None  # skipped with --quick (see the dom2.act test)
    acc = js["accuracy"]
    assert acc["floor_sliced_w1"] > 0 and len(acc["rows"]) == len(rows)
    for r in acc["rows"]:
        assert ACC_KEYS <= set(r) and np.isfinite(r["sliced_w1"])
        assert (r["gaussian_flow_max_error"] is None) == (r["solver"] == "ddpm")
    md = open(os.path.join(out, "solver_steps.md")).read()
    assert "TRAINED" in md and "| ddpm | 2 | 2 |" in md


def test_policy_at_trained_setting_equals_dom2_act(solver_steps_run):
    """The benchmark's sampler swap reproduces dom2.act exactly at the trained setting."""
    from dom2_jax.algos import dom2
    _, _, train_dir = solver_steps_run
    state, env, info = solver_steps.load_policy(train_dir)
    assert info["num_updates_done"] == 2
    hp = state.hp
    obs = jax.random.normal(jax.random.PRNGKey(3), (5, hp.num_agents, hp.obs_dim))
    key = jax.random.PRNGKey(4)
    pol = solver_steps.make_policy(hp, solver_steps.trained_solver(hp), hp.num_solver_steps)
    np.testing.assert_allclose(pol(solver_steps.eval_params(state), obs, key),
                               dom2.act(state, obs, key), rtol=1e-6, atol=1e-6)


def test_solver_steps_halfcheetah_without_workdir_is_explicitly_not_run(tmp_path):
    res = solver_steps.run(solver_steps.parse_args(
        ["--quick", "--env=mamujoco_halfcheetah_2x3", "--no_accuracy", f"--out={tmp_path}"]))
    assert res["rows"] == [] and res["not_run"][0]["reason"].startswith("not run here")
    assert "not run here" in open(tmp_path / "solver_steps.md").read()


def test_env_speed_quick_mpe(tmp_path):
    res = env_speed.run(env_speed.Options(quick=True, which="mpe", out=str(tmp_path)))
    for ext in ("json", "md", "png"):
        assert os.path.getsize(tmp_path / f"env_speed.{ext}") > 100
    js = json.load(open(tmp_path / "env_speed.json"))
    assert js["mjx"] is None and js["not_run"]
    rows = js["mpe"]["rows"]
    assert [r["batch"] for r in rows] == [8, 32]
    for r in rows:
        assert r["jax_steps_per_s"] > 0 and r["reference_steps_per_s"] > 0 and r["speedup"] > 0
    assert "| MPE spread | 32 |" in open(tmp_path / "env_speed.md").read()
    assert res["device_label"] is None


def test_dynamic_sampler_equals_library_sampler():
    """The benchmark's traced-N loop reproduces diffusion.sample (the same steps and grid)."""
    import jax.numpy as jnp
    from dom2_jax import diffusion
    sched = diffusion.VPSchedule()
    # a well-conditioned target: with one or two huge steps on the narrow mixture, float32
    # rounding alone (jit vs no jit of the library itself) moves samples by ~1e-3..1e-1
    mus = jnp.asarray(solver_steps.MIXTURE["mus"])
    eps_fn = solver_steps.mixture_eps(mus, 0.5, solver_steps.MIXTURE["weights"], sched)
    x = jax.random.normal(jax.random.PRNGKey(0), (64, 2))
    key = jax.random.PRNGKey(1)
    for solver in diffusion.SOLVERS:
        grid = "time_uniform" if solver == "ddpm" else "logsnr"
        steps = (1,) if solver == "ddpm" else (2, 5)  # ddpm: its noise differs for N > 1

        @jax.jit
        def both(x, ns):  # one compile per solver: the traced-N loop and the library at each N
            dyn = [solver_steps.dynamic_sample(solver, eps_fn, x, sched, ns[i], key=key,
                                               grid=grid) for i in range(len(steps))]
            lib = [diffusion.sample(solver, eps_fn, x, sched, n, key=key, grid=grid)
                   for n in steps]
            return dyn, lib

        dyn, lib = both(x, jnp.asarray(steps, jnp.int32))
        for n, d, r in zip(steps, dyn, lib):
            np.testing.assert_allclose(d, r, rtol=1e-4, atol=1e-4, err_msg=f"{solver} N={n}")


def test_saved_gpu_result_with_failed_seed_row_rerenders(tmp_path):
    # The committed H200 result is partial (the lease's time limit stopped it during the
    # HalfCheetah setting) and holds a seeds row that ran out of GPU memory: re-deriving it must
    # keep the measured rows, mark the failure and the partial state, and still draw the plot.
    import json
    import shutil
    from benchmarks import throughput
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks",
                       "results", "throughput_nvidia_h200.json")
    dst = tmp_path / "throughput_nvidia_h200.json"
    shutil.copy(src, dst)
    res = throughput.run(throughput.Options(from_json=str(dst)))
    failed = [r for r in res["seeds"] if r.get("error")]
    assert failed and "RESOURCE_EXHAUSTED" in failed[0]["error"]
    ok = [r for r in res["seeds"] if not r.get("error")]
    assert ok and all(r["seed_updates_per_s"] > 0 for r in ok)
    md = (tmp_path / "throughput_nvidia_h200.md").read_text()
    assert "failed: JaxRuntimeError" in md and "Partial result" in md
    assert (tmp_path / "throughput_nvidia_h200.png").stat().st_size > 10_000
    assert json.loads(dst.read_text())["complete"] is False


def test_env_speed_without_mpe2_records_why_the_reference_is_missing(tmp_path, monkeypatch):
    # mpe2 is a test extra: on a machine without it (the lent GPU had none) the JAX rows are
    # still measured and the missing reference is reported, not a crash.
    from benchmarks import env_speed_mpe

    def no_mpe2(module, episodes):
        raise ModuleNotFoundError("No module named 'mpe2'")
    monkeypatch.setattr(env_speed_mpe, "mpe2_steps_per_second", no_mpe2)
    res = env_speed.run(env_speed.Options(quick=True, which="mpe", out=str(tmp_path)))
    rows = res["mpe"]["rows"]
    assert rows and all(r["jax_steps_per_s"] > 0 and r["speedup"] is None for r in rows)
    assert any("mpe2 reference" in n["part"] for n in res["not_run"])
    assert "mpe2 could not be imported" in open(tmp_path / "env_speed.md").read()


def test_benchmark_flags_are_absl_defined_only_when_run_as_a_script():
    # Importing a benchmark defines no global absl flag (tests and other benchmarks import
    # them; --out, --quick, ... would clash), and each script's flags read back its Options
    # defaults; bad values are refused by the flags or by resolve.
    from absl import flags
    from benchmarks import cli, env_speed_mjx, env_speed_mpe, throughput
    for mod in (solver_steps, env_speed, env_speed_mjx, env_speed_mpe, throughput):
        assert not flags.FLAGS.get_flags_for_module(mod.__name__), mod.__name__
    for mod in (solver_steps, env_speed, env_speed_mjx, env_speed_mpe):
        assert cli.parse(mod.define_flags, mod.Options, []) == mod.Options(), mod.__name__
    assert solver_steps.parse_args(["--train_override=a=1", "--train_override=b=2",
                                    "--steps=1,5", "--sampler_impl=library"]).train_override \
        == ["a=1", "b=2"]
    assert env_speed_mjx.Options(steps=7) == cli.parse(env_speed_mjx.define_flags,
                                                       env_speed_mjx.Options, ["--steps=7"])
    with pytest.raises(flags.IllegalFlagValueError):
        solver_steps.parse_args(["--sampler_impl=fast"])
    with pytest.raises(flags.UnrecognizedFlagError):
        env_speed.parse_args(["--mpe-batch-sizes=8"])
    with pytest.raises(ValueError, match="--which: unknown"):
        env_speed.parse_args(["--which=gpu"])
    assert cli.flag_argv(solver_steps.Options(quick=True, steps="1,2", train_override=["x=1"])) \
        == ["--train_override=x=1", "--steps=1,2", "--quick"]


def _seed_row(seeds, rate, compiled_bytes=None, remat=False):
    return {"setting": "spread", "seeds": seeds, "remat_solver": remat,
            "seed_updates_per_s": rate,
            "bytes_per_seed": compiled_bytes / seeds if compiled_bytes else None}


def test_throughput_seed_plan_follows_the_measured_rows():
    from benchmarks import throughput
    gib = 2 ** 30
    # powers of two: exactly seed_plan.choose_group on the measured rates
    rows = [_seed_row(1, 10.0, gib), _seed_row(2, 19.0, 1.5 * gib), _seed_row(4, 19.5, 2 * gib)]
    (p,) = throughput.seed_plans(rows, 100 * gib)
    assert p["group"] == 2 and p["rates_compared"] == {"1": 10.0, "2": 19.0, "4": 19.5}
    assert p["memory_max_group"] == 80 and p["one_seed_bytes"] == gib
    # 1, 4, 16: each measured count is one doubling step; memory drops 16 (8 GiB free: 6 seeds)
    rows = [_seed_row(1, 10.0, gib), _seed_row(4, 30.0), _seed_row(16, 90.0)]
    (p,) = throughput.seed_plans(rows, 8 * gib)
    assert p["memory_max_group"] == 6 and p["ladder"] == [1, 4] and p["group"] == 4
    assert throughput.seed_plans(rows, 10_000 * gib)[0]["group"] == 16
    # one seed does not fit: no group, the refusal is reported
    (p,) = throughput.seed_plans(rows, gib)
    assert p["group"] is None and "one seed's training program needs" in p["memory_error"]
    assert "refused" in throughput.plan_line(p)
    # unknown memory (an old result): speed only; remat rows get their own plan
    plans = throughput.seed_plans(rows + [_seed_row(1, 9.0, remat=True),
                                          _seed_row(4, 9.1, remat=True)], None)
    assert [(p["remat_solver"], p["group"]) for p in plans] == [(False, 16), (True, 1)]


def test_throughput_quick_seed_rows_carry_bytes_and_plan(tmp_path):
    # No torch needed (tests/test_throughput.py, skipped without torch, covers the rest): one
    # seed count, measured with remat_solver off and on, XLA's bytes and the plan in all files.
    from benchmarks import throughput
    res = throughput.run(throughput.Options(quick=True, no_torch=True, seeds_list="1",
                                            updates=1, remat_solver=True, out=str(tmp_path)))
    assert throughput.init_state("spread", True, 0, True)[2].hp.remat_solver is True
    saved = json.load(open(tmp_path / "throughput_quick.json"))
    assert set(throughput.RESULT_KEYS) <= set(saved) and saved["device_free_bytes"] > 0
    rows = saved["seeds"]
    assert [(r["seeds"], r["remat_solver"]) for r in rows] == [(1, False), (1, True)]
    for r in rows:
        assert r["compiled_bytes"] > 0 and r["bytes_per_seed"] == r["compiled_bytes"]
        assert r["memory"]["argument"] > 0 and r["seed_updates_per_s"] > 0
    assert rows[0]["compiled_bytes"] == saved["settings"]["spread"]["jax"]["compiled_bytes"]
    plans = saved["plans"]
    assert [(p["setting"], p["remat_solver"], p["group"]) for p in plans] == [
        ("spread", False, 1), ("spread", True, 1)]
    assert all(p["memory_max_group"] >= 1 and p["one_seed_bytes"] > 0 for p in plans)
    md = (tmp_path / "throughput_quick.md").read_text()
    assert "| program MiB | MiB per seed |" in md and "| spread | 1 | 1 | on | 1 |" in md
    assert "* spread, remat on: group 1 of the measured [1] seeds" in md
    assert res["plans"] == plans


def test_throughput_devices_rows_on_two_forced_host_devices(tmp_path):
    """Issue #30: --devices=1,2 measures every seeds row with S > 1 again split over 2 devices
    (forced host devices on a CPU: the mechanism, said so in the table); the plan uses the
    one-device rows only; a count that does not split is a row naming why."""
    import os
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root,
               XLA_FLAGS="--xla_force_host_platform_device_count=2")
    p = subprocess.run([sys.executable, "-m", "benchmarks.throughput", "--quick", "--no_torch",
                        "--seeds_list=1,2,3", "--devices=1,2", "--updates=1",
                        f"--out={tmp_path}"], cwd=root, env=env, capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    saved = json.load(open(tmp_path / "throughput_quick.json"))
    rows = [(r["seeds"], r["devices"], "error" in r) for r in saved["seeds"]]
    assert rows == [(1, 1, False), (2, 1, False), (2, 2, False), (3, 1, False), (3, 2, True)]
    two = [r for r in saved["seeds"] if r["devices"] == 2 and "error" not in r][0]
    assert two["seed_updates_per_s"] > 0 and two["compiled_bytes"] > 0
    assert "do not split over 2 devices" in saved["seeds"][-1]["error"]
    assert saved["plans"][0]["measured_seeds"] == [1, 2, 3]
    md = (tmp_path / "throughput_quick.md").read_text()
    assert "| spread | 2 | 2 | off |" in md and "measure the mechanism, not a speed-up" in md
    p = subprocess.run([sys.executable, "-m", "benchmarks.throughput", "--quick", "--no_torch",
                        "--devices=4", f"--out={tmp_path / 'x'}"], cwd=root, env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode != 0 and "xla_force_host_platform_device_count=4" in p.stderr
    assert "Traceback" not in p.stderr
