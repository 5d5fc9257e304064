"""Seed planner (dom2_jax.training.seed_plan): group choice by measured speed, memory bounds
from XLA's compiled analysis, refusals in seconds, and grouped runs that match one program."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import launch_train
from dom2_jax import envs, registry
from dom2_jax.training import seed_plan
from dom2_jax.training.trainer import carry_template, scan_updates
from experiments.train import resolve_config


def test_choose_group_follows_the_measured_rate():
    cpu_like = {1: 10.0, 2: 9.0, 4: 8.0}          # vmapping loses: stay at one seed
    assert seed_plan.choose_group(8, 8, cpu_like.get) == (1, {1: 10.0, 2: 9.0})
    gpu_like = lambda g: 10.0 * g ** 0.9           # pays until the memory cap
    g, rates = seed_plan.choose_group(64, 16, gpu_like)
    assert g == 16 and sorted(rates) == [1, 2, 4, 8, 16]
    flat = {1: 10.0, 2: 19.0, 4: 19.5, 8: 40.0}    # stops when a doubling gains < 5%
    assert seed_plan.choose_group(8, 8, flat.get)[0] == 2
    assert seed_plan.choose_group(3, 8, gpu_like)[0] == 3   # capped by the seed count


def test_groups_cover_every_seed_once_and_pad_the_last():
    gs = seed_plan.group_indices(5, 2)
    assert [list(g) for g in gs] == [[0, 1], [2, 3], [4, 4]]
    assert np.unique(np.concatenate(gs)).tolist() == list(range(5))


def test_refusals_name_the_flag():
    with pytest.raises(ValueError, match=r"--num_seeds=100000 needs .* use at most 6 seeds"):
        seed_plan.check_states_fit(100 * 2 ** 20, 100_000, host_bytes=1024 * 2 ** 20)
    seed_plan.check_states_fit(100 * 2 ** 20, 6, host_bytes=1024 * 2 ** 20)
    with pytest.raises(ValueError, match="one seed's training program needs .*batch_size"):
        seed_plan.memory_plan(10 * 2 ** 30, 4, capacity_bytes=2 ** 30)
    assert seed_plan.memory_plan(100, 64, capacity_bytes=1000) == 8   # 80% of 1000 / 100
    assert seed_plan.memory_plan(None, 64, capacity_bytes=1000) == 64


def test_compiled_estimate_holds_the_state_and_grows_with_the_group():
    """The memory analysis of a vmapped update counts at least the seeds' states (arguments)
    and grows about linearly with the group (what memory_plan assumes)."""
    config, _ = resolve_config("dom2", "mpe_spread", "expert", "smoke")
    env = envs.make("mpe_spread")
    algo = registry.algo_module("dom2")
    n = 1000
    arrays = {"obs": jnp.zeros((n, 3, env.obs_dim)), "actions": jnp.zeros((n, 3, env.act_dim)),
              "rewards": jnp.zeros((n, 3)), "next_obs": jnp.zeros((n, 3, env.obs_dim)),
              "dones": jnp.zeros((n, 3))}
    fn = jax.jit(jax.vmap(lambda st, k: scan_updates(algo.update, st, arrays, k, 2),
                          in_axes=(0, None)))
    sizes = {}
    for g in (1, 4):
        state = carry_template(algo, config.agent, env, g).state
        compiled = fn.lower(state, jax.random.PRNGKey(0)).compile()
        sizes[g] = seed_plan.compiled_bytes(compiled)
        if sizes[g] is None:
            pytest.skip("no memory analysis on this backend")
        assert sizes[g] >= seed_plan.tree_bytes(state)
    per_seed = (sizes[4] - sizes[1]) / 3
    assert 0.5 * per_seed <= sizes[1] <= 4 * per_seed + seed_plan.tree_bytes(arrays), sizes


def test_grouped_seeds_match_one_program_and_the_plan_is_kept(tmp_path,
                                                              spread_random_dataset_dir):
    """--num_seeds=3 as groups of 2 (the last padded) gives the numbers of one 3-seed program
    to float32 rounding; the plan is recorded and a too-large run is refused in seconds."""
    cache = str(tmp_path / "cache")
    common = ["--algo=bc", "--env=mpe_spread", "--preset=smoke", "--num_seeds=3",
              "--dataset=" + spread_random_dataset_dir]
    res = {}
    for g in (2, 3):
        wd = tmp_path / f"g{g}"
        r = launch_train(common + [f"--workdir={wd}", f"--seed_group={g}"], cache)
        assert r.returncode == 0, r.stderr[-2000:]
        res[g] = json.load(open(wd / "results.json"))
        plan = json.load(open(wd / "seed_plan.json"))
        assert plan["group"] == g and plan["num_groups"] == (2 if g == 2 else 1)
        assert res[g]["seed_plan"]["group"] == g
    a = [s["final_score_mean"] for s in res[2]["seeds"]]
    b = [s["final_score_mean"] for s in res[3]["seeds"]]
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-2)
    r = launch_train(["--algo=dom2", "--env=mpe_spread", "--num_seeds=1000000",
                      "--dataset=" + spread_random_dataset_dir,
                      f"--workdir={tmp_path / 'huge'}"], cache, timeout=120)
    assert r.returncode != 0 and "--num_seeds=1000000 needs" in r.stderr
    assert not (tmp_path / "huge").exists()
    r = launch_train(common[:3] + ["--dataset=" + spread_random_dataset_dir,
                                   "--config.agent.batch_size=1000000000",
                                   f"--workdir={tmp_path / 'big_batch'}"], cache, timeout=300)
    assert r.returncode != 0 and "one seed's training program needs" in r.stderr
    assert "--config.agent.batch_size" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "big_batch").exists()       # nothing written


def test_seeds_sharded_over_two_devices_equal_one_device(tmp_path, spread_random_dataset_dir):
    """Issue #30: 3 seeds over 2 (forced host) devices, padded to 2 + 2, give the numbers of
    the same seeds on one device in groups of 2 (to float32 rounding: the SPMD program's
    kernels may differ in the last bits; DOM2's smoke run matched bit for bit); results.json
    names the devices and processes."""
    import os
    cache = str(tmp_path / "cache")
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    common = ["--algo=bc", "--env=mpe_spread", "--preset=smoke", "--num_seeds=3",
              "--dataset=" + spread_random_dataset_dir]
    res = {}
    for name, extra in (("two", ["--devices=0"]), ("one", ["--devices=1", "--seed_group=2"])):
        old = os.environ.get("XLA_FLAGS")
        os.environ.update(env)
        try:
            r = launch_train(common + extra + [f"--workdir={tmp_path / name}"], cache)
        finally:
            os.environ.pop("XLA_FLAGS") if old is None else os.environ.update(XLA_FLAGS=old)
        assert r.returncode == 0, r.stderr[-2000:]
        res[name] = json.load(open(tmp_path / name / "results.json"))
    assert res["two"]["devices"] == ["cpu:0", "cpu:1"] and res["one"]["devices"] == ["cpu:0"]
    assert res["two"]["processes"] == 1 and res["two"]["seed_plan"]["group"] == 4
    np.testing.assert_allclose([s["final_score_mean"] for s in res["two"]["seeds"]],
                               [s["final_score_mean"] for s in res["one"]["seeds"]], rtol=1e-4)


def test_two_processes_with_jax_distributed_equal_one_process(tmp_path, spread_random_dataset_dir):
    """Issue #30: 3 seeds over 2 processes on localhost (jax.distributed, gloo on CPU; blocks
    [0, 1] and [2]) give the numbers of the same 3 seeds in one process; each process
    checkpoints its own seeds, process 0 writes results.json and metrics.csv with every seed;
    running the same command again finds the finished run."""
    import os
    import socket
    import subprocess
    import sys
    from tests.conftest import ROOT
    with socket.socket() as s:  # a free port for the coordinator
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cache = str(tmp_path / "cache")
    common = ["--algo=bc", "--env=mpe_spread", "--preset=smoke", "--num_seeds=3",
              "--dataset=" + spread_random_dataset_dir]
    one = launch_train(common + [f"--workdir={tmp_path / 'one'}", "--seed_group=3"], cache)
    assert one.returncode == 0, one.stderr[-2000:]

    def two_processes():
        procs = [subprocess.Popen(
            [sys.executable, "-m", "experiments.train", "--progress=false",
             f"--compilation_cache={cache}", f"--workdir={tmp_path / 'two'}",
             f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
             f"--process_id={i}"] + common, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in (0, 1)]
        outs = [p.communicate(timeout=600) for p in procs]
        for p, (_, err) in zip(procs, outs):
            assert p.returncode == 0, err[-3000:]
        return outs
    outs = two_processes()
    a = json.load(open(tmp_path / "one" / "results.json"))
    b = json.load(open(tmp_path / "two" / "results.json"))
    assert b["processes"] == 2 and b["process_seed_blocks"] == [[0, 1], [2]]
    assert a["processes"] == 1 and a["process_seed_blocks"] == [[0, 1, 2]]
    np.testing.assert_allclose([s["final_score_mean"] for s in b["seeds"]],
                               [s["final_score_mean"] for s in a["seeds"]], rtol=1e-4)
    ckpts = sorted(os.listdir(tmp_path / "two" / "checkpoints"))
    assert ckpts == ["process0-of-2", "process1-of-2"]
    for d in ckpts:
        assert [f for f in os.listdir(tmp_path / "two" / "checkpoints" / d)
                if f.endswith(".msgpack")]
    header = open(tmp_path / "two" / "metrics.csv").readline()
    assert all(f"eval/seed{i}" in header for i in range(3))
    assert "2 processes (jax.distributed)" in outs[0][1]
    assert "2 processes" not in outs[1][1]  # only process 0 reports
    outs = two_processes()  # finished: both processes find it and change nothing
    assert "holds a finished run" in outs[0][1]
    # stopped with process 1 one checkpoint behind process 0: both resume from the step every
    # process has, and finish with the same numbers
    two = tmp_path / "two"
    os.remove(two / "results.json")
    p1 = two / "checkpoints" / "process1-of-2"
    newest = max(int(f.split(".")[0]) for f in os.listdir(p1) if f.endswith(".msgpack"))
    os.remove(p1 / f"{newest}.msgpack")
    outs = two_processes()
    assert f"resumed from chunk {newest - 1}" in outs[0][1]
    c = json.load(open(two / "results.json"))
    assert [s["final_score_mean"] for s in c["seeds"]] == [s["final_score_mean"]
                                                           for s in b["seeds"]]
