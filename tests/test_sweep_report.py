"""experiments.sweep (run list, naming, skip/resume, failures) and experiments.report (tables,
JSON, figures), plus the launcher's TensorBoard event files. One real smoke run (BC: the
cheapest compile); everything else uses the dry run or hand-written results."""
import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from absl import app

from dom2_jax.training.reporting import read_tensorboard_scalars
from experiments import report, sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _sweep(args, timeout=600):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "experiments.sweep"] + args,
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)


def test_run_list_and_naming():
    runs = sweep.make_runs(["dom2", "bc"], ["mpe_spread"], ["expert"], ["0", "1"], 1,
                           ["1.0", "0.5"], ["full", "no_q"])
    names = [r.relpath() for r in runs]
    assert len(names) == 2 * 2 * 2 + 2 * 2  # dom2: ablations x fractions x seeds; bc: no ablation
    assert names[:3] == ["mpe_spread/expert/dom2/seed0", "mpe_spread/expert/dom2/seed1",
                         "mpe_spread/expert/dom2-frac0.5/seed0"]
    assert "mpe_spread/expert/dom2-no_q-frac0.5/seed1" in names
    assert names[-1] == "mpe_spread/expert/bc-frac0.5/seed1"
    r = runs[names.index("mpe_spread/expert/dom2-no_q-frac0.5/seed1")]
    args = r.args("W", preset="smoke", extra=["--shift=speed"])
    assert args[:6] == ["--algo=dom2", "--env=mpe_spread", "--quality=expert", "--seed=1",
                        "--num_seeds=1", "--workdir=W"]
    assert "--config.agent.eta=0.0" in args and "--config.data_fraction=0.5" in args
    assert args[-1] == "--shift=speed" and "--preset=smoke" in args
    # vmapped seeds are part of the name; 'full' is plain dom2; every ablation maps to a field
    r = sweep.make_runs(["dom2"], ["mpe_tag"], ["medium"], ["3"], 4)[0]
    assert r.relpath() == "mpe_tag/medium/dom2/seed3-n4"
    from experiments.train import resolve_config
    for name, over in sweep.ABLATIONS.items():
        c, _ = resolve_config("dom2", "mpe_spread", "expert", "smoke", over)
        assert report.ablation_of("dom2", c.to_dict()) == name
    with pytest.raises(Exception, match="unknown ablations"):
        sweep.make_runs(["dom2"], ["mpe_spread"], ["expert"], ["0"], ablations=["nope"])
    with pytest.raises(app.UsageError, match="--seeds takes comma-separated int values, got 'a'"):
        sweep.make_runs(["dom2"], ["mpe_spread"], ["expert"], ["a", "b"])
    with pytest.raises(app.UsageError, match="--fractions takes comma-separated float"):
        sweep.make_runs(["dom2"], ["mpe_spread"], ["expert"], ["0"], fractions=["half"])


def test_dry_run_cli(tmp_path):
    r = _sweep(["--algos=dom2,bc", "--qualities=medium", "--seeds=0", "--ablations=full,no_bc",
                f"--root={tmp_path}", "--dry_run", "--extra=--config.num_updates=10"])
    assert r.returncode == 0, r.stderr
    lines = [l for l in r.stdout.splitlines() if l.startswith("[")]
    assert [l.split()[0] for l in lines] == ["[1/3]", "[2/3]", "[3/3]"]
    assert lines[1].split()[1:] == ["new", str(tmp_path / "mpe_spread/medium/dom2-no_bc/seed0")]
    assert "--config.agent.use_bc_loss=False --config.num_updates=10" in r.stdout
    assert not os.listdir(tmp_path)  # a dry run writes nothing


def test_real_sweep_tensorboard_skip_resume_failure_and_report(tmp_path,
                                                               spread_random_dataset_dir):
    data_root = tmp_path / "data"
    os.makedirs(data_root / "mpe_spread")
    # the config's dataset size (the fixture's 1000) names the directory the launcher looks for
    os.symlink(spread_random_dataset_dir, data_root / "mpe_spread" / "random-n1000")
    root = tmp_path / "sweep"
    base = ["--algos=bc", "--envs=mpe_spread", "--seeds=0", "--num_seeds=2", "--preset=smoke",
            f"--root={root}", f"--data_root={data_root}",
            f"--extra=--compilation_cache={tmp_path / 'cache'} --config.dataset_size=1000"]
    # 'expert' has no dataset (and no --generate_missing): that run fails, the sweep goes on.
    r = _sweep(base + ["--qualities=expert,random"])
    assert r.returncode == 1, r.stdout + r.stderr
    assert "1 run(s) failed" in r.stdout and "mpe_spread/expert/bc/seed0-n2" in r.stdout
    wd = root / "mpe_spread" / "random" / "bc" / "seed0-n2"
    status = {e["workdir"]: e["status"] for e in json.load(open(root / "sweep.json"))["runs"]}
    assert status == {str(root / "mpe_spread/expert/bc/seed0-n2"): "failed", str(wd): "done"}
    assert "does not exist" in (root / "mpe_spread/expert/bc/seed0-n2/sweep.log").read_text()

    # TensorBoard: per-seed eval scores and training metrics, equal to metrics.csv
    rows = list(csv.DictReader(open(wd / "metrics.csv")))
    tb = read_tensorboard_scalars(str(wd / "tb"))
    for i in range(2):
        assert tb[f"eval/score/seed{i}"] == [
            (int(float(r["step"])), pytest.approx(float(r[f"eval/seed{i}"]))) for r in rows]
    assert [s for s, _ in tb["train/actor_loss"]] == [2, 4]

    # Re-running skips the finished run and launches nothing; sweep.json keeps the first
    # sweep's other run (several sweeps may share a root).
    r = _sweep(base + ["--qualities=random"])
    assert r.returncode == 0 and "done, skipped" in r.stdout, r.stdout + r.stderr
    runs = json.load(open(root / "sweep.json"))["runs"]
    status = {e["workdir"]: e["status"] for e in runs}
    assert status == {str(root / "mpe_spread/expert/bc/seed0-n2"): "failed",
                      str(wd): "skipped (done)"}
    assert [e["sweep_command"].endswith("--qualities=expert,random") for e in runs] == [
        True, False]

    # An interrupted run (no results, last checkpoint lost) is resumed; TensorBoard then shows
    # each step once (the new event file purges what the old one logged after the checkpoint).
    os.remove(wd / "results.json")
    shutil.rmtree(wd / "checkpoints" / "2")
    r = _sweep(base + ["--qualities=random"])
    assert r.returncode == 0 and "resuming" in r.stdout, r.stdout + r.stderr
    assert "resumed from chunk 1" in (wd / "sweep.log").read_text()
    assert len(os.listdir(wd / "tb")) == 2
    tb = read_tensorboard_scalars(str(wd / "tb"))
    assert [s for s, _ in tb["eval/score/seed0"]] == [2, 4]

    # The report on these outputs.
    rep = report.make_report(str(root), str(tmp_path / "rep"), "score")
    (g,) = rep["groups"]
    res = json.load(open(wd / "results.json"))
    assert g["num_seeds"] == 2 and g["final_mean"] == pytest.approx(
        res["final_score_mean_over_seeds"])
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| task | quality | BC |" in md
    assert f"| mpe_spread | random | {g['final_mean']:.1f} ± {g['final_std']:.1f} (2) |" in md
    for png in ("bars_mpe_spread.png", "curves_mpe_spread_random.png"):
        assert (tmp_path / "rep" / png).stat().st_size > 1000, png


def _pids_running(pattern):
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode()
            state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if pattern in cmd and state != "Z":
            pids.append(int(pid))
    return pids


def test_sigterm_stops_the_training_and_marks_it_interrupted(tmp_path,
                                                            spread_random_dataset_dir):
    """`kill SWEEP_PID` (SIGTERM) used to end the sweep and orphan its training subprocess,
    and leave the run "running" in sweep.json."""
    import signal
    import time
    data_root = tmp_path / "data"
    os.makedirs(data_root / "mpe_spread")
    os.symlink(spread_random_dataset_dir, data_root / "mpe_spread" / "random-n1000")
    root = tmp_path / "sweep"
    p = subprocess.Popen(
        [sys.executable, "-m", "experiments.sweep", "--algos=bc", "--qualities=random",
         "--seeds=0", "--preset=smoke", f"--root={root}", f"--data_root={data_root}",
         "--extra=--config.num_updates=10000000 --config.eval_every=5000000 "
         "--config.dataset_size=1000"],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    wd = str(root / "mpe_spread/random/bc/seed0")
    deadline = time.time() + 120
    while not _pids_running("--workdir=" + wd) and time.time() < deadline:
        time.sleep(0.2)
    assert _pids_running("--workdir=" + wd), "the training subprocess did not start"
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=60)
    assert p.returncode != 0, out
    time.sleep(0.5)
    assert not _pids_running("--workdir=" + wd), "the training outlived its sweep"
    (e,) = json.load(open(root / "sweep.json"))["runs"]
    assert e["status"] == "interrupted"


def _fake_run(root, rel, algo, scores, refs=None, agent=None, fraction=1.0, augment=True,
              curve_steps=(50, 100)):
    d = root / rel
    os.makedirs(d)
    config = {"agent": dict(agent or {}), "data_fraction": fraction, "augment": augment,
              "num_updates": curve_steps[-1]}
    refs = refs or {"random": 10.0, "expert": 110.0}
    seeds = [{"seed_index": i, "final_score_mean": s, "final_score_std": 1.0,
              "best_eval_score": s + 1.0} for i, s in enumerate(scores)]
    json.dump({"algo": algo, "env": "mpe_spread", "quality": "expert", "num_seeds": len(scores),
               "config": config, "reference_returns": refs, "seeds": seeds},
              open(d / "results.json", "w"))
    with open(d / "metrics.csv", "w") as f:
        f.write("step," + ",".join(f"eval/seed{i}" for i in range(len(scores))) + "\n")
        for j, st in enumerate(curve_steps):
            f.write(f"{st}," + ",".join(str(s * (j + 1) / len(curve_steps)) for s in scores)
                    + "\n")


def test_report_on_hand_written_results(tmp_path):
    root = tmp_path / "runs"
    # DOM2: two runs (one with 2 vmapped seeds) pool to three seeds
    _fake_run(root, "mpe_spread/expert/dom2/seed0-n2", "dom2", [10.0, 20.0])
    _fake_run(root, "mpe_spread/expert/dom2/seed1", "dom2", [40.0])
    _fake_run(root, "mpe_spread/expert/bc/seed0", "bc", [5.0, 7.0])
    _fake_run(root, "mpe_spread/expert/dom2-no_q/seed0", "dom2", [3.0], agent={"eta": 0.0})
    _fake_run(root, "mpe_spread/expert/dom2-frac0.5/seed0", "dom2", [8.0], fraction=0.5)
    # an unfinished run and an unreadable one are listed, not aggregated
    os.makedirs(root / "mpe_spread/expert/bc/seed1")
    json.dump({"algo": "bc", "env": "mpe_spread", "quality": "expert", "num_seeds": 2,
               "config": {"num_updates": 100}},
              open(root / "mpe_spread/expert/bc/seed1/config.json", "w"))
    (root / "mpe_spread/expert/bc/seed1/metrics.csv").write_text(
        "step,eval/seed0,eval/seed1\n25,0.0,0.0\n50,1.0,2.0\n")
    os.makedirs(root / "broken")
    (root / "broken/results.json").write_text("{")

    rep = report.make_report(str(root), metric="score")
    g = {(x["algo"], x["ablation"], x["fraction"]): x for x in rep["groups"]}
    dom2 = np.array([10.0, 20.0, 40.0])
    assert g["dom2", "full", 1.0]["num_seeds"] == 3 and g["dom2", "full", 1.0]["num_runs"] == 2
    assert g["dom2", "full", 1.0]["final_mean"] == pytest.approx(dom2.mean())
    assert g["dom2", "full", 1.0]["final_std"] == pytest.approx(dom2.std())
    assert g["dom2", "full", 1.0]["best_mean"] == pytest.approx(dom2.mean() + 1)
    assert g["bc", None, 1.0]["final_std"] == pytest.approx(1.0)
    assert set(g) == {("dom2", "full", 1.0), ("dom2", "no_q", 1.0), ("dom2", "full", 0.5),
                      ("bc", None, 1.0)}
    md = (root / "report.md").read_text()
    assert "| task | quality | BC | DOM2 | protocol |" in md
    assert ("| mpe_spread | expert | 6.0 ± 1.0 (2) | **23.3 ± 12.5 (3)** | 100 updates, raw "
            "obs, ? eval episodes, data ? |") in md
    assert "| mpe_spread | expert | 1 | 6.0 ± 1.0 (2) | 23.3 ± 12.5 (3) |" in md  # Fig. 5 rows
    assert "Data fractions (Fig. 5)" in md and "DOM2 ablations (Fig. 6)" in md
    assert "| mpe_spread | expert | 0.5 | – | 8.0 ± 0.0 (1) |" in md
    assert "unfinished (50 of 100 updates; last evaluation 1.5 raw, mean of 2 seed(s))" in md
    assert "unreadable" in md
    assert {"bars_mpe_spread.png", "curves_mpe_spread_expert.png"} <= set(os.listdir(root))

    # normalised: 100 (s - 10) / (110 - 10) = s - 10 here
    rep = report.make_report(str(root), str(tmp_path / "norm"), "normalised")
    g = {(x["algo"], x["ablation"], x["fraction"]): x for x in rep["groups"]}
    assert g["dom2", "full", 1.0]["final_mean"] == pytest.approx(dom2.mean() - 10)
    assert g["dom2", "full", 1.0]["final_std"] == pytest.approx(dom2.std())
    assert json.load(open(tmp_path / "norm" / "report.json"))["metric"] == "normalised"


def test_report_marks_or_refuses_rows_that_are_not_like_for_like(tmp_path):
    """A row whose algorithms differ in budget or observation preprocessing names no best and
    says what differs; report.json carries each group's protocol; --strict refuses (and
    writes nothing)."""
    root = tmp_path / "runs"
    _fake_run(root, "mpe_spread/expert/dom2/seed0", "dom2", [30.0])
    _fake_run(root, "mpe_spread/expert/bc/seed0", "bc", [20.0], curve_steps=(50, 200))
    res = json.load(open(root / "mpe_spread/expert/bc/seed0/results.json"))
    res["config"]["normalize_obs"] = True
    json.dump(res, open(root / "mpe_spread/expert/bc/seed0/results.json", "w"))
    rep = report.make_report(str(root), metric="score")
    (row,) = rep["row_protocols"]
    assert not row["comparable"] and set(row["differences"]) == {"num_updates", "normalize_obs"}
    assert row["differences"]["num_updates"] == {"BC": [200], "DOM2": [100]}
    g = {x["algo"]: x for x in rep["groups"]}
    assert g["bc"]["protocol"]["num_updates"] == [200]
    assert g["dom2"]["protocol"]["normalize_obs"] == [False]
    md = (root / "report.md").read_text()
    assert ("| mpe_spread | expert | 20.0 ± 0.0 (1) | 30.0 ± 0.0 (1) | **⚠ not comparable**: "
            "num_updates: BC 200; DOM2 100 — normalize_obs: BC True; DOM2 False |") in md
    with pytest.raises(ValueError, match="--strict.*num_updates: BC 200; DOM2 100"):
        report.make_report(str(root), str(tmp_path / "strict"), "score", strict=True)
    assert not (tmp_path / "strict").exists()
    # equal protocols: the row is comparable and the best is bold
    _fake_run(tmp_path / "eq", "mpe_spread/expert/dom2/seed0", "dom2", [30.0])
    _fake_run(tmp_path / "eq", "mpe_spread/expert/bc/seed0", "bc", [20.0])
    rep = report.make_report(str(tmp_path / "eq"), metric="score", strict=True)
    assert rep["row_protocols"][0]["comparable"]
    assert rep["row_protocols"][0]["protocol"]["num_updates"] == 100


def test_report_next_to_the_paper_and_several_roots(tmp_path):
    """The 'Next to the paper' rows: pooled finished seeds against experiments.paper_tables,
    a shifted run's second evaluation against Table 2, an unfinished run's newest evaluation
    (flagged), and no rows for ablations; two roots make one report."""
    a, b = tmp_path / "a", tmp_path / "b"
    _fake_run(a, "mpe_spread/expert/dom2/seed0-n2", "dom2", [600.0, 620.0])
    _fake_run(a, "mpe_spread/expert/dom2-no_q/seed0", "dom2", [1.0], agent={"eta": 0.0})
    _fake_run(a, "mpe_spread/expert/bc/seed0", "bc", [500.0])
    d = b / "mpe_spread/expert/omar/seed0"  # trained with --shift=speed: two evaluations
    _fake_run(b, "mpe_spread/expert/omar/seed0", "omar", [560.0])
    res = json.load(open(d / "results.json"))
    res["shift"] = "speed"
    res["seeds"][0]["final_shift_score_mean"] = 400.0
    json.dump(res, open(d / "results.json", "w"))
    d = b / "mpe_spread/expert/macql/seed0"  # unfinished: 2 of 6 evaluations
    os.makedirs(d)
    json.dump({"algo": "macql", "env": "mpe_spread", "quality": "expert", "num_seeds": 1,
               "config": {"num_updates": 6000}}, open(d / "config.json", "w"))
    (d / "metrics.csv").write_text("step,eval/seed0\n1000,100.0\n2000,300.0\n")

    ev_dir = a / "mpe_spread/expert/dom2/seed0-n2/evaluations"  # experiments.evaluate output
    os.makedirs(ev_dir)
    for name, final, n, scores in (("shift-speed-u100-e10-k0.json", True, 10, [1.0, 2.0]),
                                   ("shift-speed-u100-e50-k0.json", True, 50, [430.0, 450.0]),
                                   ("shift-speed-u50-e500-k0.json", False, 500, [9.0, 9.0])):
        json.dump({"shift": "speed", "episodes": n, "final_parameters": final,
                   "seeds": [{"score_mean": x} for x in scores]}, open(ev_dir / name, "w"))
    (ev_dir / "notes.json").write_text("{")  # a stray file is skipped
    with pytest.raises(ValueError, match="--out is required"):
        report.make_report([str(a), str(b)])
    rep = report.make_report([str(a), str(b)], str(tmp_path / "rep"), "score")
    rows = {(r["algo"], r["shift"]): r for r in rep["paper_comparison"]}
    assert set(rows) == {("bc", None), ("macql", None), ("omar", None), ("omar", "speed"),
                         ("dom2", None), ("dom2", "speed")}
    # the final parameters' evaluation with the most episodes; not an older checkpoint's
    assert rows["dom2", "speed"]["mean"] == 440.0 and rows["dom2", "speed"]["paper_mean"] == 444.0
    dom2 = rows["dom2", None]  # the ablation's 1.0 is not pooled in
    assert (dom2["mean"], dom2["std"], dom2["num_seeds"]) == (610.0, 10.0, 2)
    assert (dom2["paper_mean"], dom2["paper_table"]) == (628.6, 1)
    assert dom2["diff"] == pytest.approx(610.0 - 628.6) and dom2["finished"]
    assert rows["omar", "speed"]["mean"] == 400.0 and rows["omar", "speed"]["paper_table"] == 2
    assert rows["omar", "speed"]["paper_mean"] == 410.6
    assert rows["bc", None]["paper_mean"] is None and rows["bc", None]["diff"] is None
    cql = rows["macql", None]
    assert not cql["finished"] and cql["mean"] == 300.0 and cql["updates"] == [2000]
    md = (tmp_path / "rep" / "report.md").read_text()
    assert ("| mpe_spread | – | expert | DOM2 | 610.0 ± 10.0 | 2 | 100 | final | "
            "628.6 ± 17.2 (T1) | -18.6 |") in md
    assert ("| mpe_spread | – | expert | MA-CQL | 300.0 ± 0.0 | 1 | 2k | **unfinished**: newest "
            "evaluation, at 2k of 6k | 478.9 ± 29.1 (T1) | -178.9 |") in md
    assert "| mpe_spread | speed | expert | OMAR | 400.0 ± 0.0 | 1 | 100 | final | " in md
    assert len(rep["roots"]) == 2 and len(rep["runs"]) == 5
    # the same rows as bars: a panel per (shift, quality); the paper's MA-SfBC, which we did
    # not run, is a paper-only bar; BC has no paper bar; the unfinished MA-CQL is flagged
    panels = report.paper_panels(rep["paper_comparison"])
    assert [(p["shift"], p["quality"]) for p in panels["mpe_spread"]] == [(None, "expert"),
                                                                          ("speed", "expert")]
    bars = {b["algo"]: b for b in panels["mpe_spread"][0]["bars"]}
    assert list(bars) == ["bc", "macql", "omar", "masfbc", "dom2"]
    assert bars["masfbc"] == {"algo": "masfbc", "ours": None, "paper": (553.0, 41.1),
                              "updates": None, "planned_updates": None}
    assert bars["bc"]["paper"] is None and bars["macql"]["ours"] == (300.0, 0.0, False)
    assert bars["dom2"]["ours"] == (610.0, 10.0, True)
    assert bars["dom2"]["paper"] == (628.6, 17.2)
    assert (bars["macql"]["updates"], bars["macql"]["planned_updates"]) == ([2000], [6000])
    assert (bars["dom2"]["updates"], bars["dom2"]["planned_updates"]) == ([100], [100])
    assert "paper_mpe_spread.png" in rep["figures"]
    assert (tmp_path / "rep" / "paper_mpe_spread.png").stat().st_size > 1000


def test_archive_runs_keeps_what_the_report_reads(tmp_path):
    """experiments.archive_runs copies each run's record without checkpoints/ and tb/; the
    report over the copy equals the report over the original (finished, unfinished, shifted
    evaluations); an --out inside --root is refused; the CLI prints the summary."""
    from experiments import archive_runs
    root, out = tmp_path / "runs", tmp_path / "kept"
    _fake_run(root, "mpe_spread/expert/bc/seed0-n2", "bc", [500.0, 520.0])
    d = root / "mpe_spread/expert/macql/seed0"  # unfinished, with checkpoints and tb
    os.makedirs(d / "checkpoints/5000")
    (d / "checkpoints/5000/params").write_bytes(b"\0" * 4096)
    os.makedirs(d / "tb")
    (d / "tb/events.out").write_bytes(b"\0" * 100)
    json.dump({"algo": "macql", "env": "mpe_spread", "quality": "expert", "num_seeds": 1,
               "config": {"num_updates": 6000}}, open(d / "config.json", "w"))
    (d / "metrics.csv").write_text("step,eval/seed0\n1000,100.0\n2000,300.0\n")
    os.makedirs(d / "diagnostics")
    (d / "diagnostics/actor-u2000-n16-k0.json").write_text('{"x": 1}')
    ev = root / "mpe_spread/expert/bc/seed0-n2/evaluations"
    os.makedirs(ev)
    json.dump({"shift": "speed", "episodes": 10, "final_parameters": True,
               "seeds": [{"score_mean": 450.0}, {"score_mean": 470.0}]},
              open(ev / "shift-speed-u100-e10-k0.json", "w"))

    summary = archive_runs.archive(str(root), str(out))
    assert [r["workdir"] for r in summary["runs"]] == ["mpe_spread/expert/bc/seed0-n2",
                                                       "mpe_spread/expert/macql/seed0"]
    kept = sorted(os.path.relpath(os.path.join(p, f), out)
                  for p, _, fs in os.walk(out) for f in fs)
    assert kept == ["mpe_spread/expert/bc/seed0-n2/evaluations/shift-speed-u100-e10-k0.json",
                    "mpe_spread/expert/bc/seed0-n2/metrics.csv",
                    "mpe_spread/expert/bc/seed0-n2/results.json",
                    "mpe_spread/expert/macql/seed0/config.json",
                    "mpe_spread/expert/macql/seed0/diagnostics/actor-u2000-n16-k0.json",
                    "mpe_spread/expert/macql/seed0/metrics.csv"]
    assert summary["bytes"] == sum(os.path.getsize(out / k) for k in kept)
    a = report.make_report(str(root), str(tmp_path / "ra"), "score")
    b = report.make_report(str(out), str(tmp_path / "rb"), "score")
    assert b["paper_comparison"] == a["paper_comparison"] and len(b["paper_comparison"]) == 3
    assert [r["status"] for r in b["runs"]] == [r["status"] for r in a["runs"]]
    assert "unfinished (2000 of 6000" in b["runs"][1]["status"]
    # a run that went on: re-archiving refreshes the copy
    (d / "metrics.csv").write_text("step,eval/seed0\n1000,100.0\n2000,300.0\n3000,350.0\n")
    archive_runs.archive(str(root), str(out))
    assert (out / "mpe_spread/expert/macql/seed0/metrics.csv").read_text().endswith("350.0\n")
    assert not [f for _, _, fs in os.walk(out) for f in fs if ".tmp-" in f]
    with pytest.raises(ValueError, match="lies inside --root"):
        archive_runs.archive(str(root), str(root / "kept"))
    with pytest.raises(ValueError, match="not a directory"):
        archive_runs.archive(str(tmp_path / "nope"), str(out))
    p = subprocess.run([sys.executable, "-m", "experiments.archive_runs", f"--root={root}",
                        f"--out={tmp_path / 'cli'}"], capture_output=True, text=True,
                       cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), timeout=120)
    assert p.returncode == 0, p.stderr
    assert "mpe_spread/expert/macql/seed0: 3 files (unfinished)" in p.stdout
    assert "2 runs" in p.stdout


def test_archive_carries_the_newest_checkpoint_and_restore_brings_runs_back(tmp_path):
    """--checkpoints=newest keeps one step per run (the newest complete one; orbax temporaries
    and damaged/ are not steps); --restore copies records and steps into a new tree and never
    touches a run that tree already holds."""
    from experiments import archive_runs
    root, out, new = tmp_path / "runs", tmp_path / "kept", tmp_path / "elsewhere"
    _fake_run(root, "mpe_spread/expert/bc/seed0", "bc", [500.0])
    d = root / "mpe_spread/expert/macql/seed0"  # unfinished
    for step in ("1", "2", "3.orbax-checkpoint-tmp-9", "damaged/7"):
        os.makedirs(d / "checkpoints" / step)
        (d / "checkpoints" / step / "params").write_bytes(step.encode() * 10)
    json.dump({"algo": "macql", "env": "mpe_spread", "quality": "expert", "num_seeds": 1,
               "config": {"num_updates": 6000}}, open(d / "config.json", "w"))
    (d / "metrics.csv").write_text("step,eval/seed0\n1000,100.0\n2000,300.0\n")
    os.makedirs(root / "mpe_spread/expert/bc/seed0/checkpoints/5")
    (root / "mpe_spread/expert/bc/seed0/checkpoints/5/params").write_bytes(b"final")

    summary = archive_runs.archive(str(root), str(out), checkpoints="newest")
    assert [r["steps"] for r in summary["runs"]] == [[5], [2]]
    assert archive_runs.checkpoint_steps(str(out / "mpe_spread/expert/macql/seed0")) == [2]
    assert sorted(os.listdir(out / "mpe_spread/expert/macql/seed0/checkpoints")) == ["2"]
    # the run went on: the archive now holds step 3 only
    os.makedirs(d / "checkpoints/3")
    (d / "checkpoints/3/params").write_bytes(b"three")
    archive_runs.archive(str(root), str(out), checkpoints="newest")
    assert sorted(os.listdir(out / "mpe_spread/expert/macql/seed0/checkpoints")) == ["3"]
    # records only (the default) leaves archived steps alone
    assert archive_runs.archive(str(root), str(out))["runs"][1]["steps"] == [3]

    # "unfinished": the finished run's archived step goes, the unfinished one's stays
    summary = archive_runs.archive(str(root), str(out), checkpoints="unfinished")
    assert [r["steps"] for r in summary["runs"]] == [[], [3]]
    archive_runs.archive(str(root), str(out), checkpoints="newest")
    # a new machine: one run already there (left as it is), the other restored
    os.makedirs(new / "mpe_spread/expert/bc/seed0")
    (new / "mpe_spread/expert/bc/seed0/config.json").write_text("{}")
    back = archive_runs.restore(str(out), str(new))
    assert [(r["workdir"], r["skipped"]) for r in back["runs"]] == [
        ("mpe_spread/expert/bc/seed0", True), ("mpe_spread/expert/macql/seed0", False)]
    assert (new / "mpe_spread/expert/bc/seed0/config.json").read_text() == "{}"
    m = new / "mpe_spread/expert/macql/seed0"
    assert (m / "checkpoints/3/params").read_bytes() == b"three"
    assert (m / "metrics.csv").read_text() == (d / "metrics.csv").read_text()
    assert not [f for _, _, fs in os.walk(new) for f in fs if ".tmp-" in f]
    with pytest.raises(ValueError, match="is not a directory"):
        archive_runs.restore(str(tmp_path / "nope"), str(new))
    p = subprocess.run([sys.executable, "-m", "experiments.archive_runs", "--restore",
                        f"--root={tmp_path / 'third'}", f"--out={out}"], capture_output=True,
                       text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), timeout=120)
    assert p.returncode == 0, p.stderr
    assert "mpe_spread/expert/macql/seed0: 2 files (unfinished, checkpoint step 3)" in p.stdout


def test_plot_runs_draws_each_metric_of_each_run(tmp_path):
    from experiments import plot_runs
    for name, td in (("a", 1.0), ("b", 100.0)):
        d = tmp_path / name
        os.makedirs(d)
        (d / "metrics.csv").write_text("step,critic_td,eval/seed0,eval/seed1\n"
                                       f"500,{td},10.0,20.0\n1000,{2 * td},30.0,nan\n")
    assert plot_runs.series(
        [{"step": 500.0, "eval/seed0": 10.0, "eval/seed1": 20.0}], "eval") == ([500], [15.0])
    out = plot_runs.plot_runs([str(tmp_path / "a"), str(tmp_path / "b")],
                              ["eval", "critic_td", "missing"], str(tmp_path / "p" / "x.png"),
                              log=["critic_td"])
    assert os.path.getsize(out) > 5000 and not os.path.exists(out + ".tmp.png")
    with pytest.raises(FileNotFoundError, match="metrics.csv does not exist"):
        plot_runs.plot_runs([str(tmp_path / "nope")], ["eval"], str(tmp_path / "y.png"))


def test_report_gives_a_verdict_per_claim(tmp_path):
    """report.md/json state each testable claim's verdict: DOM2 vs MA-SfBC within one std
    (issue #26), DOM2 best (Tables 1/3), 5% data (Fig. 5), ablations (Fig. 6); fewer than
    three seeds, or a missing group, is "not yet"; different budgets are "not comparable"."""
    root = tmp_path / "runs"
    _fake_run(root, "mpe_spread/expert/dom2/seed0-n3", "dom2", [10.0, 12.0, 14.0])
    _fake_run(root, "mpe_spread/expert/masfbc/seed0-n3", "masfbc", [11.0, 13.0, 15.0])
    _fake_run(root, "mpe_spread/expert/bc/seed0-n3", "bc", [20.0, 21.0, 22.0])
    _fake_run(root, "mpe_spread/expert/dom2-no_q/seed0-n3", "dom2", [1.0, 2.0, 3.0],
              agent={"eta": 0.0})
    _fake_run(root, "mpe_spread/expert/dom2-frac0.05/seed0", "dom2", [9.0], fraction=0.05)
    rep = report.make_report(str(root), metric="score")
    by = {(c["claim"], c["scope"]): c for c in rep["claims"]}
    # DOM2 12 +- 1.63 vs MA-SfBC 13 +- 1.63: 1 below, inside one std
    assert by["dom2_vs_sfbc", "standard env"]["verdict"] == "holds (within 1 std)"
    best = by["dom2_best", "standard env"]
    assert best["verdict"] == "does not hold" and "best other (BC)" in best["evidence"]
    assert by["ablations", "DOM2 vs DOM2 no_q"]["verdict"] == "holds"
    eff = by["data_efficiency", "DOM2 at 0.05 of the data vs BC at all of it"]
    assert eff["verdict"] == "not yet" and "fewer than 3 seeds" in eff["evidence"]
    md = (root / "report.md").read_text()
    assert "## The paper's claims at this scale" in md
    assert "| DOM2 not below MA-SfBC by more than 1 std (issue #26) | mpe_spread | expert |" in md
    # a different budget: no verdict
    _fake_run(root, "mpe_spread/expert/matd3bc/seed0-n3", "matd3bc", [30.0, 30.0, 30.0],
              curve_steps=(50, 200))
    rep = report.make_report(str(root), metric="score")
    best = {(c["claim"], c["scope"]): c for c in rep["claims"]}["dom2_best", "standard env"]
    assert best["verdict"] == "not comparable" and "num_updates" in best["evidence"]


def test_iqm_and_bootstrap_confidence_intervals_by_hand():
    """IQM = rliable's aggregate_iqm (scipy.stats.trim_mean(x, 0.25): floor(n/4) dropped at
    each end); percentile bootstrap CIs over seeds, resampled with replacement."""
    iqm, ci = report.iqm, report.bootstrap_ci
    assert iqm([100.0, 1.0, 8.0, 2.0, 4.0]) == pytest.approx(14 / 3)  # not 23 (mean), 4 (median)
    assert iqm([1.0, 2.0, 3.0, 100.0]) == pytest.approx(2.5)           # n=4: one off each end
    assert iqm([1.0, 2.0, 100.0]) == pytest.approx(103 / 3)            # n=3: nothing dropped
    assert iqm([1, 2, 3, 4, 5, 6, 7, 100]) == pytest.approx(4.5)       # n=8: two off each end
    assert iqm([7.0]) == 7.0 and iqm([]) is None and iqm([1.0, None]) is None
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(1)
    for n in range(1, 14):
        x = rng.normal(size=n) * 10
        assert iqm(list(x)) == pytest.approx(stats.trim_mean(x, 0.25)), n

    # two seeds: a resample is (0,0), (0,10), (10,0) or (10,10), so with replacement the
    # interval is [0, 10]; resampling without replacement would give [5, 5]
    assert ci([0.0, 10.0]) == {"mean": [0.0, 10.0], "iqm": [0.0, 10.0]}
    # three seeds: the all-lowest resample has probability 1/27 > 2.5%: [lowest, highest]
    assert ci([510.0, 500.0, 520.0]) == {"mean": [500.0, 520.0], "iqm": [500.0, 520.0]}
    assert ci([7.0]) == {"mean": None, "iqm": None} and ci([1.0, None])["mean"] is None

    x = [1.0, 2.0, 4.0, 8.0, 100.0]
    c = ci(x)
    assert c == ci(x)  # fixed RNG: reproducible
    # >= 3 copies of 100 in a resample: P = 0.058 > 2.5%, so the upper bounds lie there:
    # mean >= (300 + 1 + 1) / 5, IQM (middle three) >= (1 + 100 + 100) / 3
    assert 302 / 5 <= c["mean"][1] < 100 and 201 / 3 <= c["iqm"][1] < 100
    # no 100 in 33% of resamples: the lower bounds are means of the small values
    assert 1.0 < c["mean"][0] < 4.0 and 1.0 <= c["iqm"][0] < 4.0
    assert c["mean"][0] < np.mean(x) < c["mean"][1] and c["iqm"][0] < 14 / 3 < c["iqm"][1]
    # against the exact bootstrap distribution (all 5^5 resamples): each bound cuts off
    # 2.5% on its side, up to the noise of 2000 resamples
    idx = np.stack(np.meshgrid(*[range(5)] * 5, indexing="ij"), -1).reshape(-1, 5)
    exact = np.sort(np.asarray(x)[idx], axis=1)
    for name, dist in (("mean", exact.mean(1)), ("iqm", exact[:, 1:4].mean(1))):
        lo, hi = c[name]
        assert np.mean(dist < lo) <= 0.035 and np.mean(dist <= lo) >= 0.015, name
        assert np.mean(dist > hi) <= 0.035 and np.mean(dist >= hi) >= 0.015, name


def test_report_shows_iqm_and_confidence_intervals(tmp_path):
    root = tmp_path / "runs"
    _fake_run(root, "mpe_spread/expert/dom2/seed0-n5", "dom2", [100.0, 1.0, 8.0, 2.0, 4.0])
    _fake_run(root, "mpe_spread/expert/bc/seed0", "bc", [7.0])
    rep = report.make_report(str(root), metric="score")
    g = {x["algo"]: x for x in json.load(open(root / "report.json"))["groups"]}
    c = report.bootstrap_ci([100.0, 1.0, 8.0, 2.0, 4.0])
    assert g["dom2"]["final_iqm"] == pytest.approx(14 / 3)
    assert g["dom2"]["final_mean_ci"] == c["mean"] and g["dom2"]["final_iqm_ci"] == c["iqm"]
    assert g["bc"]["final_iqm"] == 7.0
    assert g["bc"]["final_mean_ci"] is None and g["bc"]["final_iqm_ci"] is None
    assert rep["groups"][0]["final_iqm"] == 7.0
    md = (root / "report.md").read_text()
    assert "| mpe_spread | expert | 7.0 ± 0.0 (1) | **23.0 ± 38.6 (5)** |" in md  # unchanged
    assert "## Final performance: interquartile mean and 95% bootstrap confidence" in md
    (a, b), (m0, m1) = c["iqm"], c["mean"]
    assert (f"| mpe_spread | expert | 7.0, CI n/a (1 seed) | 4.7 [{a:.1f}, {b:.1f}]; mean "
            f"[{m0:.1f}, {m1:.1f}] (5) |") in md
    # normalised without reference returns: n/a, as the mean
    res = json.load(open(root / "mpe_spread/expert/bc/seed0/results.json"))
    res["reference_returns"] = {}
    json.dump(res, open(root / "mpe_spread/expert/bc/seed0/results.json", "w"))
    rep = report.make_report(str(root), str(tmp_path / "norm"), "normalised")
    bc = {x["algo"]: x for x in rep["groups"]}["bc"]
    assert bc["final_iqm"] is None and bc["final_mean_ci"] is None
    md = (tmp_path / "norm" / "report.md").read_text()
    assert "| mpe_spread | expert | n/a (1 seeds) | -5.3 [" in md  # DOM2's IQM: 14/3 - 10


def _paper_row(algo, mean, finished=True, updates=2000, planned=2000, shift=None):
    from experiments import paper_tables
    paper = paper_tables.paper_score("mpe_spread", "expert", algo, shift)
    return {"env": "mpe_spread", "shift": shift, "quality": "expert", "algo": algo,
            "mean": mean, "std": 5.0, "num_seeds": 3, "finished": finished,
            "updates": [updates], "planned_updates": [planned],
            "paper_mean": paper[0] if paper else None, "paper_std": paper[1] if paper else None}


def _layout_ok(fig, n_axes):
    """The legend lies inside the figure and clear of the title and of every panel."""
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    (leg,) = fig.legends
    box = leg.get_window_extent(r)
    assert fig.bbox.x0 <= box.x0 and box.x1 <= fig.bbox.x1
    assert fig.bbox.y0 <= box.y0 and box.y1 <= fig.bbox.y1
    assert not box.overlaps(fig.get_suptitle() and fig._suptitle.get_window_extent(r))
    for ax in fig.axes[:n_axes]:
        assert not box.overlaps(ax.get_tightbbox(r))
    return [t.get_text() for t in leg.get_texts()]


def test_figures_legend_only_what_is_drawn_and_label_each_budget():
    """paper_<env>.png used to print its title over the legend and always list 'unfinished';
    now the legend sits below the panels with only what is drawn, each of our bars is
    labelled with its updates (2k/6k: unfinished) and a panel with unequal budgets says so.
    bars_<env>.png: legend outside the axes, budgets on the bars."""
    plt = report._plt()
    rows = [_paper_row("bc", 500.0), _paper_row("macql", 300.0, False, 2000, 6000),
            _paper_row("dom2", 600.0, updates=30000, planned=30000),
            _paper_row("dom2", 450.0, shift="speed")]
    panels = report.paper_panels(rows)["mpe_spread"]
    fig = report.paper_figure("mpe_spread", panels)
    assert _layout_ok(fig, 2) == ["ours (final)", "ours (unfinished: newest eval)",
                                  "paper (Tables 1-4)"]
    std, shifted = fig.axes[:2]
    assert [t.get_text() for t in std.texts] == ["2k", "2k/6k", "30k"]  # BC, MA-CQL, DOM2
    assert "budgets differ" in std.get_title() and "budgets differ" not in shifted.get_title()
    plt.close(fig)
    fig = report.paper_figure("mpe_spread", report.paper_panels(
        [_paper_row("bc", 500.0), _paper_row("dom2", 600.0)])["mpe_spread"])
    assert _layout_ok(fig, 1) == ["ours (final)", "paper (Tables 1-4)"]
    assert [t.get_text() for t in fig.axes[0].texts] == ["2k", "2k"]
    assert "budgets differ" not in fig.axes[0].get_title()
    plt.close(fig)

    def group(algo, q, mean, updates):
        return {"algo": algo, "quality": q, "final_mean": mean, "final_std": 2.0,
                "protocol": {"num_updates": updates}}
    fig = report.bar_figure("mpe_spread", [
        group("bc", "expert", 500.0, [2000]), group("dom2", "expert", 600.0, [30000]),
        group("bc", "medium", -20.0, [2000]), group("dom2", "medium", 300.0, [2000, 30000])],
        "score")
    assert _layout_ok(fig, 1) == ["BC", "DOM2"]
    assert sorted(t.get_text() for t in fig.axes[0].texts) == ["2k", "2k", "2k, 30k", "30k"]
    assert "budgets differ in: medium, expert" in fig.get_suptitle()
    plt.close(fig)


def test_report_cli_names_an_unwritable_out(tmp_path):
    import subprocess
    import sys
    root = tmp_path / "runs"
    _fake_run(root, "mpe_spread/expert/bc/seed0", "bc", [5.0])
    r = subprocess.run([sys.executable, "-m", "experiments.report", f"--root={root}",
                        "--out=/proc/no_such_dir/report"], capture_output=True, text=True,
                       timeout=120, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "cannot write the report to --out=/proc/no_such_dir/report" in r.stderr


def test_report_lists_acting_variants_apart_from_the_tables(tmp_path):
    """evaluate --act_candidates files: a section pairing each run's K-candidate evaluation
    with its one-sample re-evaluation of the same key (else the run's own final score); they
    never enter the main or shifted tables."""
    root = tmp_path / "runs"
    _fake_run(root, "mpe_spread/expert/dom2/seed0", "dom2", [100.0])
    _fake_run(root, "mpe_spread/expert/dom2/seed1", "dom2", [110.0])

    def ev(run, k, score, episodes=100, shift=None):
        d = root / "mpe_spread/expert/dom2" / run / "evaluations"
        os.makedirs(d, exist_ok=True)
        json.dump({"shift": shift, "episodes": episodes, "final_parameters": True,
                   "eval_seed": 0, "act_overrides": {"act_candidates": k},
                   "seeds": [{"score_mean": score}]},
                  open(d / f"standard-u100-e{episodes}-k0-c{k}{shift or ''}.json", "w"))
    ev("seed0", 1, 90.0)
    ev("seed0", 32, 120.0)
    ev("seed1", 32, 130.0)          # no one-sample re-evaluation: the run's own final score
    ev("seed1", 32, 500.0, shift="speed")  # shifted: not an acting variant, not a shift row
    rep = report.make_report(str(root), str(tmp_path / "out"), "score")
    (row,) = rep["acting_variants"]
    assert row["acting"] == "act_candidates=32" and row["seeds"] == 2
    assert row["as_trained"] == [90.0, 110.0] and row["acting_otherwise"] == [120.0, 130.0]
    assert row["paired_difference_mean_std"][0] == pytest.approx(25.0)
    assert sorted(set(row["baselines"])) == ["as trained, same key", "own final evaluation"]
    g = [g for g in rep["groups"] if g["algo"] == "dom2"][0]
    assert sorted(g["final"]) == [100.0, 110.0]
    assert all(not r.get("shift") for r in rep["paper_comparison"])
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## Acting variants" in md and "| act_candidates=32 | 2 |" in md


def test_report_pairs_masfbcs_one_sample_evaluation_with_its_own_acting(tmp_path):
    """MA-SfBC acts with 32 samples as trained: its act_candidates=1 re-evaluation is the
    variant, paired with the re-evaluation without overrides (same key)."""
    root = tmp_path / "runs"
    _fake_run(root, "mpe_spread/expert/masfbc/seed0", "masfbc", [100.0])
    d = root / "mpe_spread/expert/masfbc/seed0/evaluations"
    os.makedirs(d)
    for name, acting, score in (("standard-u100-e100-k0.json", {}, 104.0),
                                ("standard-u100-e100-k0-c1.json", {"act_candidates": 1}, 80.0)):
        json.dump({"shift": None, "episodes": 100, "final_parameters": True, "eval_seed": 0,
                   "act_overrides": acting, "seeds": [{"score_mean": score}]},
                  open(d / name, "w"))
    rep = report.make_report(str(root), str(tmp_path / "out"), "score")
    (row,) = rep["acting_variants"]
    assert (row["algo"], row["acting"]) == ("masfbc", "act_candidates=1")
    assert row["as_trained"] == [104.0] and row["acting_otherwise"] == [80.0]
    assert row["baselines"] == ["as trained, same key"]
