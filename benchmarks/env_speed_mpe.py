"""Environment steps per second: vmapped JAX MPE vs mpe2 stepped in a Python loop.

    python -m benchmarks.env_speed_mpe [--num_envs=1024] [--reps=10] [--mpe2_episodes=40]

JAX: ``jit(vmap(reset + lax.scan over 25 steps))`` over ``num_envs`` environments with
uniform random actions (policy sampling included), timed after compilation; one env step =
all agents of one environment act once. mpe2: ``parallel_env(continuous_actions=True)`` of
the same scenario, random actions from its action spaces, ``reset`` + 25 ``step`` calls per
episode. Writes ``benchmarks/results/env_speed_mpe.{json,md}``.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import os
import platform
import time
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
from absl import app, flags

from benchmarks import cli

from dom2_jax.envs import make

# (label, our env kwargs, mpe2 module or None)
SCENARIOS = [
    ("spread", dict(name="mpe_spread"), "simple_spread_v3"),
    ("tag", dict(name="mpe_tag"), "simple_tag_v3"),
    ("world (comm: 4+2, as mpe2)", dict(name="mpe_world", variant="comm"), "simple_world_comm_v3"),
    ("world (omar: 3+1, default)", dict(name="mpe_world"), None),
]


def jax_steps_per_second(env, num_envs: int, reps: int) -> dict:
    def episode(key):
        k_reset, k_act = jax.random.split(key)
        _, state = env.reset(k_reset)
        acts = jax.random.uniform(k_act, (env.episode_length, env.num_agents, env.act_dim),
                                  jnp.float32, -1.0, 1.0)

        def body(state, a):
            _, state, reward, _, _ = env.step(k_act, state, a)
            return state, env.score(reward)

        return jax.lax.scan(body, state, acts)[1].sum()

    run = jax.jit(lambda key: jax.vmap(episode)(jax.random.split(key, num_envs)))
    t0 = time.perf_counter()
    run(jax.random.PRNGKey(0)).block_until_ready()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(reps):
        run(jax.random.PRNGKey(i + 1)).block_until_ready()
    dt = time.perf_counter() - t0
    steps = num_envs * env.episode_length * reps
    return dict(steps_per_s=steps / dt, seconds=dt, steps=steps, compile_s=compile_s)


def mpe2_steps_per_second(module: str, episodes: int) -> dict:
    mod = importlib.import_module(f"mpe2.{module}")
    penv = mod.parallel_env(continuous_actions=True, max_cycles=25)
    penv.reset(seed=0)
    for a in penv.possible_agents:
        penv.action_space(a).seed(0)
    steps = 0
    t0 = time.perf_counter()
    for ep in range(episodes):
        penv.reset(seed=ep)
        while penv.agents:
            penv.step({a: penv.action_space(a).sample() for a in penv.agents})
            steps += 1
    dt = time.perf_counter() - t0
    penv.close()
    return dict(steps_per_s=steps / dt, seconds=dt, steps=steps)


@dataclasses.dataclass
class Options:
    """The command-line flags (``--helpshort``); ``run(Options(...))`` from Python."""

    num_envs: int = 1024
    reps: int = 10
    mpe2_episodes: int = 40
    out: str = os.path.join("benchmarks", "results")


def define_flags(fv):
    """The script's flags on ``fv`` (``flags.FLAGS`` when run as a script; see benchmarks.cli)."""
    d, kw = Options(), dict(flag_values=fv)
    flags.DEFINE_integer("num_envs", d.num_envs, "Environments vmapped in the JAX rollout.", **kw)
    flags.DEFINE_integer("reps", d.reps, "Timed JAX rollouts (after the compiling one).", **kw)
    flags.DEFINE_integer("mpe2_episodes", d.mpe2_episodes, "mpe2 episodes stepped in Python.",
                         **kw)
    flags.DEFINE_string("out", d.out, "Output directory.", **kw)


def main(argv):
    """absl entry point: ``python -m benchmarks.env_speed_mpe --flags``."""
    cli.main(argv, Options, run)


def run(opts: Options = None, argv: Optional[Sequence[str]] = None):
    """Measures every scenario, writes env_speed_mpe.{json,md} and returns the rows. ``argv``:
    the flags to record as the command (default: the flags that reproduce ``opts``)."""
    args = opts or Options()
    argv = list(argv) if argv is not None else cli.flag_argv(args)
    rows = []
    for label, kwargs, module in SCENARIOS:
        kwargs = dict(kwargs)
        env = make(kwargs.pop("name"), **kwargs)
        ours = jax_steps_per_second(env, args.num_envs, args.reps)
        ref = mpe2_steps_per_second(module, args.mpe2_episodes) if module else None
        row = dict(scenario=label, env=env.name, jax=ours, mpe2=ref,
                   speedup=(ours["steps_per_s"] / ref["steps_per_s"]) if ref else None)
        rows.append(row)
        print(f"{label:28s} jax {ours['steps_per_s']:12,.0f} steps/s"
              + (f"   mpe2 {ref['steps_per_s']:9,.0f} steps/s   x{row['speedup']:.0f}"
                 if ref else ""), flush=True)

    meta = dict(num_envs=args.num_envs, reps=args.reps, mpe2_episodes=args.mpe2_episodes,
                episode_length=25, jax=jax.__version__, device=str(jax.devices()[0]),
                cpu_count=os.cpu_count(), platform=platform.platform(),
                machine_load_1min=os.getloadavg()[0],
                command="python -m benchmarks.env_speed_mpe " + " ".join(argv))
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "env_speed_mpe.json"), "w") as f:
        json.dump(dict(meta=meta, results=rows), f, indent=2)
    lines = [f"# MPE env steps/s ({meta['device']}, {meta['cpu_count']} CPUs, "
             f"load {meta['machine_load_1min']:.1f})", "",
             f"JAX: jit(vmap) over {args.num_envs} envs, lax.scan of 25 steps, random actions. "
             "mpe2 1.1.1: parallel_env(continuous_actions=True), Python loop.", "",
             "| scenario | JAX steps/s | mpe2 steps/s | speed-up | JAX compile (s) |",
             "|---|---:|---:|---:|---:|"]
    for r in rows:
        ref = f"{r['mpe2']['steps_per_s']:,.0f}" if r["mpe2"] else "–"
        sp = f"x{r['speedup']:.0f}" if r["speedup"] else "–"
        lines.append(f"| {r['scenario']} | {r['jax']['steps_per_s']:,.0f} | {ref} | {sp} | "
                     f"{r['jax']['compile_s']:.1f} |")
    with open(os.path.join(args.out, "env_speed_mpe.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return rows


if __name__ == "__main__":
    define_flags(flags.FLAGS)
    app.run(main)
