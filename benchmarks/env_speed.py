r"""Environment steps per second, JAX versus the reference simulators, in one table and plot.

    python -m benchmarks.env_speed                       # MPE and MJX, CPU-sized batches
    python -m benchmarks.env_speed --which=mpe           # MPE only
    python -m benchmarks.env_speed --device              # accelerator: large batches, label
    python -m benchmarks.env_speed --quick --which=mpe   # seconds (tests)

Runs the measurements of ``benchmarks.env_speed_mpe`` (vmapped JAX MPE vs mpe2 in a Python
loop) and ``benchmarks.env_speed_mjx`` (batched MJX HalfCheetah 2x3 vs C MuJoCo) over several
batch sizes, and writes ``benchmarks/results/env_speed[_<device>].{json,md,png}`` (``--quick``:
under ``runs/benchmarks/``; ``--out`` to change the directory): one combined table and a plot
of env steps/s versus batch (JAX lines; the references step one environment at a time in
Python, so they are horizontal lines). One env step = all agents of one environment act once
(HalfCheetah: 5 physics steps).

Sizes (pass-through to the two benchmarks): ``--mpe_batch_sizes``, ``--mpe_reps``,
``--mpe2_episodes``, ``--mpe_scenarios``; ``--mjx_batch_sizes``, ``--mjx_steps``, ``--mjx_reps``,
``--c_steps``, ``--fast_compile``. On CPU the MJX part defaults to small batches (16 and 64,
20 steps): each MJX batch size costs ~40-100 s of XLA compile on a 2-core CPU and MJX is slower
than C MuJoCo there anyway; the larger CPU sizes are in ``env_speed_mjx.md`` (run
``python -m benchmarks.env_speed_mjx``). ``--device`` labels the files with
``jax.devices()[0].device_kind`` and uses batches up to 65536.

JSON keys: ``benchmark, device_kind, device_label, system, command, settings, mpe`` (rows:
``scenario, env, batch, jax_steps_per_s, compile_s, reference, reference_steps_per_s,
speedup``), ``mjx`` (rows: ``batch, jax_steps_per_s, steps_per_cpu_s, compile_s,
reference_steps_per_s, speedup``, plus ``c_loop``, ``cpu_batch``), ``not_run``.
"""
from __future__ import annotations

import dataclasses
import os
import platform
import time
from typing import Optional, Sequence

import jax
import matplotlib
import matplotlib.pyplot as plt
from absl import app, flags

from benchmarks import cli, env_speed_mjx, env_speed_mpe
from benchmarks.outputs import default_out
from benchmarks.solver_steps import device_label
from dom2_jax.envs import make
from dom2_jax.training.reporting import system_info, write_json

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCENARIO_KEYS = {"spread": 0, "tag": 1, "world_comm": 2, "world": 3}


def _ints(s):
    return [int(x) for x in s.split(",") if x]


@dataclasses.dataclass
class Options:
    """The command-line flags (``--helpshort``); ``run(Options(...))`` from Python. ``None``:
    the default that depends on --quick / --device (``resolve``)."""

    which: str = "mpe,mjx"                  # comma list (or a list from Python)
    mpe_scenarios: Optional[str] = None     # all (spread with --quick)
    mpe_batch_sizes: Optional[str] = None
    mpe_reps: Optional[int] = None
    mpe2_episodes: Optional[int] = None
    mjx_batch_sizes: Optional[str] = None
    mjx_steps: Optional[int] = None
    mjx_reps: Optional[int] = None
    c_steps: Optional[int] = None
    fast_compile: bool = False
    device: bool = False
    quick: bool = False
    out: Optional[str] = None               # benchmarks/results (runs/benchmarks with --quick)


def define_flags(fv):
    """The script's flags on ``fv`` (``flags.FLAGS`` when run as a script; see benchmarks.cli)."""
    kw = dict(flag_values=fv)
    flags.DEFINE_string("which", Options.which, "Comma-separated subset of mpe,mjx.", **kw)
    flags.DEFINE_string("mpe_scenarios", None, "Comma-separated subset of "
                        "spread,tag,world_comm,world (default all; spread with --quick).", **kw)
    flags.DEFINE_string("mpe_batch_sizes", None, "Default 64,256,1024,4096 (CPU), "
                        "1024,4096,16384,65536 (--device), 8,32 (--quick).", **kw)
    flags.DEFINE_integer("mpe_reps", None, "Timed JAX rollouts (default 5; 1 --quick).", **kw)
    flags.DEFINE_integer("mpe2_episodes", None, "mpe2 episodes (default 40; 2 --quick).", **kw)
    flags.DEFINE_string("mjx_batch_sizes", None, "Default 16,64 (CPU: compile ~40-100 s each), "
                        "4096,16384,65536 (--device), 4,8 (--quick).", **kw)
    flags.DEFINE_integer("mjx_steps", None, "Env steps per MJX rollout (default 20; 50 "
                         "--device; 5 --quick).", **kw)
    flags.DEFINE_integer("mjx_reps", None, "Timed MJX rollouts, median (default 3; 1 --quick).",
                         **kw)
    flags.DEFINE_integer("c_steps", None, "C MuJoCo loop env steps (default 5000; 200 --quick).",
                         **kw)
    flags.DEFINE_bool("fast_compile", False, "MJX at xla_backend_optimization_level=0 (faster "
                      "compile, slower steps).", **kw)
    flags.DEFINE_bool("device", False, "Accelerator run: label files with the device kind, "
                      "large batches.", **kw)
    flags.DEFINE_bool("quick", False, "Tiny sizes (tests).", **kw)
    flags.DEFINE_string("out", None, "Output directory (default benchmarks/results; "
                        "runs/benchmarks with --quick).", **kw)


def _list(v, conv=str):
    return [conv(x) for x in v.split(",") if x] if isinstance(v, str) else [conv(x) for x in v]


def resolve(opts: Options) -> Options:
    """``opts`` with every ``None`` replaced by its --quick / --device default and the comma
    lists split (ValueError on an unknown part or scenario); resolving twice changes nothing."""
    args = dataclasses.replace(opts)
    q, d = args.quick, args.device
    args.which = _list(args.which)
    bad = [w for w in args.which if w not in ("mpe", "mjx")]
    if bad:
        raise ValueError(f"--which: unknown {bad}; expected mpe and/or mjx")
    if args.out is None:
        args.out = default_out(q)
    args.mpe_scenarios = _list(args.mpe_scenarios or ("spread" if q else ",".join(SCENARIO_KEYS)))
    bad = [s for s in args.mpe_scenarios if s not in SCENARIO_KEYS]
    if bad:
        raise ValueError(f"--mpe_scenarios: unknown {bad}; expected some of "
                         f"{list(SCENARIO_KEYS)}")
    args.mpe_batch_sizes = _list(args.mpe_batch_sizes or (
        "8,32" if q else ("1024,4096,16384,65536" if d else "64,256,1024,4096")), int)
    args.mjx_batch_sizes = _list(args.mjx_batch_sizes or (
        "4,8" if q else ("4096,16384,65536" if d else "16,64")), int)
    for name, default in (("mpe_reps", 1 if q else 5), ("mpe2_episodes", 2 if q else 40),
                          ("mjx_steps", 5 if q else (50 if d else 20)),
                          ("mjx_reps", 1 if q else 3), ("c_steps", 200 if q else 5000)):
        if getattr(args, name) is None:
            setattr(args, name, default)
    return args


def parse_args(argv):
    """Resolved options from a list of flags, read with the script's flag definitions (without
    touching the global absl flags)."""
    return resolve(cli.parse(define_flags, Options, argv))


def run_mpe(args, log=print):
    bm = env_speed_mpe
    rows, skipped = [], []
    for key in args.mpe_scenarios:
        label, kwargs, module = bm.SCENARIOS[SCENARIO_KEYS[key]]
        kwargs = dict(kwargs)
        env = make(kwargs.pop("name"), **kwargs)
        ref = None
        if module:
            try:
                ref = bm.mpe2_steps_per_second(module, args.mpe2_episodes)
            except ImportError as e:  # mpe2 is a test extra, not an install requirement
                log(f"MPE {key}: mpe2 reference not measured ({e}); pip install -e .[test]")
                skipped.append({"part": f"mpe2 reference for {key}", "reason": (
                    f"mpe2 could not be imported ({e}); install the test extra")})
        ref_sps = ref["steps_per_s"] if ref else None
        for batch in args.mpe_batch_sizes:
            ours = bm.jax_steps_per_second(env, batch, args.mpe_reps)
            rows.append({"scenario": label, "key": key, "env": env.name, "batch": batch,
                         "jax_steps_per_s": ours["steps_per_s"], "compile_s": ours["compile_s"],
                         "reference": f"mpe2 {module}" if module else None,
                         "reference_steps_per_s": ref_sps,
                         "speedup": ours["steps_per_s"] / ref_sps if ref_sps else None})
            log(f"MPE {key:10s} batch {batch:6d}: JAX {ours['steps_per_s']:12,.0f} steps/s"
                + (f", mpe2 {ref_sps:8,.0f} (x{ours['steps_per_s'] / ref_sps:,.0f})"
                   if ref_sps else ""))
    return {"rows": rows, "episode_length": 25, "not_run": skipped,
            "method": "jit(vmap) over batch envs of reset + lax.scan of 25 steps, random "
                      "actions, timed after compilation; mpe2: parallel_env("
                      "continuous_actions=True), one env in a Python loop."}


def run_mjx(args, log=print):
    bm = env_speed_mjx
    env = make("mamujoco_halfcheetah_2x3")
    options = {"xla_backend_optimization_level": 0} if args.fast_compile else None
    c_loop = bm.c_loop_steps_per_second(args.c_steps)
    log(f"MJX reference: C MuJoCo, 1 env, Python loop: {c_loop['steps_per_s']:,.0f} steps/s")
    cpu_batch = bm.cpu_batch_steps_per_second(64, max(10, args.c_steps // 64))
    rows = []
    for batch in args.mjx_batch_sizes:
        r = bm.mjx_steps_per_second(env, batch, args.mjx_steps, args.mjx_reps, options)
        rows.append({"batch": batch, "jax_steps_per_s": r["steps_per_s"],
                     "steps_per_cpu_s": r["steps_per_cpu_s"], "compile_s": r["compile_s"],
                     "reference": "C MuJoCo mj_step, 1 env, Python loop",
                     "reference_steps_per_s": c_loop["steps_per_s"],
                     "speedup": r["steps_per_s"] / c_loop["steps_per_s"]})
        log(f"MJX batch {batch:6d}: {r['steps_per_s']:12,.0f} steps/s (compile "
            f"{r['compile_s']:.0f} s), x{rows[-1]['speedup']:.2f} vs the C loop")
    return {"rows": rows, "c_loop": c_loop, "cpu_batch": cpu_batch, "steps": args.mjx_steps,
            "fast_compile": args.fast_compile, "frame_skip": bm.FRAME_SKIP,
            "method": f"jit(vmap(reset) + lax.scan of {args.mjx_steps} steps), random "
                      "actions, median of timed rollouts after compilation; reference: "
                      "mj_step(m, d, 5) per env step for one env in a Python loop."}


def write_markdown(path, res):
    s = res["system"]
    lines = [f"# Environment steps/s ({res['device_kind']})", "",
             f"`{res['command']}` — devices {s['devices']}, {s['cpu_count']} CPUs, load "
             f"{res['machine_load_1min_start']:.1f} -> {res['machine_load_1min_end']:.1f}. "
             "One env step = all agents of one environment act once (HalfCheetah: 5 physics "
             "steps). Reference simulators step one environment at a time in Python, so their "
             "rate does not depend on the batch.", "",
             "| env | batch | JAX steps/s | reference | reference steps/s | speed-up | "
             "JAX compile (s) |", "|---|---:|---:|---|---:|---:|---:|"]
    for r in (res.get("mpe") or {}).get("rows", []):
        lines.append(_md_row(f"MPE {r['scenario']}", r))
    for r in (res.get("mjx") or {}).get("rows", []):
        lines.append(_md_row("MJX HalfCheetah 2x3", r))
    lines.append("")
    for part in ("mpe", "mjx"):
        if res.get(part):
            lines.append(f"* {part.upper()}: {res[part]['method']}")
    for nr in res.get("not_run", []):
        lines.append(f"* {nr['part']}: {nr['reason']}")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def _md_row(name, r):
    ref = r.get("reference") or "–"
    ref_sps = f"{r['reference_steps_per_s']:,.0f}" if r.get("reference_steps_per_s") else "–"
    sp = (f"x{r['speedup']:,.0f}" if r["speedup"] >= 10 else f"x{r['speedup']:.2f}") \
        if r.get("speedup") else "–"
    return (f"| {name} | {r['batch']} | {r['jax_steps_per_s']:,.0f} | {ref} | {ref_sps} | {sp} | "
            f"{r['compile_s']:.1f} |")


def plot(path, res):
    matplotlib.use("Agg")
    parts = [p for p in ("mpe", "mjx") if res.get(p)]
    fig, axes = plt.subplots(1, max(1, len(parts)), figsize=(6.5 * max(1, len(parts)), 4.8),
                             squeeze=False)
    for ax, part in zip(axes[0], parts):
        rows = res[part]["rows"]
        groups = list(dict.fromkeys(r.get("scenario", "HalfCheetah 2x3") for r in rows))
        for i, g in enumerate(groups):
            rs = [r for r in rows if r.get("scenario", "HalfCheetah 2x3") == g]
            color = f"C{i}"
            ax.plot([r["batch"] for r in rs], [r["jax_steps_per_s"] for r in rs], "o-",
                    color=color, label=f"JAX {g}")
            if rs[0].get("reference_steps_per_s"):
                ax.axhline(rs[0]["reference_steps_per_s"], color=color, ls="--", lw=1,
                           label=f"reference: {rs[0]['reference']}")
        ax.set(xscale="log", yscale="log", xlabel="batch (environments)",
               ylabel="env steps / s",
               title=("MPE: JAX vs mpe2" if part == "mpe" else "HalfCheetah 2x3: MJX vs C MuJoCo"))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"Environment steps/s — {res['device_kind']}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv):
    """absl entry point: ``python -m benchmarks.env_speed --flags``."""
    cli.main(argv, Options, run, resolve)


def run(opts: Options = None, argv: Optional[Sequence[str]] = None):
    """Runs the benchmark, writes its files and returns the result dict. ``argv``: the flags
    to record as the command (default: the flags that reproduce ``opts``)."""
    opts = opts or Options()
    args = resolve(opts)
    argv = list(argv) if argv is not None else cli.flag_argv(opts)
    t0, load0 = time.time(), os.getloadavg()[0]
    kind = getattr(jax.devices()[0], "device_kind", jax.default_backend())
    sysinfo = system_info()
    sysinfo.update(platform=platform.platform())
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, load {load0:.1f}; jax "
          f"{jax.__version__}, devices {jax.devices()} ({kind})", flush=True)
    res = {"benchmark": "env_speed", "device_kind": kind,
           "device_label": device_label(kind) if args.device else None, "system": sysinfo,
           "command": " ".join(["python -m benchmarks.env_speed"] + argv),
           "settings": {k: getattr(args, k) for k in (
               "which", "mpe_scenarios", "mpe_batch_sizes", "mpe_reps", "mpe2_episodes",
               "mjx_batch_sizes", "mjx_steps", "mjx_reps", "c_steps", "fast_compile", "device",
               "quick")},
           "mpe": None, "mjx": None, "not_run": [], "machine_load_1min_start": load0}
    if "mpe" in args.which:
        res["mpe"] = run_mpe(args)
        res["not_run"] += res["mpe"].pop("not_run")
    if "mjx" in args.which:
        res["mjx"] = run_mjx(args)
        if jax.default_backend() == "cpu" and not args.device:
            res["not_run"].append({"part": "MJX", "reason": (
                f"large MJX batches not run on CPU by default (batches {args.mjx_batch_sizes}): "
                "each batch size compiles for ~40-100 s on 2 cores and MJX is slower than C "
                "MuJoCo on CPU; see env_speed_mjx.md or pass --mjx_batch_sizes")})
    else:
        res["not_run"].append({"part": "MJX", "reason": "not requested (--which)"})
    res["machine_load_1min_end"] = os.getloadavg()[0]
    res["wall_clock_s"] = time.time() - t0
    stem = "env_speed" + (f"_{device_label(kind)}" if args.device else "")
    os.makedirs(args.out, exist_ok=True)
    paths = {ext: os.path.join(args.out, f"{stem}.{ext}") for ext in ("json", "md", "png")}
    write_json(paths["json"], res)
    write_markdown(paths["md"], res)
    plot(paths["png"], res)
    print(f"wrote {', '.join(paths.values())} ({res['wall_clock_s']:.0f} s)", flush=True)
    return res


if __name__ == "__main__":
    define_flags(flags.FLAGS)
    app.run(main)
