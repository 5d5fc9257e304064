r"""Training metrics of several runs side by side: one panel per metric, one line per run.

  python -m experiments.plot_runs --workdirs=runs/a,runs/b --out=runs/compare.png \
      [--metrics=eval,q_data,q_random,critic_td,critic_grad_norm,actor_saturation] [--log=...]

Reads each workdir's metrics.csv (chunk means over updates and agents; ``eval`` is the mean
over seeds of the evaluation scores). A run's label is its directory name. Needs no JAX.
"""
from __future__ import annotations

import math
import os
from typing import Dict, List, Sequence

import matplotlib
import matplotlib.pyplot as plt
from absl import app, flags

from dom2_jax import fileio
from dom2_jax.training.reporting import MetricsLog

DEFAULT_METRICS = ("eval", "q_data", "actor_q", "q_random", "critic_td", "critic_grad_norm",
                   "actor_saturation")
FLAGS = flags.FLAGS


def _define_flags():
    flags.DEFINE_list("workdirs", None, "Run workdirs (comma-separated).")
    flags.DEFINE_list("metrics", list(DEFAULT_METRICS), "metrics.csv columns to plot ('eval': "
                      "mean of the eval/seed* columns).")
    flags.DEFINE_list("log", ["critic_td", "critic_grad_norm"], "Metrics drawn on a symmetric "
                      "log scale.")
    flags.DEFINE_string("out", None, "Output PNG path.")
    flags.DEFINE_string("title", None, "Figure title.")


def series(rows: List[Dict[str, float]], metric: str):
    """(steps, values) of one metric; ``eval`` averages the seeds' evaluation columns."""
    steps, vals = [], []
    for r in rows:
        if metric == "eval":
            xs = [v for k, v in r.items() if k.startswith("eval/seed") and not math.isnan(v)]
            v = sum(xs) / len(xs) if xs else math.nan
        else:
            v = r.get(metric, math.nan)
        steps.append(int(r["step"]))
        vals.append(v)
    return steps, vals


def plot_runs(workdirs: Sequence[str], metrics: Sequence[str], out: str, log=(), title=None):
    matplotlib.use("Agg")
    runs = []
    for d in workdirs:
        path = os.path.join(d, "metrics.csv")
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path} does not exist (not a run workdir?)")
        runs.append((os.path.basename(os.path.normpath(d)), MetricsLog.load(path).rows))
    ncol = min(4, len(metrics))
    nrow = -(-len(metrics) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.6 * ncol, 2.9 * nrow), squeeze=False)
    for ax, m in zip(axes.flat, metrics):
        for j, (name, rows) in enumerate(runs):
            steps, vals = series(rows, m)
            if any(not math.isnan(v) for v in vals):
                ax.plot(steps, vals, marker="o", ms=3, color=f"C{j % 10}", label=name)
        if m in log:
            ax.set_yscale("symlog", linthresh=1.0)
        ax.set_title(m, fontsize=9)
        ax.set_xlabel("updates", fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="lower center", ncol=min(4, len(runs)),
               frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.04 + 0.02 * ((len(runs) - 1) // 4), 1, 0.96 if title else 1))
    fileio.atomic_write(out, lambda f: fig.savefig(f, dpi=110, format="png"), binary=True)
    plt.close(fig)
    return out


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS.workdirs or not FLAGS.out:
        raise app.UsageError("--workdirs and --out are required")
    try:
        path = plot_runs(FLAGS.workdirs, FLAGS.metrics, FLAGS.out, FLAGS.log, FLAGS.title)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}")
    print(f"wrote {path}")


if __name__ == "__main__":
    _define_flags()
    app.run(main)
