r"""Keep the record of a tree of runs without their checkpoints (small enough to commit).

  python -m experiments.archive_runs --root=runs/table_default --out=experiments/results/runs/table_default

For every run workdir under ROOT (a directory holding config.json or results.json, the same
rule as ``experiments.report``), copies what the report and a reader need:

  config.json  results.json  metrics.csv  learning_curve.png  sweep.log
  evaluations/*.json  (experiments.evaluate)   diagnostics/*.json  (experiments.actor_stats)

to the same relative path under OUT, each file written to a temporary name and renamed, so a
crash leaves the previous copy or the new one, never half a file. checkpoints/ and tb/ are
left out (megabytes per run). ``experiments.report --root=OUT`` then gives the same tables as
over ROOT, finished and unfinished runs alike; an unfinished run's record is its newest
evaluation, which stays readable after ROOT is gone (a new checkout has no runs/).

Re-running refreshes the copies (a run that went on since shows its newer evaluations).
Needs no JAX.

Carrying runs across machines (a session's machine may come without the run tree):

  python -m experiments.archive_runs --root=$HOME/dom2_runs/cpu_scale \
      --out=experiments/results/runs/cpu_scale --checkpoints=unfinished  # end of a session
  python -m experiments.archive_runs --restore --root=$HOME/dom2_runs/cpu_scale \
      --out=experiments/results/runs/cpu_scale                          # start of the next

``--checkpoints=unfinished`` also copies the newest complete checkpoint of each unfinished run
(one orbax step directory; older archived steps of that run are removed, and a run that has
finished since loses its archived step), so the run resumes elsewhere; ``newest`` does so for
every run, so a finished one can still be evaluated elsewhere (experiments.evaluate). ``--restore`` copies the
archive back into ROOT for every run ROOT does not hold yet (never over an existing run); the
launcher then resumes from the restored step, and refuses if the dataset at the recorded path
is not the one the run trained on (its sha256).
"""
from __future__ import annotations

import os
import shutil
from typing import Dict, List

from absl import app, flags

FLAGS = flags.FLAGS

RUN_FILES = ("config.json", "results.json", "metrics.csv", "learning_curve.png", "sweep.log")
RECORD_DIRS = ("evaluations", "diagnostics")  # their *.json files
SKIPPED_DIRS = ("checkpoints", "tb")


CHECKPOINTS = ("none", "unfinished", "newest")


def _define_flags():
    flags.DEFINE_string("root", None, "Directory tree holding run workdirs.")
    flags.DEFINE_string("out", None, "Where the records go (same relative paths).")
    flags.DEFINE_enum("checkpoints", "none", list(CHECKPOINTS),
                      "none: records only; unfinished: also the newest complete checkpoint of "
                      "each unfinished run (to resume it on another machine, ~6-9 MB for the "
                      "cpu preset); newest: of every run (finished ones can then still be "
                      "evaluated elsewhere).")
    flags.DEFINE_bool("restore", False, "Copy the archive at --out back into --root, for the "
                      "runs --root does not hold yet (records and archived checkpoints).")


def _inside(path: str, parent: str) -> bool:
    path, parent = os.path.realpath(path), os.path.realpath(parent)
    return path == parent or path.startswith(parent + os.sep)


def _copy_atomic(src: str, dst: str) -> int:
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    tmp = f"{dst}.tmp-{os.getpid()}"
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return os.path.getsize(dst)


def run_files(workdir: str) -> List[str]:
    """The paths (relative to ``workdir``) of a run's record, in a fixed order."""
    files = [f for f in RUN_FILES if os.path.isfile(os.path.join(workdir, f))]
    for sub in RECORD_DIRS:
        d = os.path.join(workdir, sub)
        if os.path.isdir(d):
            files += [os.path.join(sub, f) for f in sorted(os.listdir(d))
                      if f.endswith(".json") and os.path.isfile(os.path.join(d, f))]
    return files


def checkpoint_steps(workdir: str) -> List[int]:
    """The complete orbax steps of ``workdir/checkpoints`` (numeric directories), ascending;
    orbax's temporaries and ``damaged/`` are not steps."""
    d = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(d):
        return []
    return sorted(int(x) for x in os.listdir(d)
                  if x.isdigit() and os.path.isdir(os.path.join(d, x)))


def _copy_tree_atomic(src: str, dst: str) -> int:
    """Copies directory ``src`` to ``dst`` (absent) via a temporary name; returns bytes."""
    tmp = f"{dst}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        shutil.copytree(src, tmp)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        os.replace(tmp, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return sum(os.path.getsize(os.path.join(p, f)) for p, _, fs in os.walk(dst) for f in fs)


def _archive_newest_checkpoint(src_run: str, dst_run: str) -> int:
    steps = checkpoint_steps(src_run)
    if not steps:
        return 0
    newest = steps[-1]
    dst = os.path.join(dst_run, "checkpoints", str(newest))
    nbytes = 0
    if not os.path.isdir(dst):
        nbytes = _copy_tree_atomic(os.path.join(src_run, "checkpoints", str(newest)), dst)
    for old in checkpoint_steps(dst_run):  # one step per run in the archive
        if old != newest:
            shutil.rmtree(os.path.join(dst_run, "checkpoints", str(old)))
    return nbytes


def run_workdirs(root: str) -> List[str]:
    """Run workdirs under ``root`` (holding config.json or results.json), relative, sorted."""
    found = []
    for d, dirs, files in os.walk(root):
        dirs[:] = sorted(x for x in dirs if x not in SKIPPED_DIRS + RECORD_DIRS)
        if "results.json" in files or "config.json" in files:
            found.append(os.path.relpath(d, root))
    return found


def restore(archive_dir: str, root: str) -> Dict:
    """Copies each archived run (records and checkpoints) into ``root`` unless ``root``
    already holds that run (its config.json or results.json); returns what it copied."""
    if not os.path.isdir(archive_dir):
        raise ValueError(f"--out {archive_dir!r} (the archive) is not a directory")
    runs, nbytes = [], 0
    for rel in run_workdirs(archive_dir):
        src, dst = os.path.join(archive_dir, rel), os.path.join(root, rel)
        if any(os.path.exists(os.path.join(dst, f)) for f in ("config.json", "results.json")):
            runs.append({"workdir": rel, "files": [], "steps": [], "skipped": True})
            continue
        copied = run_files(src)
        for f in copied:
            nbytes += _copy_atomic(os.path.join(src, f), os.path.join(dst, f))
        steps = checkpoint_steps(src)
        for step in steps:
            target = os.path.join(dst, "checkpoints", str(step))
            if not os.path.isdir(target):
                nbytes += _copy_tree_atomic(os.path.join(src, "checkpoints", str(step)), target)
        runs.append({"workdir": rel, "files": copied, "steps": steps, "skipped": False,
                     "finished": "results.json" in copied})
    return {"root": root, "out": archive_dir, "runs": runs, "bytes": nbytes}


def archive(root: str, out: str, checkpoints: str = "none") -> Dict:
    """Copies every run record under ``root`` to ``out`` (with ``checkpoints="newest"`` also
    each run's newest checkpoint); returns what it copied."""
    if checkpoints not in CHECKPOINTS:
        raise ValueError(f"checkpoints must be one of {CHECKPOINTS}, got {checkpoints!r}")
    if not os.path.isdir(root):
        raise ValueError(f"--root {root!r} is not a directory")
    if _inside(out, root):
        raise ValueError(f"--out {out!r} lies inside --root {root!r}: the archive would be "
                         "walked as runs of the tree it copies")
    if _inside(root, out):
        raise ValueError(f"--root {root!r} lies inside --out {out!r}")
    runs, nbytes = [], 0
    for d, dirs, files in os.walk(root):
        dirs[:] = sorted(x for x in dirs if x not in SKIPPED_DIRS + RECORD_DIRS)
        if "results.json" not in files and "config.json" not in files:
            continue
        rel = os.path.relpath(d, root)
        copied = run_files(d)
        for f in copied:
            nbytes += _copy_atomic(os.path.join(d, f), os.path.join(out, rel, f))
        finished = "results.json" in files
        if checkpoints == "newest" or (checkpoints == "unfinished" and not finished):
            nbytes += _archive_newest_checkpoint(d, os.path.join(out, rel))
        elif checkpoints == "unfinished":  # finished since: its archived step is not needed
            shutil.rmtree(os.path.join(out, rel, "checkpoints"), ignore_errors=True)
        runs.append({"workdir": rel, "files": copied, "finished": finished,
                     "steps": checkpoint_steps(os.path.join(out, rel))})
    return {"root": root, "out": out, "runs": runs, "bytes": nbytes}


def main(argv):
    del argv
    if not FLAGS.root or not FLAGS.out:
        raise app.UsageError("--root and --out are required")
    try:
        summary = (restore(FLAGS.out, FLAGS.root) if FLAGS.restore
                   else archive(FLAGS.root, FLAGS.out, FLAGS.checkpoints))
    except ValueError as e:
        raise app.UsageError(str(e))
    for r in summary["runs"]:
        if r.get("skipped"):
            print(f"{r['workdir']}: already in {FLAGS.root}, left as it is")
            continue
        state = "finished" if r["finished"] else "unfinished"
        ckpt = f", checkpoint step {r['steps'][-1]}" if r["steps"] else ""
        print(f"{r['workdir']}: {len(r['files'])} files ({state}{ckpt})")
    where = f"{summary['out']} -> {summary['root']}" if FLAGS.restore else f"-> {summary['out']}"
    print(f"{len(summary['runs'])} runs, {summary['bytes'] / 1e3:.1f} kB {where}")
    if not summary["runs"]:
        print(f"no run workdirs (config.json or results.json) under {FLAGS.root}")


if __name__ == "__main__":
    _define_flags()
    app.run(main)
