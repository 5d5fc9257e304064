"""Shared test fixtures: small datasets made with our own envs (no downloads).

Tests compile many small XLA programs and run each only briefly, so compile time dominates the
suite on CPU. Unless DOM2_TEST_FULL_OPT=1, XLA's backend optimisation is lowered for the test
process and the launchers it starts (same HLO and semantics; measured on a DOM2 train_steps
program: compile ~3x faster, run time about the same; BUILD_NOTES.md "CI time").
"""
import os
import subprocess
import sys

if os.environ.get("DOM2_TEST_FULL_OPT", "0") != "1":
    _fast = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
    if _fast not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _fast).strip()

import numpy as np
import pytest


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def launch_train(args, cache, timeout=900):
    """``python -m experiments.train --progress=false --compilation_cache=cache *args`` in a
    subprocess from the repository root; returns the CompletedProcess (text output)."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "experiments.train", "--progress=false",
                           f"--compilation_cache={cache}"] + list(args), capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=timeout)


def outputs_under_two_instruction_sets(script, cwd):
    """The JSON of the last stdout line of ``python -c script``, run twice: XLA compiling for
    the host's instruction set and for SSE4.2 (no FMA, other vector widths), as on another
    CPU. Full optimisation both times (XLA_FLAGS replaced), as dataset generation runs."""
    import json
    outs = []
    for flags in ("", "--xla_cpu_max_isa=SSE4_2"):
        env = dict(os.environ, XLA_FLAGS=flags, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
        res = subprocess.run([sys.executable, "-c", script], env=env, cwd=cwd,
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-2000:]
        outs.append(json.loads(res.stdout.strip().splitlines()[-1]))
    return outs


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run slow tests")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: pass --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def random_policy_dataset(env_name, num_episodes, seed=0, quality="random"):
    """Uniform-random-action episodes of ``env_name`` as a validated Dataset."""
    import jax
    from dom2_jax import data, envs
    from dom2_jax.envs.rollout import make_rollout

    env = envs.make(env_name)
    policy = lambda p, obs, key: jax.random.uniform(key, (env.num_agents, env.act_dim),
                                                    minval=-1.0, maxval=1.0)
    out = jax.jit(make_rollout(env, policy, num_episodes, return_trajectory=True))(
        None, jax.random.PRNGKey(seed))
    out = jax.device_get(out)
    t = env.episode_length
    flat = lambda x: np.asarray(x).reshape((num_episodes * t,) + np.asarray(x).shape[2:])
    return data.build_dataset(
        flat(out["obs"]).astype(np.float32), flat(out["actions"]).clip(-1, 1).astype(np.float32),
        flat(out["rewards"]).astype(np.float32), flat(out["next_obs"]).astype(np.float32),
        np.zeros((num_episodes * t, env.num_agents), bool),
        np.full(num_episodes, t, np.int64), np.asarray(out["score"], np.float32),
        env=env_name, quality=quality,
        reference_returns={"random": float(np.mean(out["score"])),
                           "expert": float(np.mean(out["score"])) + 100.0},
        generator={"test": "random_policy_dataset"})


@pytest.fixture(scope="session")
def spread_random_dataset_dir(tmp_path_factory):
    from dom2_jax import data
    path = str(tmp_path_factory.mktemp("data") / "spread_random")
    data.save(random_policy_dataset("mpe_spread", 40), path)
    return path
