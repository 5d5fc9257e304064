r"""Tables and plots from a tree of runs (a sweep's root, or any directory of workdirs).

  python -m experiments.report --root=runs/sweep [--out=DIR] [--metric=normalised|score]
  python -m experiments.report --root=runs/a,runs/b --out=DIR     (several trees, one report)

Walks ROOT for run workdirs (results.json; config.json without results.json = unfinished),
groups runs by (env, quality, algorithm, DOM2 ablation, data fraction), pools the per-seed final
evaluations of every run in a group (all vmapped seeds of all base seeds) and writes to OUT
(default ROOT):

  report.md    Table 1/3 layout (rows task x quality, columns algorithms): mean +- std over
               seeds of the final score, and of each seed's best evaluation; the same cells as
               interquartile mean with 95% bootstrap confidence intervals; a Fig. 5 table
               (data fractions x algorithms) when several fractions are present; a Fig. 6 table
               (DOM2 ablations) when ablations are present; unfinished/unreadable runs.
  report.json  the same numbers (per group: seeds, mean, std, IQM, confidence intervals,
               per-seed values, workdirs).
  bars_<env>.png               final score per quality and algorithm, error bars = std, each
                               bar labelled with its budget (updates).
  curves_<env>_<quality>.png   evaluation score against updates from each run's metrics.csv,
                               mean over seeds with a +-std band, one line per variant.
  paper_<env>.png              the "Next to the paper" rows as bars: ours (raw score, hatched
                               where the run is unfinished) beside the paper's, one panel per
                               evaluation environment and quality, error bars = std; each of
                               our bars labelled with its updates ("2k/6k": unfinished, 2k of
                               6k planned); a panel whose bars differ in budget says so.

std is the population standard deviation over seeds (numpy's default, as train.py's
``final_score_std_over_seeds``). ``--metric=normalised`` uses 100 (score - random) / (expert -
random) with each run's dataset reference returns; runs without them show "n/a".

Aggregates that hold with few seeds (as rliable / marl-eval report them), per group over its
pooled per-seed final scores:
  IQM     the interquartile mean, rliable's ``aggregate_iqm`` = ``scipy.stats.trim_mean(x,
          0.25)``: sort the n scores, drop floor(n / 4) from each end (no fractional weights),
          average the rest. So n <= 3 drops nothing (IQM = mean), n = 4..7 drops the lowest
          and highest one, n = 8..11 two each, ...
  CI      95% percentile bootstrap confidence intervals of the mean and of the IQM:
          ``BOOTSTRAP_RESAMPLES`` (2000) resamples of the n seeds with replacement (rliable's
          stratified bootstrap with one task per group, i.e. a plain bootstrap over seeds), the
          same resamples for both statistics, drawn from ``numpy.random.default_rng(0)`` afresh
          for each group (reproducible, independent of the other groups); bounds are the 2.5th
          and 97.5th percentiles (numpy's linear interpolation) of the resampled statistic.
          With one seed there is no interval ("n/a (1 seed)"). A bootstrap over few seeds is
          itself rough: with 2 or 3 seeds the interval is just [lowest, highest seed] (a
          resample of n copies of the lowest seed has probability n^-n >= 1/27 > 2.5%).
Needs no JAX (reads files only).
"""
from __future__ import annotations

import json
import math
import os
from typing import Dict, List, Optional

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from absl import app, flags
from matplotlib.patches import Patch

from dom2_jax.registry import ALGO_LABELS, ALGO_ORDER, QUALITIES, TASKS as ENVS
from dom2_jax.training.reporting import MetricsLog, atomic_write_text, write_json
from experiments import paper_tables
ABLATION_ORDER = ("full", "no_q", "no_bc", "mlp_noise", "no_aug")
ABLATION_LABELS = {"full": "DOM2", "no_q": "w/o policy improvement (eta=0)",
                   "no_bc": "w/o diffusion loss", "mlp_noise": "MLP noise net",
                   "no_aug": "w/o augmentation"}
METRICS = ("normalised", "score")
SHIFT_ORDER = (None, "speed", "R", "E")  # standard env, then Table 2's and Table 4's shifts

FLAGS = flags.FLAGS


def _define_flags():
    """CLI flags, defined only when run as a script (the module stays importable next to
    the other launchers, whose flag names overlap)."""
    flags.DEFINE_list("root", ["runs/sweep"], "Directory tree(s) holding run workdirs "
                      "(comma-separated: one report over all of them).")
    flags.DEFINE_string("out", None, "Output directory (default: --root; required with "
                        "several roots).")
    flags.DEFINE_enum("metric", "normalised", list(METRICS),
                      "normalised: 100 (score - random) / (expert - random); score: raw return.")
    flags.DEFINE_bool("strict", False, "Refuse (exit non-zero, write nothing) when a table row "
                      "compares algorithms trained with different budgets, data, observation "
                      "preprocessing or evaluation episodes; by default such rows are marked "
                      "'not comparable'.")


# ---------------------------------------------------------------------------- reading runs

def ablation_of(algo: str, config: Dict) -> Optional[str]:
    """DOM2's Fig. 6 ablation read off a run's resolved config ("full" when none; several are
    joined with '+'); None for other algorithms."""
    if algo != "dom2":
        return None
    agent = config.get("agent", {})
    names = []
    if agent.get("eta", 1.0) == 0:
        names.append("no_q")
    if agent.get("use_bc_loss", True) is False:
        names.append("no_bc")
    if agent.get("noise_net", "residual") == "mlp":
        names.append("mlp_noise")
    if config.get("augment", True) is False:
        names.append("no_aug")
    return "+".join(names) or "full"


def normalise(score, refs) -> Optional[float]:
    if score is None or not refs or refs.get("random") is None or refs.get("expert") is None:
        return None
    if refs["expert"] == refs["random"]:
        return None
    return 100.0 * (score - refs["random"]) / (refs["expert"] - refs["random"])


def _read_json(path):
    with open(path) as f:
        return json.load(f)


def read_metrics_csv(path: str) -> List[Dict[str, float]]:
    """A run's metrics.csv rows (empty if missing); the launcher's own reader (no JAX)."""
    return MetricsLog.load(path).rows


def collect(root: str) -> List[Dict]:
    """One record per workdir under ``root`` (a directory with results.json or config.json)."""
    records = []
    for d, dirs, files in os.walk(root):
        dirs[:] = sorted(x for x in dirs if x != "checkpoints" and x != "tb")
        if "results.json" not in files and "config.json" not in files:
            continue
        rec = {"workdir": d, "status": "done", "seeds": []}
        try:
            if "results.json" in files:
                res = _read_json(os.path.join(d, "results.json"))
                rec.update(env=res["env"], quality=res.get("quality"), algo=res["algo"],
                           config=res.get("config", {}), refs=res.get("reference_returns") or {},
                           num_seeds=res.get("num_seeds"), shift=res.get("shift"))
                rec["num_updates"] = res.get("num_updates", rec["config"].get("num_updates"))
                for s in res["seeds"]:
                    rec["seeds"].append({
                        "final_score": s["final_score_mean"],
                        "best_score": s.get("best_eval_score"),
                        "final_normalised": s.get("final_normalized_score",
                                                  normalise(s["final_score_mean"], rec["refs"])),
                        "best_normalised": normalise(s.get("best_eval_score"), rec["refs"]),
                        "final_shift_score": s.get("final_shift_score_mean")})
                if len(rec["seeds"]) != rec["num_seeds"] or not rec["seeds"]:
                    rec["status"] = "incomplete results.json"
                rec["shift_evals"] = shift_evaluations(d, rec)
                rec["acting_evals"] = acting_evaluations(d, rec)
            else:
                cfg = _read_json(os.path.join(d, "config.json"))
                rec.update(env=cfg["env"], quality=cfg.get("quality"), algo=cfg["algo"],
                           config=cfg.get("config", {}), refs={}, num_seeds=cfg.get("num_seeds"),
                           shift=cfg.get("shift"))
                rows = read_metrics_csv(os.path.join(d, "metrics.csv"))
                done = int(rows[-1]["step"]) if rows else 0
                status = f"unfinished ({done} of {rec['config'].get('num_updates', '?')} updates"
                last = [v for k, v in rows[-1].items() if k.startswith("eval/")] if rows else []
                if last:  # what a stopped run reached: its newest evaluation, mean over seeds
                    status += (f"; last evaluation {sum(last) / len(last):.1f} raw, mean of "
                               f"{len(last)} seed(s)")
                    rec["last_eval"] = {
                        "step": done, "scores": last,
                        "shift_scores": [v for k, v in rows[-1].items()
                                         if k.startswith("shift_eval/")]}
                rec["status"] = status + ")"
        except (OSError, ValueError, KeyError, TypeError) as e:
            rec.update(status=f"unreadable ({type(e).__name__}: {e})", env=None, quality=None,
                       algo=None, config={}, refs={})
        rec["protocol"] = protocol_of(d, rec)
        rec["ablation"] = ablation_of(rec["algo"], rec["config"]) if rec.get("algo") else None
        rec["fraction"] = float(rec["config"].get("data_fraction", 1.0))
        rec["quality"] = rec.get("quality") or "?"
        records.append(rec)
    return records


# What must be equal between the algorithms of one table row for a comparison to be like for
# like: the training budget, the data (digest of the dataset files, else its path) and its
# preprocessing, and the evaluation protocol.
PROTOCOL_FIELDS = ("num_updates", "normalize_obs", "dataset", "eval_episodes")


def protocol_of(workdir: str, rec: Dict) -> Dict:
    """The run's comparison protocol (``PROTOCOL_FIELDS``) from its results/config files."""
    cfg = rec.get("config") or {}
    dataset = None
    try:
        meta = _read_json(os.path.join(workdir, "config.json"))
        dataset = meta.get("dataset_sha256")
        dataset = dataset[:12] if dataset else meta.get("dataset")
    except (OSError, ValueError):
        pass
    return {"num_updates": rec.get("num_updates", cfg.get("num_updates")),
            "normalize_obs": bool(cfg.get("normalize_obs", False)),
            "dataset": dataset, "eval_episodes": cfg.get("eval_episodes")}


def protocol_differences(groups: List[Dict]) -> Dict[str, Dict[str, list]]:
    """{field: {algorithm label: values}} for each ``PROTOCOL_FIELDS`` field on which the
    groups (one table row) are not all equal, or on which one group mixes values; {} when the
    row compares like with like. Unknown values (None: records from before a field existed)
    count as values."""
    out = {}
    for f in PROTOCOL_FIELDS:
        per = {variant_label(g): g["protocol"][f] for g in groups if g is not None}
        distinct = {json.dumps(v) for vals in per.values() for v in vals}
        if len(distinct) > 1:
            out[f] = per
    return out


def _describe_differences(diff: Dict[str, Dict[str, list]]) -> str:
    parts = []
    for f, per in diff.items():
        vals = "; ".join(f"{a} {'/'.join(_fmt_protocol(f, v) for v in vs)}"
                         for a, vs in per.items())
        parts.append(f"{f}: {vals}")
    return " — ".join(parts)


def _fmt_protocol(field, v):
    if field == "num_updates" and isinstance(v, int):
        return _updates([v])
    return str(v)


def protocol_summary(groups: List[Dict]) -> str:
    """One row's shared protocol in words ("30k updates, normalised obs, 100 episodes")."""
    g = next((x for x in groups if x is not None), None)
    if g is None:
        return "–"
    p = {f: g["protocol"][f][0] for f in PROTOCOL_FIELDS}
    p = {f: "?" if v is None else v for f, v in p.items()}
    obs = "standardised obs" if p["normalize_obs"] is True else "raw obs"
    return (f"{_fmt_protocol('num_updates', p['num_updates'])} updates, {obs}, "
            f"{p['eval_episodes']} eval episodes, data {p['dataset']}")


def _evaluations(workdir: str):
    """(evaluation dict, episodes, per-seed mean scores) of each readable
    ``WORKDIR/evaluations/*.json`` (experiments.evaluate), in name order; a stray or foreign
    file is passed over, so it never stops the report."""
    ev_dir = os.path.join(workdir, "evaluations")
    for name in sorted(os.listdir(ev_dir)) if os.path.isdir(ev_dir) else []:
        if not name.endswith(".json"):
            continue
        try:
            ev = _read_json(os.path.join(ev_dir, name))
            yield ev, int(ev["episodes"]), [float(x["score_mean"]) for x in ev["seeds"]]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue


def shift_evaluations(workdir: str, rec: Dict) -> Dict[str, List[float]]:
    """{shift: per-seed mean scores} of a finished run's final parameters in shifted
    environments: its own (``experiments.train --shift``) and those ``experiments.evaluate``
    wrote to ``WORKDIR/evaluations/`` (for each shift, the one with the most episodes)."""
    out, episodes = {}, {}
    if rec.get("shift") and rec["seeds"] and all(
            x["final_shift_score"] is not None for x in rec["seeds"]):
        out[rec["shift"]] = [x["final_shift_score"] for x in rec["seeds"]]
        episodes[rec["shift"]] = int(rec["config"].get("eval_episodes", 0))
    for ev, n, scores in _evaluations(workdir):
        shift = ev.get("shift")
        if ev.get("act_overrides"):  # acted otherwise than the run (evaluate --act_*)
            continue
        if shift and ev.get("final_parameters") and len(scores) == rec["num_seeds"] \
                and n > episodes.get(shift, 0):
            out[shift], episodes[shift] = scores, n
    return out


def acting_evaluations(workdir: str, rec: Dict) -> Dict[str, Dict]:
    """{label: evaluation} of a finished run's final parameters in the standard environment
    acting otherwise than it trained to (``experiments.evaluate --act_candidates``), and as it
    trained to (label ``AS_TRAINED``), for each label the one with the most episodes; label
    e.g. ``act_candidates=32``."""
    out = {}
    for ev, n, scores in _evaluations(workdir):
        acting = ev.get("act_overrides") or {}
        if not isinstance(acting, dict) or ev.get("shift") \
                or not ev.get("final_parameters") \
                or len(scores) != rec["num_seeds"]:
            continue
        label = ", ".join(f"{k}={v}" for k, v in sorted(acting.items())) or AS_TRAINED
        if n > out.get(label, {}).get("episodes", 0):
            out[label] = {"episodes": n, "scores": scores, "eval_seed": ev.get("eval_seed")}
    return out


AS_TRAINED = "as trained"         # a re-evaluation without acting overrides (evaluate's key)
ONE_SAMPLE = "act_candidates=1"  # DOM2 acts on one sample as trained: the same thing


def _acts_as_trained(rec: Dict, label: str) -> bool:
    """Whether the acting ``label`` is how ``rec`` trained to act: no overrides, or for DOM2
    (which acts on one sample) ``act_candidates=1``."""
    return label == AS_TRAINED or (label == ONE_SAMPLE and rec["algo"] == "dom2")


def _as_trained(rec: Dict, evals: Dict[str, Dict]) -> Optional[Dict]:
    """The re-evaluation of ``rec`` acting as it trained to (evaluate's key), if any."""
    return next((evals[label] for label in (AS_TRAINED, ONE_SAMPLE)
                 if label in evals and _acts_as_trained(rec, label)), None)


def acting_rows(records: List[Dict]) -> List[Dict]:
    """Per (env, quality, algo, acting label): the finished runs evaluated again acting
    otherwise, seed by seed, next to a baseline: the re-evaluation acting as trained
    (``_as_trained``: the same evaluation key, so the paired difference is the acting's alone)
    where it exists, else the run's own final evaluation (another key). E.g. DOM2 with
    ``act_candidates=32`` against one sample, MA-SfBC with ``act_candidates=1`` (one behaviour
    sample) against its 32."""
    rows: Dict[tuple, Dict] = {}
    for rec in records:
        if rec["status"] != "done" or rec["ablation"] not in (None, "full") \
                or rec["fraction"] != 1.0:
            continue
        evals = rec.get("acting_evals") or {}
        for label, ev in evals.items():
            if _acts_as_trained(rec, label):
                continue
            same_key = _as_trained(rec, evals) or {}
            paired = (same_key.get("episodes") == ev["episodes"]
                      and same_key.get("eval_seed") == ev["eval_seed"])
            base = same_key["scores"] if paired else [x["final_score"] for x in rec["seeds"]]
            r = rows.setdefault((rec["env"], rec["quality"], rec["algo"], label), {
                "env": rec["env"], "quality": rec["quality"], "algo": rec["algo"],
                "acting": label, "as_trained": [], "acting_otherwise": [], "episodes": [],
                "baselines": []})
            r["as_trained"] += base
            r["acting_otherwise"] += ev["scores"]
            r["episodes"].append(ev["episodes"])
            r["baselines"].append("as trained, same key" if paired else "own final evaluation")
    out = []
    for key in sorted(rows):
        r = rows[key]
        diff = [b - a for a, b in zip(r["as_trained"], r["acting_otherwise"])]
        r.update(seeds=len(diff), as_trained_mean_std=_mean_std(r["as_trained"]),
                 acting_otherwise_mean_std=_mean_std(r["acting_otherwise"]),
                 paired_difference_mean_std=_mean_std(diff))
        out.append(r)
    return out


def acting_table(rows: List[Dict]) -> str:
    def ms(x):
        return "–" if x[0] is None else f"{x[0]:.1f} ± {x[1]:.1f}"
    return _table(["task", "quality", "algorithm", "acting", "seeds", "episodes", "baseline",
                   "baseline score", "acting otherwise", "paired difference"],
                  [[r["env"], r["quality"], ALGO_LABELS.get(r["algo"], r["algo"]), r["acting"],
                    str(r["seeds"]), "/".join(str(e) for e in sorted(set(r["episodes"]))),
                    "; ".join(sorted(set(r["baselines"]))),
                    ms(r["as_trained_mean_std"]), ms(r["acting_otherwise_mean_std"]),
                    ms(r["paired_difference_mean_std"])] for r in rows])


# ------------------------------------------------------------------------------ aggregating

def _mean_std(values):
    vals = [v for v in values if v is not None]
    if not vals or len(vals) < len(values):
        return None, None
    m = sum(vals) / len(vals)
    return m, math.sqrt(sum((v - m) ** 2 for v in vals) / len(vals))


BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
CI_LEVEL = 0.95


def _iqm_sorted(x: np.ndarray) -> np.ndarray:
    """IQM along the last axis of ``x``, each row sorted ascending: the mean of what remains
    after dropping floor(n / 4) values at each end (``scipy.stats.trim_mean(x, 0.25)``)."""
    n = x.shape[-1]
    k = int(0.25 * n)
    return x[..., k:n - k].mean(-1)


def iqm(values) -> Optional[float]:
    """Interquartile mean as rliable's ``aggregate_iqm`` (module docstring); None if empty or
    any value is missing."""
    if not len(values) or any(v is None for v in values):
        return None
    return float(_iqm_sorted(np.sort(np.asarray(values, float))))


def bootstrap_ci(values, reps: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                 level: float = CI_LEVEL) -> Dict[str, Optional[List[float]]]:
    """{"mean": [lo, hi], "iqm": [lo, hi]}: percentile bootstrap confidence intervals over the
    seeds (module docstring); both None with fewer than two values or any missing."""
    if len(values) < 2 or any(v is None for v in values):
        return {"mean": None, "iqm": None}
    x = np.asarray(values, float)
    idx = np.random.default_rng(seed).integers(0, len(x), size=(reps, len(x)))
    samples = np.sort(x[idx], axis=1)
    q = [50 * (1 - level), 50 * (1 + level)]
    return {name: [float(v) for v in np.percentile(stat, q)]
            for name, stat in (("mean", samples.mean(1)), ("iqm", _iqm_sorted(samples)))}


def group_key(rec):
    return (rec["env"], rec["quality"], rec["algo"], rec["ablation"], rec["fraction"])


def aggregate(records: List[Dict], metric: str) -> List[Dict]:
    """Per (env, quality, algo, ablation, fraction): pooled per-seed values over finished runs."""
    field = "normalised" if metric == "normalised" else "score"
    groups: Dict[tuple, Dict] = {}
    for rec in records:
        if rec["status"] != "done":
            continue
        g = groups.setdefault(group_key(rec), {
            "env": rec["env"], "quality": rec["quality"], "algo": rec["algo"],
            "ablation": rec["ablation"], "fraction": rec["fraction"], "workdirs": [],
            "final": [], "best": [], "protocol": {f: [] for f in PROTOCOL_FIELDS}})
        g["workdirs"].append(rec["workdir"])
        for f in PROTOCOL_FIELDS:
            if rec["protocol"][f] not in g["protocol"][f]:
                g["protocol"][f].append(rec["protocol"][f])
        g["final"] += [s[f"final_{field}"] for s in rec["seeds"]]
        g["best"] += [s[f"best_{field}"] for s in rec["seeds"]]
    out = []
    for key in sorted(groups, key=_sort_key):
        g = groups[key]
        g["num_seeds"] = len(g["final"])
        g["num_runs"] = len(g["workdirs"])
        g["final_mean"], g["final_std"] = _mean_std(g["final"])
        g["best_mean"], g["best_std"] = _mean_std(g["best"])
        g["final_iqm"] = iqm(g["final"])
        ci = bootstrap_ci(g["final"])
        g["final_mean_ci"], g["final_iqm_ci"] = ci["mean"], ci["iqm"]
        out.append(g)
    return out


def _index(seq, x):
    return seq.index(x) if x in seq else len(seq)


def _sort_key(key):
    env, q, algo, abl, frac = key
    return (_index(ENVS, env), str(env), _index(QUALITIES, q), str(q),
            _index(ALGO_ORDER, algo), str(algo), _index(ABLATION_ORDER, abl or "full"),
            str(abl), -frac)


# -------------------------------------------------------------------------------- tables

def _cell(g):
    if g is None:
        return "–"
    if g["final_mean"] is None:
        return f"n/a ({g['num_seeds']} seeds)"
    return f"{g['final_mean']:.1f} ± {g['final_std']:.1f} ({g['num_seeds']})"


def _best_cell(g):
    if g is None:
        return "–"
    if g["best_mean"] is None:
        return "n/a"
    return f"{g['best_mean']:.1f} ± {g['best_std']:.1f} ({g['num_seeds']})"


def _robust_cell(g):
    """IQM [its 95% CI]; then the mean's 95% CI; seeds in brackets."""
    if g is None:
        return "–"
    n = g["num_seeds"]
    if g["final_iqm"] is None:
        return f"n/a ({n} seeds)"
    if g["final_iqm_ci"] is None:
        return f"{g['final_iqm']:.1f}, CI n/a (1 seed)"
    (a, b), (c, d) = g["final_iqm_ci"], g["final_mean_ci"]
    return f"{g['final_iqm']:.1f} [{a:.1f}, {b:.1f}]; mean [{c:.1f}, {d:.1f}] ({n})"


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _bold_best(cells, groups):
    means = [g["final_mean"] if g and g["final_mean"] is not None else None for g in groups]
    valid = [m for m in means if m is not None]
    if len(valid) > 1:
        best = max(valid)
        cells = [f"**{c}**" if m == best else c for c, m in zip(cells, means)]
    return cells


def tables(groups: List[Dict], metric: str) -> Dict[str, str]:
    """Markdown tables: main (final), main_best, main_robust (IQM and bootstrap CIs of the
    final scores), fractions, ablations (the last two may be absent)."""
    by = {(g["env"], g["quality"], g["algo"], g["ablation"], g["fraction"]): g for g in groups}
    tasks = []
    for g in groups:
        if (g["env"], g["quality"]) not in tasks:
            tasks.append((g["env"], g["quality"]))
    main = [g for g in groups if g["ablation"] in (None, "full")]
    algos = sorted({g["algo"] for g in main}, key=lambda a: (_index(ALGO_ORDER, a), a))
    full = lambda a: "full" if a == "dom2" else None
    out = {}
    header = ["task", "quality"] + [ALGO_LABELS.get(a, a) for a in algos] + ["protocol"]
    for name, fn in (("main", _cell), ("main_best", _best_cell),
                     ("main_robust", _robust_cell)):
        rows = []
        for env, q in tasks:
            gs = [by.get((env, q, a, full(a), 1.0)) for a in algos]
            if all(x is None for x in gs):
                continue
            cells = [fn(x) for x in gs]
            diff = protocol_differences(gs)
            if diff:  # not like for like: no best is named, and the row says why
                proto = "**⚠ not comparable**: " + _describe_differences(diff)
            else:
                proto = protocol_summary(gs)
                cells = _bold_best(cells, gs) if name == "main" else cells
            rows.append([env, q] + cells + [proto])
        if rows and algos:
            out[name] = _table(header, rows)
    fractions = sorted({g["fraction"] for g in main}, reverse=True)
    if len(fractions) > 1:
        rows = []
        for env, q in tasks:
            for f in fractions:
                gs = [by.get((env, q, a, full(a), f)) for a in algos]
                if any(x is not None for x in gs):
                    rows.append([env, q, f"{f:g}"] + [_cell(x) for x in gs])
        out["fractions"] = _table(["task", "quality", "data fraction"] + header[2:], rows)
    abls = sorted({g["ablation"] for g in groups if g["algo"] == "dom2"},
                  key=lambda a: (_index(ABLATION_ORDER, a), a))
    if any(a != "full" for a in abls):
        rows = []
        fr = sorted({g["fraction"] for g in groups if g["algo"] == "dom2"}, reverse=True)
        for env, q in tasks:
            for f in fr:
                gs = [by.get((env, q, "dom2", a, f)) for a in abls]
                if any(x is not None for x in gs):
                    rows.append([env, q] + ([f"{f:g}"] if len(fr) > 1 else [])
                                + _bold_best([_cell(x) for x in gs], gs))
        out["ablations"] = _table(["task", "quality"] + (["data fraction"] if len(fr) > 1 else [])
                                  + [ABLATION_LABELS.get(a, a) for a in abls], rows)
    return out


def row_protocols(groups: List[Dict]) -> List[Dict]:
    """Per (env, quality) row of the main table: whether its algorithms were trained and
    evaluated alike (``PROTOCOL_FIELDS``), with the shared protocol or the differences."""
    rows = {}
    for g in groups:
        if g["ablation"] in (None, "full") and g["fraction"] == 1.0:
            rows.setdefault((g["env"], g["quality"]), []).append(g)
    out = []
    for (env, q), gs in rows.items():
        diff = protocol_differences(gs)
        out.append({"env": env, "quality": q, "comparable": not diff,
                    "protocol": None if diff else {f: gs[0]["protocol"][f][0]
                                                   for f in PROTOCOL_FIELDS},
                    "differences": diff})
    return out


def paper_comparison(records: List[Dict]) -> List[Dict]:
    """Our raw scores next to the paper's Tables 1-4 (``experiments.paper_tables``), one entry
    per (env, evaluation environment, quality, algorithm) that we ran: full algorithms on all
    the data only (no ablations, no fractions). Finished runs pool their seeds' final scores;
    a group with no finished run shows its unfinished runs' newest evaluation instead
    (``status`` says so, with the updates reached). A finished run's shifted evaluations
    (``shift_evaluations``) go to the (env, S) rows, which Tables 2 and 4 report."""
    groups: Dict[tuple, Dict] = {}
    for rec in records:
        if rec.get("algo") is None or rec["ablation"] not in (None, "full") \
                or rec["fraction"] != 1.0:
            continue
        done = rec["status"] == "done"
        last = rec.get("last_eval")
        if not done and last is None:
            continue
        if done:
            evals = [(None, [x["final_score"] for x in rec["seeds"]])]
            evals += sorted(rec.get("shift_evals", {}).items())
        else:
            evals = [(None, last["scores"])]
            if rec.get("shift"):
                evals.append((rec["shift"], last["shift_scores"]))
        for shift, scores in evals:
            if not scores or any(v is None for v in scores):
                continue
            g = groups.setdefault((rec["env"], shift, rec["quality"], rec["algo"]),
                                  {"done": [], "partial": []})
            g["done" if done else "partial"].append(
                (scores, rec.get("num_updates") if done else last["step"],
                 rec["config"].get("num_updates")))
    out = []
    for (env, shift, q, algo) in sorted(groups, key=lambda k: (
            _index(ENVS, k[0]), str(k[0]), _index(SHIFT_ORDER, k[1]), str(k[1]),
            _index(QUALITIES, k[2]), str(k[2]),
            _index(ALGO_ORDER, k[3]), str(k[3]))):
        g = groups[(env, shift, q, algo)]
        finished = bool(g["done"])
        runs = g["done"] or g["partial"]
        scores = [v for sc, _, _ in runs for v in sc]
        mean, std = _mean_std(scores)
        reached = sorted({u for _, u, _ in runs if u is not None})
        planned = sorted({t for _, _, t in runs if t is not None})
        paper = paper_tables.paper_score(env, q, algo, shift)
        out.append({
            "env": env, "shift": shift, "quality": q, "algo": algo, "mean": mean, "std": std,
            "num_seeds": len(scores), "updates": reached, "planned_updates": planned,
            "finished": finished, "paper_mean": paper[0] if paper else None,
            "paper_std": paper[1] if paper else None,
            "paper_table": paper_tables.TABLE_OF.get((env, shift)) if paper else None,
            "diff": mean - paper[0] if paper else None})
    return out


def _updates(xs):
    return ", ".join(f"{u // 1000}k" if u % 1000 == 0 and u >= 1000 else str(u) for u in xs) \
        or "?"


def paper_table(rows: List[Dict]) -> str:
    body = []
    for r in rows:
        status = "final" if r["finished"] else (
            f"**unfinished**: newest evaluation, at {_updates(r['updates'])} of "
            f"{_updates(r['planned_updates'])}")
        paper = (f"{r['paper_mean']:.1f} ± {r['paper_std']:.1f} (T{r['paper_table']})"
                 if r["paper_mean"] is not None else "–")
        body.append([r["env"], r["shift"] or "–", r["quality"],
                     ALGO_LABELS.get(r["algo"], r["algo"]),
                     f"{r['mean']:.1f} ± {r['std']:.1f}", str(r["num_seeds"]),
                     _updates(r["updates"]), status, paper,
                     f"{r['diff']:+.1f}" if r["diff"] is not None else "–"])
    return _table(["task", "shift", "quality", "algorithm", "ours", "seeds", "updates",
                   "ours is", "paper (table)", "ours − paper"], body)


def variant_label(g) -> str:
    name = ALGO_LABELS.get(g["algo"], g["algo"])
    if g["ablation"] not in (None, "full"):
        name += f" {g['ablation']}"
    if g["fraction"] != 1.0:
        name += f" frac {g['fraction']:g}"
    return name


# -------------------------------------------------------------------------------- claims

MIN_SEEDS = 3


def _ms(g):
    return f"{g['final_mean']:.1f} ± {g['final_std']:.1f} ({g['num_seeds']})"


def _compare(a, b, a_label, b_label, min_seeds):
    """Verdict of "a is not below b" with a one-standard-deviation margin (the larger of the
    two groups' population stds over seeds)."""
    if a is None or b is None:
        missing = [lbl for g, lbl in ((a, a_label), (b, b_label)) if g is None]
        return "not yet", f"no finished {' / '.join(missing)} run"
    few = [lbl for g, lbl in ((a, a_label), (b, b_label)) if g["num_seeds"] < min_seeds]
    evidence = (f"{a_label} {_ms(a)} vs {b_label} {_ms(b)}: "
                f"{a['final_mean'] - b['final_mean']:+.1f}")
    if "protocol" in a and "protocol" in b:
        diff = protocol_differences([a, b])
        if diff:
            return "not comparable", evidence + "; trained or evaluated differently: " \
                + _describe_differences(diff)
    if few:
        return "not yet", evidence + f" (fewer than {min_seeds} seeds: {', '.join(few)})"
    margin = max(a["final_std"], b["final_std"])
    diff = a["final_mean"] - b["final_mean"]
    if diff >= 0:
        return "holds", evidence
    if diff >= -margin:
        return "holds (within 1 std)", evidence + f", within the 1-std margin {margin:.1f}"
    return "does not hold", evidence + f", beyond the 1-std margin {margin:.1f}"


def claims(groups: List[Dict], paper_rows: Optional[List[Dict]] = None,
           min_seeds: int = MIN_SEEDS) -> List[Dict]:
    """A verdict on each of the paper's claims that the runs can test, one entry per cell:

    * ``dom2_vs_sfbc`` (issue #26's bar): DOM2 is not below MA-SfBC (its BC-only relative) by
      more than one standard deviation over seeds, per task and quality;
    * ``dom2_best`` (Tables 1 and 3): DOM2 has the best mean among the algorithms run on the
      cell (a "within 1 std" verdict when the best is ahead by less than a std);
    * ``dom2_best_shifted`` (Tables 2 and 4): the same on each shifted environment;
    * ``data_efficiency`` (Fig. 5): DOM2 trained on 5% of the data is not below each
      baseline trained on all of it;
    * ``ablations`` (Fig. 6): full DOM2 is not below each of its ablations.
    Every verdict needs ``min_seeds`` seeds per group ("not yet" otherwise)."""
    full = {(g["env"], g["quality"], g["algo"]): g for g in groups
            if g["fraction"] == 1.0 and g["ablation"] in (None, "full")}
    out = []

    def add(claim, env, quality, scope, verdict, evidence):
        out.append({"claim": claim, "env": env, "quality": quality, "scope": scope,
                    "verdict": verdict, "evidence": evidence})

    cells = sorted({(e, q) for e, q, _ in full}, key=lambda c: (_index(ENVS, c[0]),
                                                                _index(QUALITIES, c[1])))
    for env, q in cells:
        d = full.get((env, q, "dom2"))
        add("dom2_vs_sfbc", env, q, "standard env",
            *_compare(d, full.get((env, q, "masfbc")), "DOM2", "MA-SfBC", min_seeds))
        rivals = [g for (e, qq, a), g in full.items() if e == env and qq == q and a != "dom2"]
        if rivals:
            best = max(rivals, key=lambda g: g["final_mean"])
            label = f"best other ({ALGO_LABELS.get(best['algo'], best['algo'])})"
            add("dom2_best", env, q, "standard env", *_compare(d, best, "DOM2", label, min_seeds))
        for frac_g in groups:
            if (frac_g["env"], frac_g["quality"], frac_g["algo"]) == (env, q, "dom2") \
                    and frac_g["ablation"] in (None, "full") and frac_g["fraction"] < 1.0:
                for rival in rivals:
                    add("data_efficiency", env, q,
                        f"DOM2 at {frac_g['fraction']:g} of the data vs "
                        f"{ALGO_LABELS.get(rival['algo'], rival['algo'])} at all of it",
                        *_compare(frac_g, rival, f"DOM2 ({frac_g['fraction']:g})",
                                  ALGO_LABELS.get(rival["algo"], rival["algo"]), min_seeds))
            if (frac_g["env"], frac_g["quality"], frac_g["algo"]) == (env, q, "dom2") \
                    and frac_g["ablation"] not in (None, "full") and frac_g["fraction"] == 1.0:
                add("ablations", env, q, f"DOM2 vs DOM2 {frac_g['ablation']}",
                    *_compare(d, frac_g, "DOM2", f"DOM2 {frac_g['ablation']}", min_seeds))
    shifted = {}
    for r in paper_rows or []:
        if r["shift"] is not None and r["finished"] and r["mean"] is not None:
            shifted.setdefault((r["env"], r["shift"], r["quality"]), {})[r["algo"]] = {
                "final_mean": r["mean"], "final_std": r["std"], "num_seeds": r["num_seeds"]}
    for (env, shift, q), by_algo in sorted(shifted.items(), key=lambda kv: (
            _index(ENVS, kv[0][0]), _index(SHIFT_ORDER, kv[0][1]), _index(QUALITIES, kv[0][2]))):
        rivals = {a: g for a, g in by_algo.items() if a != "dom2"}
        if not rivals:
            continue
        best_a = max(rivals, key=lambda a: rivals[a]["final_mean"])
        add("dom2_best_shifted", env, q, f"shift {shift}",
            *_compare(by_algo.get("dom2"), rivals[best_a], "DOM2",
                      f"best other ({ALGO_LABELS.get(best_a, best_a)})", min_seeds))
    return out


CLAIM_TEXT = {
    "dom2_vs_sfbc": "DOM2 not below MA-SfBC by more than 1 std (issue #26)",
    "dom2_best": "DOM2 best in every cell (Tables 1, 3)",
    "dom2_best_shifted": "DOM2 best in shifted environments (Tables 2, 4)",
    "data_efficiency": "DOM2 with 5% of the data matches the baselines (Fig. 5)",
    "ablations": "removing any DOM2 component hurts (Fig. 6)",
}


def claims_table(rows: List[Dict]) -> str:
    return _table(["claim", "task", "quality", "scope", "verdict",
                   "evidence (mean ± std (seeds))"],
                  [[CLAIM_TEXT.get(r["claim"], r["claim"]), r["env"], r["quality"], r["scope"],
                    f"**{r['verdict']}**", r["evidence"]] for r in rows])


def markdown(groups, records, metric, figures, root=".", paper_rows=None,
             claim_rows=None) -> str:
    what = ("normalised score (100 = dataset expert, 0 = random)" if metric == "normalised"
            else "episode score (raw return)")
    t = tables(groups, metric)
    md = ["# Results\n",
          f"Metric: **{what}**; cells are mean ± std over seeds of each seed's final "
          "evaluation, with the number of seeds in brackets (std: population, over seeds). "
          "Bold: best mean in the row. –: no finished run.\n"]
    if claim_rows:
        md += ["## The paper's claims at this scale\n",
               f"A verdict needs {MIN_SEEDS} seeds per group and compares final scores (raw "
               "return) with a margin of one standard deviation over seeds (the larger of the "
               "two groups'). Rows compare groups of the same protocol only where the tables "
               "below say so.\n", claims_table(claim_rows), ""]
    if "main" in t:
        md += ["## Final performance (Table 1/3 layout)\n", t["main"], "",
               "## Best evaluation during training (mean ± std over seeds of each seed's best)\n",
               t["main_best"], "",
               "## Final performance: interquartile mean and 95% bootstrap confidence "
               "intervals\n",
               "Aggregates that hold with few seeds (as rliable / marl-eval report them). Cells: "
               "IQM of the seeds' final scores (rliable's 25% trimmed mean: floor(n/4) seeds "
               f"dropped at each end, so IQM = mean for 3 seeds or fewer) [95% CI]; mean [95% "
               f"CI] (seeds). CIs: percentile bootstrap over seeds, {BOOTSTRAP_RESAMPLES} "
               f"resamples, numpy default_rng({BOOTSTRAP_SEED}); none with 1 seed; with 2 or 3 "
               "seeds it is just [lowest, highest seed].\n",
               t["main_robust"], ""]
    if paper_rows:
        md += ["## Next to the paper (Tables 1-4; raw score)\n",
               "Episode return, mean ± std over seeds (population std) of the final "
               "evaluation; the paper's mean ± std (its table in brackets; it has no BC or "
               "MA-TD3+BC). shift: the evaluation environment (– standard; `speed`: Table 2, "
               "`R`/`E`: Table 4). An unfinished run shows its newest evaluation, which is not "
               "a final score.\n", paper_table(paper_rows), ""]
    if "fractions" in t:
        md += ["## Data fractions (Fig. 5)\n", t["fractions"], ""]
    if "ablations" in t:
        md += ["## DOM2 ablations (Fig. 6)\n", t["ablations"], ""]
    act = acting_rows(records)
    if act:
        md += ["## Acting variants (the same finished runs, evaluated again)\n",
               "`experiments.evaluate --act_candidates=K`: the final parameters act by choosing "
               "one of K policy samples by the critics' min Q (Diffusion-QL's evaluation; "
               "MA-SfBC's selection rule; for MA-SfBC, K behaviour samples, K=1: none chosen) "
               "instead of as trained. Baseline: the same runs re-evaluated as trained (DOM2: "
               "one sample; the same episodes and key, so the paired difference is the "
               "acting's alone) where that exists, else the run's own final evaluation "
               "(another key: the difference then also holds evaluation noise). Not part of "
               "the tables above.\n", acting_table(act), ""]
    if not groups:
        md += ["No finished runs.\n"]
    other = [r for r in records if r["status"] != "done"]
    if other:
        md += ["## Unfinished or unreadable runs\n",
               _table(["workdir", "status"],
                      [[os.path.relpath(r["workdir"], root), r["status"]] for r in other]), ""]
    if figures:
        md += ["## Figures\n"] + [f"![{os.path.splitext(p)[0]}]({p})" for p in figures] + [""]
    md += ["## Runs per group\n",
           _table(["task", "quality", "variant", "seeds", "runs"],
                  [[g["env"], g["quality"], variant_label(g), str(g["num_seeds"]),
                    str(g["num_runs"])] for g in groups]), ""]
    return "\n".join(md) + "\n"


# -------------------------------------------------------------------------------- figures

def _plt():
    matplotlib.use("Agg")
    return plt


def _save(fig, path, rect=None):
    if fig.get_layout_engine() is None:
        fig.tight_layout(rect=rect)
    fig.savefig(path, dpi=110)
    _plt().close(fig)


def _budget_label(updates, planned=None, finished=True) -> str:
    """A bar's budget in updates: "30k"; "2k/6k" for a run stopped at 2k of 6k planned."""
    updates = [u for u in updates or [] if u is not None]
    planned = [u for u in planned or [] if u is not None]
    if finished or not planned or planned == updates:
        return _updates(updates)
    return f"{_updates(updates)}/{_updates(planned)}"


def _label_bar(ax, x, mean, sd, text):
    """``text`` just beyond the end of a bar and its error bar (above it, or below a negative
    one), rotated to fit the bar's width."""
    up = mean >= 0
    end = mean + (sd or 0.0) if up else mean - (sd or 0.0)
    ax.annotate(text, (x, end), xytext=(0, 2 if up else -2), textcoords="offset points",
                ha="center", va="bottom" if up else "top", rotation=90, fontsize=7)


def bar_figure(env, gs, metric):
    """``bars_<env>.png``: final score per quality (x) and algorithm (colour) of the groups
    ``gs`` of one env, error bars = std, each bar labelled with its budget (updates); a title
    line names the qualities whose bars differ in budget. Returns the open figure; its legend
    (``fig.legends[0]``) sits right of the axes, clear of the title."""
    plt = _plt()
    qs = sorted({g["quality"] for g in gs}, key=lambda q: (_index(QUALITIES, q), q))
    algos = sorted({g["algo"] for g in gs}, key=lambda a: (_index(ALGO_ORDER, a), a))
    width = 0.8 / len(algos)
    fig, ax = plt.subplots(figsize=(max(6.5, 1.6 * len(qs) + 3), 3.8), layout="constrained")
    budgets = {q: set() for q in qs}
    for j, a in enumerate(algos):
        xs, ms, ss = [], [], []
        for i, q in enumerate(qs):
            g = next((x for x in gs if x["quality"] == q and x["algo"] == a), None)
            if g is not None:
                xs.append(i - 0.4 + width * (j + 0.5))
                ms.append(g["final_mean"])
                ss.append(g["final_std"])
                budgets[q].add(tuple(g["protocol"]["num_updates"]))
                _label_bar(ax, xs[-1], ms[-1], ss[-1],
                           _budget_label(g["protocol"]["num_updates"]))
        ax.bar(xs, ms, width, yerr=ss, capsize=3, label=ALGO_LABELS.get(a, a), color=f"C{j}")
    ax.margins(y=0.12)
    ax.set_xticks(range(len(qs)))
    ax.set_xticklabels(qs)
    ax.set_ylabel("normalised score" if metric == "normalised" else "episode score")
    title = f"{env}: final score, mean ± std over seeds\nover each bar: its updates"
    differ = [q for q in qs if len(budgets[q]) > 1]
    if differ:
        title += f"; budgets differ in: {', '.join(differ)}"
    fig.suptitle(title, fontsize=10, color="C3" if differ else "black")
    fig.legend(fontsize=8, loc="outside right upper", frameon=False)
    ax.grid(axis="y", alpha=0.3)
    return fig


def bar_charts(groups, metric, out) -> List[str]:
    files = []
    main = [g for g in groups if g["ablation"] in (None, "full") and g["fraction"] == 1.0
            and g["final_mean"] is not None]
    for env in sorted({g["env"] for g in main}, key=lambda e: (_index(ENVS, e), e)):
        fig = bar_figure(env, [g for g in main if g["env"] == env], metric)
        name = f"bars_{env}.png"
        _save(fig, os.path.join(out, name))
        files.append(name)
    return files


def paper_panels(rows: List[Dict]) -> Dict[str, List[Dict]]:
    """The ``paper_comparison`` rows regrouped for ``paper_charts``: per env, one panel per
    (shift, quality) we ran, in table order, holding a bar pair per algorithm (ours, or None;
    the paper's, or None) with our run's updates (reached, and planned; None without ours).
    The paper's algorithms we have not run yet appear with ours None, so a panel shows what is
    missing as well as what differs."""
    bars: Dict[str, Dict[tuple, Dict]] = {}  # env -> (shift, quality) -> algo -> bar pair
    for r in rows:
        panel = bars.setdefault(r["env"], {}).setdefault((r["shift"], r["quality"]), {})
        if not panel:
            for a in paper_tables.ALGOS:
                paper = paper_tables.paper_score(r["env"], r["quality"], a, r["shift"])
                if paper:
                    panel[a] = {"ours": None, "paper": paper, "updates": None,
                                "planned_updates": None}
        panel[r["algo"]] = {
            "ours": (r["mean"], r["std"], r["finished"]),
            "paper": (r["paper_mean"], r["paper_std"]) if r["paper_mean"] is not None else None,
            "updates": r["updates"], "planned_updates": r["planned_updates"]}
    return {env: [{"shift": shift, "quality": q,
                   "bars": [dict(algo=a, **panel[a]) for a in
                            sorted(panel, key=lambda a: (_index(ALGO_ORDER, a), a))]}
                  for (shift, q), panel in env_bars.items()]
            for env, env_bars in bars.items()}


def paper_figure(env, panels):
    """``paper_<env>.png`` from ``paper_panels(rows)[env]``: a panel per (evaluation
    environment, quality), ours beside the paper's per algorithm, each of our bars labelled
    with its budget ("2k/6k": unfinished at 2k of 6k planned), a panel title saying when our
    bars differ in budget. The legend (``fig.legends[0]``) sits below the panels and lists
    only what is drawn (no "unfinished" entry when every run finished). Returns the open
    figure."""
    plt = _plt()
    ncol = min(len(panels), 4)
    nrow = -(-len(panels) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(max(3.6 * ncol, 6.0), 3.2 * nrow + 0.8),
                             squeeze=False, layout="constrained")
    drawn = set()
    for ax, p in zip(axes.flat, panels):
        budgets = set()
        for i, b in enumerate(p["bars"]):
            if b["ours"] is not None:
                m, sd, finished = b["ours"]
                drawn.add("final" if finished else "unfinished")
                ax.bar(i - 0.2, m, 0.4, yerr=sd, capsize=2, color="C0",
                       alpha=1.0 if finished else 0.45, hatch=None if finished else "//")
                _label_bar(ax, i - 0.2, m, sd,
                           _budget_label(b["updates"], b["planned_updates"], finished))
                budgets.add(tuple(b["planned_updates"] or b["updates"] or ()))
            if b["paper"] is not None:
                drawn.add("paper")
                ax.bar(i + 0.2, b["paper"][0], 0.4, yerr=b["paper"][1], capsize=2,
                       color="0.6")
        ax.margins(y=0.15)
        ax.set_xticks(range(len(p["bars"])))
        ax.set_xticklabels([ALGO_LABELS.get(b["algo"], b["algo"]) for b in p["bars"]],
                           rotation=30, fontsize=7, ha="right")
        shift = p["shift"] or "standard"
        title = f"{p['quality']}, {shift} env"
        if len(budgets) > 1:
            title += "\nours: budgets differ"
        ax.set_title(title, fontsize=9, color="C3" if len(budgets) > 1 else "black")
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("episode score")
    handles = [h for key, h in (
        ("final", Patch(color="C0", label="ours (final)")),
        ("unfinished", Patch(facecolor="C0", alpha=0.45, hatch="//",
                             label="ours (unfinished: newest eval)")),
        ("paper", Patch(color="0.6", label="paper (Tables 1-4)"))) if key in drawn]
    fig.legend(handles=handles, fontsize=7, ncol=len(handles), loc="outside lower center",
               frameon=False)
    fig.suptitle(f"{env}: ours next to the paper, mean ± std\nover our bars: updates "
                 "(reached/planned where unfinished)", fontsize=9)
    return fig


def paper_charts(rows: List[Dict], out) -> List[str]:
    files = []
    for env, panels in sorted(paper_panels(rows).items(),
                              key=lambda kv: (_index(ENVS, kv[0]), kv[0])):
        fig = paper_figure(env, panels)
        name = f"paper_{env}.png"
        _save(fig, os.path.join(out, name))
        files.append(name)
    return files


def _run_curves(rec, metric):
    """(steps, [num_seeds, T] values) of a finished run's metrics.csv eval columns."""
    rows = read_metrics_csv(os.path.join(rec["workdir"], "metrics.csv"))
    cols = [k for k in (rows[0] if rows else {}) if k.startswith("eval/seed")]
    if not cols:
        return None
    steps = [int(r["step"]) for r in rows]
    vals = []
    for c in cols:
        v = [r.get(c, math.nan) for r in rows]
        if metric == "normalised":
            v = [normalise(x, rec["refs"]) for x in v]
            if any(x is None for x in v):
                return None
        vals.append(v)
    return steps, vals


def learning_curves(records, metric, out) -> List[str]:
    plt = _plt()
    files = []
    done = [r for r in records if r["status"] == "done"]
    tasks = sorted({(r["env"], r["quality"]) for r in done},
                   key=lambda t: (_index(ENVS, t[0]), t[0], _index(QUALITIES, t[1]), t[1]))
    for env, q in tasks:
        variants: Dict[tuple, List] = {}
        for r in done:
            if (r["env"], r["quality"]) == (env, q):
                c = _run_curves(r, metric)
                if c is not None:
                    variants.setdefault(group_key(r), []).append(c)
        if not variants:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        for j, key in enumerate(sorted(variants, key=_sort_key)):
            curves = variants[key]
            steps = sorted(set.intersection(*[set(s) for s, _ in curves]))
            if not steps:
                continue
            seeds = np.array([[dict(zip(s, row))[t] for t in steps]
                              for s, v in curves for row in v], float)
            m, sd = np.nanmean(seeds, 0), np.nanstd(seeds, 0)
            label = variant_label(dict(zip(("env", "quality", "algo", "ablation", "fraction"),
                                           key)))
            ax.plot(steps, m, color=f"C{j % 10}", lw=2, label=f"{label} ({len(seeds)})")
            ax.fill_between(steps, m - sd, m + sd, color=f"C{j % 10}", alpha=0.2)
        ax.set_xlabel("updates")
        ax.set_ylabel("normalised score" if metric == "normalised" else "episode score")
        ax.set_title(f"{env} {q}: evaluation, mean ± std over seeds", fontsize=10)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        name = f"curves_{env}_{q}.png"
        _save(fig, os.path.join(out, name))
        files.append(name)
    return files


# ---------------------------------------------------------------------------------- main

def make_report(root, out: Optional[str] = None, metric: str = "normalised",
                strict: bool = False) -> Dict:
    """Writes report.md, report.json and the PNGs into ``out`` (default ``root``); returns the
    report.json content. ``root``: a directory, or a list of them (one report over all;
    ``out`` is then required). A table row whose algorithms differ in budget, data,
    preprocessing or evaluation episodes is marked "not comparable" (no best is named);
    ``strict`` refuses such a report instead (ValueError, nothing written)."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    roots = [root] if isinstance(root, str) else list(root)
    if not roots:
        raise ValueError("no --root given")
    for r in roots:
        if not os.path.isdir(r):
            raise FileNotFoundError(f"--root {r!r} is not a directory")
    if out is None and len(roots) > 1:
        raise ValueError("--out is required with several roots")
    out = out or roots[0]
    records = [rec for r in roots for rec in collect(r)]
    root = roots[0] if len(roots) == 1 else os.path.commonpath([os.path.abspath(r)
                                                                 for r in roots])
    groups = aggregate(records, metric)
    protocols = row_protocols(groups)
    unequal = [r for r in protocols if not r["comparable"]]
    if strict and unequal:
        raise ValueError("rows compare runs trained or evaluated differently (--strict): "
                         + "; ".join(f"{r['env']} {r['quality']}: "
                                     + _describe_differences(r["differences"]) for r in unequal))
    paper_rows = paper_comparison(records)
    claim_rows = claims(aggregate(records, "score"), paper_rows)
    os.makedirs(out, exist_ok=True)
    figures = (bar_charts(groups, metric, out) + learning_curves(records, metric, out)
               + paper_charts(paper_rows, out))
    atomic_write_text(os.path.join(out, "report.md"),
                      markdown(groups, records, metric, figures, root, paper_rows,
                               claim_rows))
    rep = {"root": os.path.abspath(root), "roots": [os.path.abspath(r) for r in roots],
           "metric": metric, "groups": groups, "row_protocols": protocols,
           "paper_comparison": paper_rows, "claims": claim_rows,
           "acting_variants": acting_rows(records),
           "runs": [{k: r.get(k) for k in ("workdir", "status", "env", "quality", "algo",
                                           "ablation", "fraction")} for r in records],
           "figures": figures}
    write_json(os.path.join(out, "report.json"), rep)
    return rep


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if FLAGS.out:
        try:
            os.makedirs(FLAGS.out, exist_ok=True)
        except OSError as e:
            raise SystemExit(f"error: cannot write the report to --out={FLAGS.out} "
                             f"({e.strerror or e})")
    try:
        rep = make_report(FLAGS.root, FLAGS.out, FLAGS.metric, FLAGS.strict)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}")
    out = FLAGS.out or FLAGS.root[0]
    n_done = sum(r["status"] == "done" for r in rep["runs"])
    print(f"{n_done} finished run(s) of {len(rep['runs'])} in {len(rep['groups'])} group(s); "
          f"wrote {os.path.join(out, 'report.md')}, report.json and {len(rep['figures'])} "
          "figure(s)")


if __name__ == "__main__":
    _define_flags()
    app.run(main)
