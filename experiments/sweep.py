r"""Run a grid of training runs (algorithms x tasks x qualities x fractions x ablations x seeds).

  python -m experiments.sweep --algos=dom2,bc --envs=mpe_spread --qualities=expert,medium \
      --seeds=0,1,2 --preset=quick --generate_missing --root=runs/sweep
  python -m experiments.sweep --algos=dom2 --ablations=full,no_q,no_bc,mlp_noise,no_aug ...
  python -m experiments.sweep --algos=dom2,macql --fractions=1.0,0.5,0.1 ...         (Fig. 5)
  python -m experiments.report --root=runs/sweep                        (tables and plots)

Every run is one ``python -m experiments.train`` subprocess (a crash does not stop the sweep)
with its own deterministic workdir

  ROOT/<env>/<quality>/<algo>[-<ablation>][-frac<f>]/seed<k>[-n<K>]

(``-n<K>`` when ``--num_seeds=K`` > 1 seeds are vmapped inside each run; seed k is the
launcher's ``--seed``). Runs whose results.json is complete are skipped; an unfinished one is
relaunched and the launcher resumes it from its newest checkpoint. Runs go one after another;
inside a run the launcher vmaps (and shards over local devices) its seeds. Each run's output
goes to ``<workdir>/sweep.log``; ``ROOT/sweep.json`` lists every run with its status, merged
over the sweeps that used ROOT (several may run at once, e.g. one per core: each rewrites
its own runs' entries under a file lock and keeps the others'). The exit code is non-zero when
any run failed (they are listed at the end). SIGTERM, like Ctrl-C, stops the running training
too and marks it "interrupted" (its newest checkpoint is resumed by the next sweep).
"""
from __future__ import annotations

import datetime
import fcntl
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from typing import Dict, List, NamedTuple

from absl import app, flags

from dom2_jax.registry import ALGOS, QUALITIES, TASKS as ENVS
from dom2_jax.training.reporting import write_json

# The paper's Fig. 6 ablations of DOM2, as config overrides (experiments/configs/dom2.py and
# dom2_jax.algos.dom2.default_config). "full" is plain DOM2 and shares the "dom2" workdir.
ABLATIONS: Dict[str, Dict[str, object]] = {
    "full": {},
    "no_q": {"agent.eta": 0.0},                # w/o policy improvement (Q term)
    "no_bc": {"agent.use_bc_loss": False},     # w/o diffusion (BC) loss
    "mlp_noise": {"agent.noise_net": "mlp"},   # MLP noise network instead of the residual one
    "no_aug": {"augment": False},              # w/o trajectory data augmentation (Alg. 1)
}
ABLATION_ALGOS = ("dom2",)

FLAGS = flags.FLAGS


def _define_flags():
    """CLI flags, defined only when run as a script (the module stays importable next to
    the other launchers, whose flag names overlap)."""
    flags.DEFINE_list("algos", ["dom2", "bc"], f"Algorithms, from {ALGOS}.")
    flags.DEFINE_list("envs", ["mpe_spread"], f"Tasks, from {ENVS}.")
    flags.DEFINE_list("qualities", ["expert", "medium"], f"Dataset qualities, from {QUALITIES}.")
    flags.DEFINE_list("seeds", ["0", "1", "2"], "Base seeds; each is one run (launcher --seed).")
    flags.DEFINE_integer("num_seeds", 1, "Seeds vmapped inside each run (launcher --num_seeds).")
    flags.DEFINE_list("fractions", ["1.0"], "Data fractions (config.data_fraction; Fig. 5).")
    flags.DEFINE_list("ablations", [], "DOM2 ablations (Fig. 6), from "
                      f"{tuple(ABLATIONS)}; other algorithms run once. Empty: full DOM2 only.")
    flags.DEFINE_enum("preset", None, ["smoke", "quick", "cpu"],
                      "Launcher --preset for every run.")
    flags.DEFINE_string("root", "runs/sweep", "Root directory of the sweep's workdirs.")
    flags.DEFINE_string("data_root", None, "Launcher --data_root (default: the launcher's).")
    flags.DEFINE_bool("generate_missing", False, "Launcher --generate_missing (datasets).")
    flags.DEFINE_bool("dry_run", False, "Print the run list (and statuses) and exit.")
    flags.DEFINE_string("extra", "", "Extra launcher flags for every run, e.g. "
                        "--extra='--config.num_updates=20000 --shift=speed'. They are not part of "
                        "the workdir name: use a new --root for a different set.")


class Run(NamedTuple):
    env: str
    quality: str
    algo: str
    ablation: str | None
    fraction: float
    seed: int
    num_seeds: int

    @property
    def variant(self) -> str:
        name = self.algo + (f"-{self.ablation}" if self.ablation not in (None, "full") else "")
        return name + (f"-frac{self.fraction:g}" if self.fraction != 1.0 else "")

    def relpath(self) -> str:
        seed = f"seed{self.seed}" + (f"-n{self.num_seeds}" if self.num_seeds > 1 else "")
        return os.path.join(self.env, self.quality, self.variant, seed)

    def overrides(self) -> Dict[str, object]:
        out = dict(ABLATIONS[self.ablation]) if self.ablation else {}
        if self.fraction != 1.0:
            out["data_fraction"] = self.fraction
        return out

    def args(self, workdir: str, preset=None, data_root=None, generate_missing=False,
             extra: List[str] = ()) -> List[str]:
        a = [f"--algo={self.algo}", f"--env={self.env}", f"--quality={self.quality}",
             f"--seed={self.seed}", f"--num_seeds={self.num_seeds}", f"--workdir={workdir}",
             "--progress=false"]
        if preset:
            a.append(f"--preset={preset}")
        if data_root:
            a.append(f"--data_root={data_root}")
        if generate_missing:
            a.append("--generate_missing")
        a += [f"--config.{k}={v}" for k, v in self.overrides().items()]
        return a + list(extra)


def _check(values, allowed, what):
    bad = [v for v in values if v not in allowed]
    if bad:
        raise app.UsageError(f"unknown {what} {bad}; expected some of {list(allowed)}")


def _number(kind, text, flag):
    """``kind(text)``, or a one-line usage error naming the flag."""
    try:
        return kind(text)
    except (TypeError, ValueError):
        raise app.UsageError(f"--{flag} takes comma-separated {kind.__name__} values, got "
                             f"{text!r}") from None


def make_runs(algos, envs, qualities, seeds, num_seeds=1, fractions=(1.0,), ablations=()):
    """The sweep's run list in a fixed order (env, quality, algo, ablation, fraction, seed).
    Ablations apply to DOM2 only ("full" is implied when none is given); duplicates are dropped."""
    _check(algos, ALGOS, "algos")
    _check(envs, ENVS, "envs")
    _check(qualities, QUALITIES, "qualities")
    _check(ablations, ABLATIONS, "ablations")
    fractions = [_number(float, f, "fractions") for f in fractions]
    seeds = [_number(int, s, "seeds") for s in seeds]
    for f in fractions:
        if not 0.0 < f <= 1.0:
            raise app.UsageError(f"fractions must be in (0, 1], got {f}")
    if num_seeds < 1:
        raise app.UsageError(f"--num_seeds must be >= 1, got {num_seeds}")
    runs, seen = [], set()
    for env in envs:
        for q in qualities:
            for algo in algos:
                abls = (list(ablations) or [None]) if algo in ABLATION_ALGOS else [None]
                for abl in abls:
                    for frac in fractions:
                        for s in seeds:
                            r = Run(env, q, algo, None if abl == "full" else abl, frac, int(s),
                                    num_seeds)
                            if r.relpath() not in seen:
                                seen.add(r.relpath())
                                runs.append(r)
    return runs


def run_status(workdir: str, num_seeds: int) -> str:
    """'done' (results.json parses and holds every seed's final score), 'partial' (the workdir
    exists: the launcher will resume it) or 'new'."""
    res = os.path.join(workdir, "results.json")
    if os.path.exists(res):
        try:
            r = json.load(open(res))
            seeds = r.get("seeds") or []
            if (r.get("num_seeds") == num_seeds and len(seeds) == num_seeds
                    and all(s.get("final_score_mean") is not None for s in seeds)):
                return "done"
        except (OSError, ValueError):
            pass
        return "partial"
    return "partial" if os.path.isdir(workdir) and os.listdir(workdir) else "new"


def _write_sweep_json(root, entries, started, command):
    """ROOT/sweep.json: this sweep's entries replace their workdirs' old ones; runs of other
    sweeps into ROOT are kept (an unreadable old file is replaced). "command" and "started"
    are those of the sweep that wrote last; each entry names its own ``sweep_command``."""
    path = os.path.join(root, "sweep.json")
    mine = {e["workdir"] for e in entries}
    with open(os.path.join(root, ".sweep.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        try:
            with open(path) as f:
                others = [e for e in json.load(f).get("runs", []) if e.get("workdir") not in mine]
        except (OSError, ValueError, AttributeError):
            others = []
        write_json(path, {"command": command, "started": started,
                          "updated": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                          "runs": others + entries})


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _fmt(seconds):
    return str(datetime.timedelta(seconds=int(seconds)))


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    runs = make_runs(FLAGS.algos, FLAGS.envs, FLAGS.qualities, FLAGS.seeds, FLAGS.num_seeds,
                     FLAGS.fractions, FLAGS.ablations)
    if not runs:
        raise app.UsageError("empty sweep")
    extra = shlex.split(FLAGS.extra)
    root = FLAGS.root
    command = "python -m experiments.sweep " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    entries = []
    for r in runs:
        wd = os.path.join(root, r.relpath())
        entries.append({"workdir": wd, "env": r.env, "quality": r.quality, "algo": r.algo,
                        "ablation": r.ablation or ("full" if r.algo in ABLATION_ALGOS else None),
                        "fraction": r.fraction, "seed": r.seed, "num_seeds": r.num_seeds,
                        "variant": r.variant, "status": run_status(wd, r.num_seeds),
                        "sweep_command": command,
                        "args": r.args(wd, FLAGS.preset, FLAGS.data_root,
                                       FLAGS.generate_missing, extra)})
    if FLAGS.dry_run:
        for i, e in enumerate(entries, 1):
            print(f"[{i}/{len(entries)}] {e['status']:8s} {e['workdir']}")
            print("    python -m experiments.train " + " ".join(shlex.quote(a) for a in e["args"]))
        return
    os.makedirs(root, exist_ok=True)
    # SIGTERM as Ctrl-C: subprocess.call then kills the training instead of orphaning it
    signal.signal(signal.SIGTERM, _interrupt)
    started = datetime.datetime.now(datetime.timezone.utc).isoformat()
    t0 = time.time()
    n = len(entries)
    for i, e in enumerate(entries, 1):
        head = f"[{i}/{n}] {e['workdir']}"
        if e["status"] == "done":
            print(f"{head}: done, skipped", flush=True)
            e["status"] = "skipped (done)"
            continue
        print(f"{head}: {'resuming' if e['status'] == 'partial' else 'starting'} "
              f"(elapsed {_fmt(time.time() - t0)})", flush=True)
        e["status"] = "running"
        _write_sweep_json(root, entries, started, command)
        os.makedirs(e["workdir"], exist_ok=True)
        log_path = os.path.join(e["workdir"], "sweep.log")
        tr = time.time()
        with open(log_path, "a") as log:
            log.write(f"\n# {datetime.datetime.now().isoformat()} python -m experiments.train "
                      + " ".join(shlex.quote(a) for a in e["args"]) + "\n")
            log.flush()
            try:
                rc = subprocess.call([sys.executable, "-m", "experiments.train"] + e["args"],
                                     stdout=log, stderr=subprocess.STDOUT)
            except KeyboardInterrupt:
                e["status"] = "interrupted"
                _write_sweep_json(root, entries, started, command)
                raise
        e["run_s"] = round(time.time() - tr, 1)
        e["returncode"] = rc
        if rc == 0 and run_status(e["workdir"], e["num_seeds"]) == "done":
            e["status"] = "done"
            res = json.load(open(os.path.join(e["workdir"], "results.json")))
            e["final_score_mean_over_seeds"] = res.get("final_score_mean_over_seeds")
            print(f"{head}: done in {_fmt(e['run_s'])}, final score "
                  f"{res.get('final_score_mean_over_seeds', float('nan')):.1f} "
                  f"(elapsed {_fmt(time.time() - t0)})", flush=True)
        else:
            e["status"] = "failed"
            tail = open(log_path).read().strip().splitlines()[-1:] or [""]
            e["error"] = tail[0][-300:]
            print(f"{head}: FAILED (exit {rc}) after {_fmt(e['run_s'])}: {e['error']}\n"
                  f"    log: {log_path}", flush=True)
        _write_sweep_json(root, entries, started, command)
    _write_sweep_json(root, entries, started, command)
    failed = [e for e in entries if e["status"] == "failed"]
    counts = {}
    for e in entries:
        counts[e["status"]] = counts.get(e["status"], 0) + 1
    print(f"sweep finished in {_fmt(time.time() - t0)}: "
          + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
          + f"; {os.path.join(root, 'sweep.json')}")
    if failed:
        print(f"{len(failed)} run(s) failed:")
        for e in failed:
            print(f"  {e['workdir']} (exit {e['returncode']}): {e['error']}\n"
                  f"    log: {os.path.join(e['workdir'], 'sweep.log')}")
        raise SystemExit(1)


if __name__ == "__main__":
    _define_flags()
    app.run(main)
