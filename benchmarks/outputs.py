"""Where the benchmarks write when ``--out`` is not given.

A full run writes the committed results, ``benchmarks/results/`` (the documented contract of
``python -m benchmarks.solver_steps`` and ``benchmarks.throughput``). A ``--quick`` run (test
sizes, numbers that mean nothing) writes under ``runs/benchmarks/`` instead, so it never
replaces a committed result; ``--out=benchmarks/results`` sends it there on purpose.
"""
from __future__ import annotations

import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_DIR = os.path.join(ROOT, "benchmarks", "results")  # committed results
SCRATCH_DIR = os.path.join(ROOT, "runs", "benchmarks")     # --quick runs (runs/ is not tracked)


def default_out(quick: bool) -> str:
    """The output directory of a run without ``--out``."""
    return SCRATCH_DIR if quick else RESULTS_DIR
