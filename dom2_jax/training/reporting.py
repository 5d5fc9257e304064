"""Run outputs: metrics CSV, learning-curve PNG, results.json, resolved config."""
from __future__ import annotations

import csv
import json
import os
import platform
import tempfile
from typing import Dict, List

import numpy as np


def atomic_write_text(path: str, text: str) -> None:
    """Write to a temporary file in the same directory, then rename (never a partial file)."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-" + os.path.basename(path))
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_json(path: str, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n")


def _jsonable(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, tuple):
        return list(x)
    return str(x)


class MetricsLog:
    """Rows of (step, seed-mean metrics, per-seed eval scores), rewritten atomically as CSV."""

    def __init__(self, path: str, rows: List[Dict] | None = None):
        self.path = path
        self.rows = rows or []

    @classmethod
    def load(cls, path: str):
        rows = []
        if os.path.exists(path):
            with open(path) as f:
                for r in csv.DictReader(f):
                    rows.append({k: float(v) if v not in ("", None) else np.nan
                                 for k, v in r.items()})
        return cls(path, rows)

    def truncate(self, max_step: int):
        self.rows = [r for r in self.rows if r["step"] <= max_step]

    def append(self, row: Dict):
        self.rows.append(row)
        keys = []
        for r in self.rows:
            keys += [k for k in r if k not in keys]
        import io
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=keys)
        w.writeheader()
        for r in self.rows:
            w.writerow(r)
        atomic_write_text(self.path, buf.getvalue())


def plot_learning_curve(rows: List[Dict], path: str, title: str, num_seeds: int,
                        reference_returns: Dict | None = None) -> None:
    """Evaluation score against updates: one thin line per seed, mean in bold."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rows:
        return
    steps = np.array([r["step"] for r in rows])
    fig, ax = plt.subplots(figsize=(6, 4))
    for prefix, colour, label in (("eval/seed", "C0", "standard"),
                                  ("shift_eval/seed", "C3", "shifted")):
        cols = [f"{prefix}{i}" for i in range(num_seeds) if f"{prefix}{i}" in rows[0]]
        if not cols:
            continue
        vals = np.array([[r[c] for c in cols] for r in rows])
        for j in range(vals.shape[1]):
            ax.plot(steps, vals[:, j], color=colour, alpha=0.25, lw=1)
        ax.plot(steps, vals.mean(1), color=colour, lw=2, label=f"{label} (mean of {len(cols)})")
    for name, style in (("random", ":"), ("expert", "--")):
        if reference_returns and reference_returns.get(name) is not None:
            ax.axhline(reference_returns[name], color="grey", ls=style, lw=1,
                       label=f"{name} data")
    ax.set_xlabel("updates")
    ax.set_ylabel("episode score")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-", suffix=".png")
    os.close(fd)
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def system_info() -> Dict:
    import jax
    return {"jax": jax.__version__, "backend": jax.default_backend(),
            "devices": [str(d) for d in jax.devices()], "python": platform.python_version(),
            "machine": platform.machine(), "cpu_count": os.cpu_count()}
