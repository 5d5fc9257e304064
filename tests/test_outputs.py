"""Outputs that are safe to share: by default nothing replaces a shipped behaviour policy
(dom2_jax/assets) or a committed benchmark result (benchmarks/results). The shipped assets are
stood in for by a temporary directory (``policies.ASSETS_DIR`` patched); the real ones are
never written."""
import os
import subprocess
import sys

import numpy as np
import pytest

from benchmarks import env_speed, outputs, solver_steps, throughput
from dom2_jax.online import policies
from experiments import train_behaviour

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def fake_assets(tmp_path, monkeypatch):
    """A stand-in for dom2_jax/assets holding a shipped mpe_spread expert policy and its
    behaviour_returns.json entry; ``policies.ASSETS_DIR`` points at it."""
    assets = str(tmp_path / "assets")
    policies.save_policy(policies.policy_path("mpe_spread", "expert", assets),
                         {"params/w": np.ones((3, 2), np.float32)}, {"env": "mpe_spread"})
    policies.write_json(os.path.join(assets, policies.RETURNS_FILE),
                        {"mpe_spread": {"expert": {"score": 1.0}}})
    monkeypatch.setattr(policies, "ASSETS_DIR", assets)
    return assets


def _contents(d):
    return {f: open(os.path.join(d, f), "rb").read() for f in sorted(os.listdir(d))}


def test_shipped_files_replaced(fake_assets, tmp_path):
    expert = os.path.join(fake_assets, "mpe_spread_expert.npz")
    returns = os.path.join(fake_assets, policies.RETURNS_FILE)
    assert policies.shipped_files_replaced("mpe_spread", fake_assets) == [expert, returns]
    # the same directory spelled differently is still the shipped one
    assert policies.shipped_files_replaced("mpe_spread", fake_assets + "/./") == [
        os.path.join(fake_assets + "/./", "mpe_spread_expert.npz"),
        os.path.join(fake_assets + "/./", policies.RETURNS_FILE)]
    # a task with nothing shipped replaces nothing; any other directory is never shipped
    assert policies.shipped_files_replaced("mpe_tag", fake_assets) == []
    assert policies.shipped_files_replaced("mpe_spread", str(tmp_path / "elsewhere")) == []


def test_train_behaviour_refuses_to_replace_a_shipped_policy_without_the_flag(fake_assets):
    assert train_behaviour.default_out("mpe_spread") == os.path.join("runs", "behaviour",
                                                                     "mpe_spread")
    with pytest.raises(SystemExit) as e:
        train_behaviour.check_out("mpe_spread", fake_assets, overwrite_shipped=False)
    msg = str(e.value.code)
    assert "\n" not in msg
    assert os.path.join(fake_assets, "mpe_spread_expert.npz") in msg
    assert "--overwrite_shipped" in msg
    train_behaviour.check_out("mpe_spread", fake_assets, overwrite_shipped=True)  # allowed
    train_behaviour.check_out("mpe_tag", fake_assets, overwrite_shipped=False)    # nothing shipped
    train_behaviour.check_out("mpe_spread", train_behaviour.default_out("mpe_spread"), False)


@pytest.mark.parametrize("extra", [[], ["--select_only"]], ids=["train", "select_only"])
def test_train_behaviour_cli_stops_before_writing(fake_assets, tmp_path, extra):
    """The launcher itself (as ``python -m``, with ASSETS_DIR patched to the stand-in) exits
    with one line naming the file and the flag, before training or reading snapshots."""
    before = _contents(fake_assets)
    code = ("import runpy, sys\n"
            "from dom2_jax.online import policies\n"
            f"policies.ASSETS_DIR = {fake_assets!r}\n"
            "sys.argv[0] = 'train_behaviour'\n"
            "runpy.run_module('experiments.train_behaviour', run_name='__main__')\n")
    args = ["--env=mpe_spread", "--steps=1", f"--out={fake_assets}"]
    if extra:
        args += extra + [f"--snapshot_dir={tmp_path / 'snapshots'}"]
    r = subprocess.run([sys.executable, "-c", code] + args, capture_output=True, text=True,
                       cwd=str(tmp_path), env=dict(os.environ, PYTHONPATH=ROOT), timeout=300)
    assert r.returncode == 1, r.stderr[-2000:]
    assert r.stderr.strip().splitlines() == [
        f"error: {os.path.join(fake_assets, 'mpe_spread_expert.npz')} is a shipped behaviour "
        "file; pass --overwrite_shipped to replace it (or choose another --out)"]
    assert _contents(fake_assets) == before
    assert not os.path.exists(tmp_path / "runs")


def test_benchmark_outputs_default_under_runs_for_quick_runs():
    runs = os.path.join(ROOT, "runs", "benchmarks")
    results = os.path.join(ROOT, "benchmarks", "results")
    assert outputs.default_out(quick=True) == runs
    assert outputs.default_out(quick=False) == results
    # --quick: never the committed results
    assert solver_steps.parse_args(["--quick"]).out == runs
    assert env_speed.parse_args(["--quick"]).out == runs
    assert throughput.output_dir(throughput.Options(quick=True)) == runs
    # full runs: benchmarks/results, as documented (contracts: solver_steps, throughput)
    assert solver_steps.parse_args([]).out == results
    assert env_speed.parse_args([]).out == results
    assert throughput.output_dir(throughput.Options()) == results
    # --out wins either way
    assert solver_steps.parse_args(["--quick", "--out=x"]).out == "x"
    assert env_speed.parse_args(["--quick", "--out=x"]).out == "x"
    assert throughput.output_dir(throughput.Options(quick=True, out="x")) == "x"
