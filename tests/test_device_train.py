"""experiments/device_train.sh (the prepared GPU-lease script) end to end at smoke sizes on CPU:
the dataset and training steps, the tarball it hands back, and the deadline that skips work."""
import json
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
    r = _run(tmp_path / "out", tmp_path / "data", EVAL_EPISODES_mpe_spread="3",
             EVAL_EPISODES_mpe_tag="5")  # a per-task count; another task's does not apply
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
    config = json.load(open(tmp_path / "out" / run / "config.json"))
    assert config["config"]["eval_episodes"] == 3, config

    # Past the deadline, the trainings are skipped with a message rather than started; an
    # existing dataset is reused, not regenerated.
    r = _run(tmp_path / "late", tmp_path / "data", DEADLINE="5")
    assert r.returncode == 0 and "train_mpe_spread_expert_bc skipped" in r.stdout, r.stdout
    assert "mpe_spread/expert-n2000 exists" in r.stdout


def test_detached_driver_spans_calls(tmp_path):
    """DETACH=1: the first call starts the driver in its own session and returns at once; the
    next attaches, waits for it and hands back its tarball; a third (driver gone) starts a new
    driver that skips the finished training and reuses the dataset."""
    state = tmp_path / "state"
    r = _run(tmp_path / "o1", tmp_path / "data", DETACH="1", WAIT="0", STATE_DIR=str(state))
    assert r.returncode == 0 and "started a detached driver" in r.stdout, r.stdout + r.stderr
    assert "still running" in r.stdout
    r = _run(tmp_path / "o2", tmp_path / "data", DETACH="1", WAIT="400", STATE_DIR=str(state))
    assert "attaching to the running driver" in r.stdout and "driver has ended" in r.stdout, (
        r.stdout)
    assert "train_mpe_spread_expert_bc exit 0" in (tmp_path / "o2" / "driver.log").read_text()
    with tarfile.open(tmp_path / "o2" / "device_train.tar.gz") as tar:
        assert "runs/mpe_spread/expert/bc/seed0-n2/results.json" in tar.getnames()
    assert os.path.isdir(state / "out" / "runs" / "mpe_spread" / "expert" / "bc" / "seed0-n2"
                         / "checkpoints")  # kept on the machine for a later resume
    r = _run(tmp_path / "o3", tmp_path / "data", DETACH="1", WAIT="400", STATE_DIR=str(state))
    assert "started a detached driver" in r.stdout and "driver has ended" in r.stdout
    log = (tmp_path / "o3" / "driver.log").read_text()
    assert "train_mpe_spread_expert_bc finished before" in log and "expert-n2000 exists" in log
