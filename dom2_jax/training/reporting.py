"""Run outputs: metrics CSV, TensorBoard scalars, learning-curve PNG, results.json, config."""
from __future__ import annotations

import csv
import glob
import io
import json
import os
import platform
import struct
from typing import Dict, List, Optional

import numpy as np

from dom2_jax import fileio


def atomic_write_text(path: str, text: str) -> None:
    """Write to a temporary file in the same directory, then rename (never a partial file)."""
    fileio.atomic_write(path, lambda f: f.write(text))


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
                for i, r in enumerate(csv.DictReader(f)):
                    try:
                        rows.append({k: float(v) if v not in ("", None) else np.nan
                                     for k, v in r.items()})
                    except (TypeError, ValueError) as e:
                        raise ValueError(f"{path} line {i + 2} is not a row of numbers ({e}): "
                                         "the file is damaged; delete it to start the run's "
                                         "log afresh (the checkpoints are unaffected)") from None
        return cls(path, rows)

    def truncate(self, max_step: int):
        self.rows = [r for r in self.rows if r["step"] <= max_step]

    def append(self, row: Dict):
        self.rows.append(row)
        keys = []
        for r in self.rows:
            keys += [k for k in r if k not in keys]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=keys)
        w.writeheader()
        for r in self.rows:  # the step is an integer, also in rows read back from the file
            w.writerow(dict(r, step=int(r["step"])) if "step" in r else r)
        if self.path is not None:  # None: kept in memory only (processes other than 0)
            atomic_write_text(self.path, buf.getvalue())


def tensorboard_tag(column: str) -> str:
    """metrics.csv column -> TensorBoard tag: ``eval/seed3`` -> ``eval/score/seed3``,
    ``shift_eval/seed0`` -> ``shift_eval/score/seed0``, ``wall_s`` -> ``time/wall_s``, any other
    (seed-mean training metric, e.g. ``critic_loss``) -> ``train/critic_loss``."""
    for prefix in ("eval/", "shift_eval/"):
        if column.startswith(prefix + "seed"):
            return f"{prefix}score/{column[len(prefix):]}"
    for prefix in ("eval_std/", "shift_eval_std/"):
        if column.startswith(prefix + "seed"):
            return f"{prefix[:-5]}/score_std/{column[len(prefix):]}"
    if column == "wall_s":
        return "time/wall_s"
    return f"train/{column}"


class TensorBoardLog:
    """TensorBoard event file under ``logdir`` (``<workdir>/tb``), one scalar per metrics row
    column (tags from ``tensorboard_tag``) plus ``eval/score/mean`` (mean over seeds).

    A resumed run opens a new event file in the same directory with ``purge_step`` = the first
    step it will log, so TensorBoard hides any point the interrupted run logged at or after it
    (no duplicated or zig-zag curves). Needs ``tensorboardX`` (an install requirement).
    """

    def __init__(self, logdir: str, purge_step: int | None = None):
        # (a) TensorBoard path only: keeps reporting light for experiments.sweep / report
        from tensorboardX import SummaryWriter
        os.makedirs(logdir, exist_ok=True)
        self.logdir = logdir
        self.writer = SummaryWriter(logdir, purge_step=purge_step, flush_secs=30)

    def write(self, row: Dict) -> None:
        step = int(row["step"])
        for k, v in row.items():
            if k != "step" and v is not None and np.isfinite(v):
                self.writer.add_scalar(tensorboard_tag(k), float(v), step)
        seeds = [v for k, v in row.items() if k.startswith("eval/seed")]
        if seeds:
            self.writer.add_scalar("eval/score/mean", float(np.mean(seeds)), step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def read_tensorboard_scalars(logdir: str) -> Dict[str, List]:
    """Every scalar in the event files under ``logdir`` as ``{tag: [(step, value), ...]}`` (files
    in name order, i.e. creation time; points purged by a resumed writer's ``purge_step`` are
    dropped, as TensorBoard shows them). A small TFRecord reader (length, masked CRC32C of the
    length, payload, CRC of the payload) over tensorboardX's ``Event`` proto, so no TensorFlow or
    tensorboard is needed; a CRC mismatch raises ValueError."""
    # (a) TensorBoard path only; keeps reporting light for experiments.sweep / report
    from tensorboardX.crc32c import crc32c
    from tensorboardX.proto import event_pb2

    def masked(data):
        x = crc32c(data)
        return (((x >> 15) | (x << 17)) + 0xA282EAD8) & 0xFFFFFFFF

    out: Dict[str, List] = {}
    for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
        with open(path, "rb") as f:
            buf = f.read()
        pos = 0
        while pos + 12 <= len(buf):
            header = buf[pos:pos + 8]
            (n,) = struct.unpack("<Q", header)
            (hcrc,) = struct.unpack("<I", buf[pos + 8:pos + 12])
            payload = buf[pos + 12:pos + 12 + n]
            if len(payload) < n or pos + 16 + n > len(buf):
                break  # a record still being written
            (pcrc,) = struct.unpack("<I", buf[pos + 12 + n:pos + 16 + n])
            if masked(header) != hcrc or masked(payload) != pcrc:
                raise ValueError(f"{path}: corrupt record at byte {pos}")
            pos += 16 + n
            ev = event_pb2.Event.FromString(payload)
            if ev.HasField("session_log") and ev.session_log.status == ev.session_log.START:
                # a resumed writer's purge_step: hide earlier points at or after it, as
                # TensorBoard does
                out = {t: [p for p in pts if p[0] < ev.step] for t, pts in out.items()}
            for v in ev.summary.value:
                if v.HasField("simple_value"):
                    out.setdefault(v.tag, []).append((int(ev.step), float(v.simple_value)))
    return out


def plot_learning_curve(rows: List[Dict], path: str, title: str, num_seeds: int,
                        reference_returns: Dict | None = None) -> None:
    """Evaluation score against updates: one thin line per seed, mean in bold."""
    # (a) matplotlib is heavy (~0.7 s) and only the plot needs it; keeps reporting light for
    # experiments.sweep / report
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
    fileio.atomic_write(path, lambda f: fig.savefig(f, dpi=110, format="png"), binary=True)
    plt.close(fig)


def cpu_model() -> Optional[str]:
    """The CPU's model name (Linux /proc/cpuinfo; else ``platform.processor()``), or None."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def system_info() -> Dict:
    """Where a run ran. XLA's CPU code depends on the instruction set (``cpu_model``,
    ``xla_flags``): float32 results differ in the last bits between CPU models, which chaotic
    HalfCheetah rollouts amplify into other episodes (experiments/results/README.md)."""
    import jax  # (a) keeps dom2_jax.training.reporting free of jax at import
    return {"jax": jax.__version__, "backend": jax.default_backend(),
            "devices": [str(d) for d in jax.devices()], "python": platform.python_version(),
            "machine": platform.machine(), "cpu_model": cpu_model(),
            "cpu_count": os.cpu_count(), "xla_flags": os.environ.get("XLA_FLAGS")}
