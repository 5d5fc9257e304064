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


def _define_flags():
    flags.DEFINE_string("root", None, "Directory tree holding run workdirs.")
    flags.DEFINE_string("out", None, "Where the records go (same relative paths).")


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


def archive(root: str, out: str) -> Dict:
    """Copies every run record under ``root`` to ``out``; returns what it copied."""
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
        runs.append({"workdir": rel, "files": copied,
                     "finished": "results.json" in files})
    return {"root": root, "out": out, "runs": runs, "bytes": nbytes}


def main(argv):
    del argv
    if not FLAGS.root or not FLAGS.out:
        raise app.UsageError("--root and --out are required")
    try:
        summary = archive(FLAGS.root, FLAGS.out)
    except ValueError as e:
        raise app.UsageError(str(e))
    for r in summary["runs"]:
        state = "finished" if r["finished"] else "unfinished"
        print(f"{r['workdir']}: {len(r['files'])} files ({state})")
    print(f"{len(summary['runs'])} runs, {summary['bytes'] / 1e3:.1f} kB -> {summary['out']}")
    if not summary["runs"]:
        print(f"no run workdirs (config.json or results.json) under {FLAGS.root}")


if __name__ == "__main__":
    _define_flags()
    app.run(main)
