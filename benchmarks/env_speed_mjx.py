"""Environment steps per second of MAMuJoCo HalfCheetah 2x3: batched MJX vs C MuJoCo.

    python -m benchmarks.env_speed_mjx [--batch_sizes=64,256,1024] [--steps=50] [--reps=3]
    python -m benchmarks.env_speed_mjx --device          # GPU: batches 4096,16384,65536

One env step = both agents act once = 5 physics steps (frame_skip 5, dt 0.05).
  * MJX: ``jit(vmap(reset) + lax.scan over --steps of vmap(step))`` with uniform random
    actions, timed after compilation (compile time reported), on ``jax.default_backend()``.
  * C MuJoCo, one env in a Python loop: ``mj_step(m, d, 5)`` per env step with random controls
    (the raw physics of the CPU path).
  * ``HalfCheetahCPU`` (the CPU data-generation path: per-env loop of mj_step plus obs and
    reward), batch 64.
  * ``mujoco.rollout`` (open-loop, C++ thread pool, ``--threads``), batch 64: physics only.
Writes ``benchmarks/results/env_speed_mjx{_device}.{json,md}``.
"""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import time
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from absl import app, flags

from benchmarks import cli
from dom2_jax.envs import make
from dom2_jax.envs.mamujoco import common
from dom2_jax.envs.mamujoco.cpu import HalfCheetahCPU

FRAME_SKIP = 5


def mjx_steps_per_second(env, batch: int, steps: int, reps: int, compiler_options=None) -> dict:
    def run(key):
        k_reset, k_act = jax.random.split(key)
        _, state = jax.vmap(env.reset)(jax.random.split(k_reset, batch))

        def body(state, k):
            a = jax.random.uniform(k, (batch, env.num_agents, env.act_dim), jnp.float32, -1, 1)
            _, state, reward, _, _ = jax.vmap(env.step, in_axes=(None, 0, 0))(k, state, a)
            return state, env.score(reward).mean()

        return jax.lax.scan(body, state, jax.random.split(k_act, steps))[1].sum()

    t0 = time.perf_counter()
    lowered = jax.jit(run).lower(jax.random.PRNGKey(0))
    compiled = lowered.compile(compiler_options) if compiler_options else lowered.compile()
    compiled(jax.random.PRNGKey(0)).block_until_ready()
    compile_s = time.perf_counter() - t0
    times, cpu_times = [], []
    for i in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        compiled(jax.random.PRNGKey(i + 1)).block_until_ready()
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    dt, cpu_dt = float(np.median(times)), float(np.median(cpu_times))
    return dict(batch=batch, steps_per_s=batch * steps / dt, seconds_per_rollout=dt,
                steps_per_rollout=batch * steps, compile_s=compile_s,
                physics_steps_per_s=FRAME_SKIP * batch * steps / dt,
                steps_per_cpu_s=batch * steps / cpu_dt)


def c_loop_steps_per_second(num_steps: int) -> dict:
    model = common.load_model()
    data = mujoco.MjData(model)
    ctrl = np.random.default_rng(0).uniform(-1, 1, (num_steps, common.NU))
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(num_steps):
        if i % 1000 == 0:
            mujoco.mj_resetData(model, data)
        data.ctrl[:] = ctrl[i]
        mujoco.mj_step(model, data, FRAME_SKIP)
    dt, cpu_dt = time.perf_counter() - t0, time.process_time() - c0
    return dict(steps_per_s=num_steps / dt, seconds=dt, steps=num_steps,
                physics_steps_per_s=FRAME_SKIP * num_steps / dt,
                steps_per_cpu_s=num_steps / cpu_dt)


def cpu_batch_steps_per_second(batch: int, steps: int) -> dict:
    env = HalfCheetahCPU(batch)
    env.set_state(np.zeros((batch, 9)), np.zeros((batch, 9)))
    acts = np.random.default_rng(0).uniform(-1, 1, (steps, batch, 2, 3)).astype(np.float32)
    t0, c0 = time.perf_counter(), time.process_time()
    for a in acts:
        env.step(a)
    dt, cpu_dt = time.perf_counter() - t0, time.process_time() - c0
    return dict(batch=batch, steps_per_s=batch * steps / dt, seconds=dt, steps=batch * steps,
                steps_per_cpu_s=batch * steps / cpu_dt)


def rollout_steps_per_second(batch: int, steps: int, threads: int) -> dict:
    from mujoco import rollout  # (a) optional: its API moves between releases; main() skips it
    models = [common.load_model() for _ in range(batch)]
    datas = [mujoco.MjData(models[0]) for _ in range(threads)]
    state0 = np.zeros((batch, mujoco.mj_stateSize(models[0], mujoco.mjtState.mjSTATE_FULLPHYSICS)))
    for i in range(batch):
        mujoco.mj_getState(models[i], datas[0], state0[i], mujoco.mjtState.mjSTATE_FULLPHYSICS)
    ctrl = np.random.default_rng(0).uniform(-1, 1, (batch, steps * FRAME_SKIP, common.NU))
    with rollout.Rollout(nthread=threads) as runner:
        runner.rollout(models, datas, state0, ctrl[:, :FRAME_SKIP])  # warm-up
        t0 = time.perf_counter()
        runner.rollout(models, datas, state0, ctrl)
        dt = time.perf_counter() - t0
    return dict(batch=batch, threads=threads, steps_per_s=batch * steps / dt, seconds=dt,
                steps=batch * steps, physics_steps_per_s=FRAME_SKIP * batch * steps / dt)


@dataclasses.dataclass
class Options:
    """The command-line flags (``--helpshort``); ``run(Options(...))`` from Python."""

    batch_sizes: Optional[str] = None   # 64,256,1024 (4096,16384,65536 with --device)
    steps: int = 50
    reps: int = 3
    c_steps: int = 5000
    threads: int = os.cpu_count() or 1
    device: bool = False
    fast_compile: bool = False
    out: str = os.path.join("benchmarks", "results")


def define_flags(fv):
    """The script's flags on ``fv`` (``flags.FLAGS`` when run as a script; see benchmarks.cli)."""
    d, kw = Options(), dict(flag_values=fv)
    flags.DEFINE_string("batch_sizes", None, "Comma-separated MJX batch sizes (default "
                        "64,256,1024; with --device 4096,16384,65536).", **kw)
    flags.DEFINE_integer("steps", d.steps, "Env steps per MJX rollout.", **kw)
    flags.DEFINE_integer("reps", d.reps, "Timed MJX rollouts (median).", **kw)
    flags.DEFINE_integer("c_steps", d.c_steps, "C MuJoCo loop env steps.", **kw)
    flags.DEFINE_integer("threads", d.threads, "mujoco.rollout threads.", **kw)
    flags.DEFINE_bool("device", False, "Larger batches for an accelerator (uses "
                      "jax.default_backend()).", **kw)
    flags.DEFINE_bool("fast_compile", False, "Compile MJX with xla_backend_optimization_level=0 "
                      "(CPU: ~2.5x faster compile, slower steps).", **kw)
    flags.DEFINE_string("out", d.out, "Output directory.", **kw)


def main(argv):
    """absl entry point: ``python -m benchmarks.env_speed_mjx --flags``."""
    cli.main(argv, Options, run)


def run(opts: Options = None, argv: Optional[Sequence[str]] = None):
    """Measures, writes env_speed_mjx[_device].{json,md} and returns the MJX rows. ``argv``:
    the flags to record as the command (default: the flags that reproduce ``opts``)."""
    args = opts or Options()
    argv = list(argv) if argv is not None else cli.flag_argv(args)
    sizes = args.batch_sizes or ("4096,16384,65536" if args.device else "64,256,1024")
    sizes = [int(s) for s in sizes.split(",")]
    options = {"xla_backend_optimization_level": 0} if args.fast_compile else None

    load_start = os.getloadavg()[0]
    env = make("mamujoco_halfcheetah_2x3")
    c_loop = c_loop_steps_per_second(args.c_steps)
    print(f"C MuJoCo, 1 env, Python loop: {c_loop['steps_per_s']:,.0f} env steps/s", flush=True)
    cpu_batch = cpu_batch_steps_per_second(64, max(10, args.c_steps // 64))
    print(f"HalfCheetahCPU batch 64:      {cpu_batch['steps_per_s']:,.0f} env steps/s", flush=True)
    try:
        threaded = rollout_steps_per_second(64, max(10, args.c_steps // 64), args.threads)
        print(f"mujoco.rollout batch 64, {args.threads} threads: "
              f"{threaded['steps_per_s']:,.0f} env steps/s", flush=True)
    except Exception as err:  # the rollout module's API moves between mujoco releases
        threaded = dict(error=repr(err))
        print(f"mujoco.rollout skipped: {err!r}")
    rows = []
    for batch in sizes:
        r = mjx_steps_per_second(env, batch, args.steps, args.reps, options)
        rows.append(r)
        print(f"MJX batch {batch:6d}: {r['steps_per_s']:12,.0f} env steps/s, "
              f"{r['steps_per_cpu_s']:,.0f} per CPU-second (compile {r['compile_s']:.0f} s)",
              flush=True)
    # the machine may be shared: measure the C loop again after MJX and compare with the mean
    c_loop_end = c_loop_steps_per_second(args.c_steps)
    print(f"C MuJoCo, 1 env, again:       {c_loop_end['steps_per_s']:,.0f} env steps/s",
          flush=True)
    c_ref = 0.5 * (c_loop["steps_per_s"] + c_loop_end["steps_per_s"])
    c_ref_cpu = 0.5 * (c_loop["steps_per_cpu_s"] + c_loop_end["steps_per_cpu_s"])
    for r in rows:
        r["speedup_vs_c_loop"] = r["steps_per_s"] / c_ref
        r["speedup_vs_c_loop_cpu_time"] = r["steps_per_cpu_s"] / c_ref_cpu

    meta = dict(batch_sizes=sizes, steps=args.steps, reps=args.reps, c_steps=args.c_steps,
                frame_skip=FRAME_SKIP, fast_compile=args.fast_compile,
                jax=jax.__version__, backend=jax.default_backend(),
                device=str(jax.devices()[0]),
                device_kind=getattr(jax.devices()[0], "device_kind", "?"),
                cpu_count=os.cpu_count(), platform=platform.platform(),
                machine_load_1min_start=load_start, machine_load_1min_end=os.getloadavg()[0],
                command=" ".join(["python -m benchmarks.env_speed_mjx"] + argv))
    stem = "env_speed_mjx_device" if args.device else "env_speed_mjx"
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, stem + ".json"), "w") as f:
        json.dump(dict(meta=meta, c_loop=c_loop, c_loop_end=c_loop_end, cpu_batch=cpu_batch,
                       rollout=threaded, mjx=rows), f, indent=2)
    lines = [f"# HalfCheetah 2x3 env steps/s ({meta['device_kind']}, {meta['cpu_count']} CPUs, "
             f"load {load_start:.1f} -> {meta['machine_load_1min_end']:.1f})", "",
             f"`{meta['command']}`. One env step = 5 physics steps. MJX: jit(vmap(reset) + "
             f"scan of {args.steps} steps), random actions"
             + (", compiled at XLA opt level 0" if args.fast_compile else "") + ". "
             "'per CPU-s' divides by this process's CPU time (robust to other jobs on a "
             "shared machine); 'vs C loop' uses the mean of the C loop measured before and "
             "after the MJX runs.", "",
             "| engine | batch | env steps/s | physics steps/s | per CPU-s | vs C loop "
             "(wall / CPU) | compile (s) |",
             "|---|---:|---:|---:|---:|---:|---:|"]

    def row(name, batch, r, vs, vs_cpu, compile_s="–"):
        lines.append(f"| {name} | {batch} | {r['steps_per_s']:,.0f} | "
                     f"{FRAME_SKIP * r['steps_per_s']:,.0f} | "
                     f"{r.get('steps_per_cpu_s', float('nan')):,.0f} | "
                     f"x{vs:.2f} / x{vs_cpu:.2f} | {compile_s} |")

    row("C MuJoCo, Python loop of mj_step (start)", 1, c_loop,
        c_loop["steps_per_s"] / c_ref, c_loop["steps_per_cpu_s"] / c_ref_cpu)
    row("C MuJoCo, Python loop of mj_step (end)", 1, c_loop_end,
        c_loop_end["steps_per_s"] / c_ref, c_loop_end["steps_per_cpu_s"] / c_ref_cpu)
    row("HalfCheetahCPU (obs + reward)", 64, cpu_batch, cpu_batch["steps_per_s"] / c_ref,
        cpu_batch["steps_per_cpu_s"] / c_ref_cpu)
    if "steps_per_s" in threaded:
        lines.append(f"| mujoco.rollout, {threaded['threads']} threads | 64 | "
                     f"{threaded['steps_per_s']:,.0f} | {threaded['physics_steps_per_s']:,.0f} "
                     f"| – | x{threaded['steps_per_s'] / c_ref:.2f} / – | – |")
    for r in rows:
        row(f"MJX ({meta['backend']})", r["batch"], r, r["speedup_vs_c_loop"],
            r["speedup_vs_c_loop_cpu_time"], f"{r['compile_s']:.0f}")
    with open(os.path.join(args.out, stem + ".md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return rows


if __name__ == "__main__":
    define_flags(flags.FLAGS)
    app.run(main)
