"""experiments/device_train.sh (the prepared GPU-lease script) end to end at smoke sizes on CPU:
the dataset and training steps, the tarball it hands back, and the deadline that skips work."""
import os
import subprocess
import sys
import tarfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "experiments", "device_train.sh")


def _run(out, data_root, **env):
    e = dict(os.environ, PYTHONPATH=ROOT, PYTHON=sys.executable, SMOKE="0", ALGOS="bc",
             QUALITIES="expert", PRESET="smoke", UPDATES="4", EVAL_EVERY="2", EVAL_EPISODES="2",
             DATASET_SIZE="2000", DATA_ROOT=str(data_root), **env)
    return subprocess.run(["bash", SCRIPT, str(out)], capture_output=True, text=True, cwd=ROOT,
                          env=e, timeout=600)


def test_device_train_runs_generates_and_packs(tmp_path):
    r = _run(tmp_path / "out", tmp_path / "data")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "data_mpe_spread_expert exit 0" in r.stdout
    assert "train_mpe_spread_expert_bc exit 0" in r.stdout
    assert os.path.exists(tmp_path / "data" / "mpe_spread" / "expert-n2000" / "obs.npy")
    log = (tmp_path / "out" / "logs" / "train_mpe_spread_expert_bc.log").read_text()
    assert "update 4/4: eval" in log  # one line per evaluation without a progress bar
    with tarfile.open(tmp_path / "out" / "device_train.tar.gz") as tar:
        names = tar.getnames()
    run = "runs/mpe_spread/expert/bc/seed0-n2/"
    assert {run + "metrics.csv", run + "results.json", run + "config.json"} <= set(names)
    assert not any("checkpoints" in n for n in names)  # too large to hand back from a lease

    # Past the deadline, the trainings are skipped with a message rather than started; an
    # existing dataset is reused, not regenerated.
    r = _run(tmp_path / "late", tmp_path / "data", DEADLINE="5")
    assert r.returncode == 0 and "train_mpe_spread_expert_bc skipped" in r.stdout, r.stdout
    assert "mpe_spread/expert-n2000 exists" in r.stdout
