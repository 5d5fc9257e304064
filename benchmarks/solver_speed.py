r"""Action-sampling cost of the DPM-Solver versus the bare network calls it makes.

  python -m benchmarks.solver_speed [--batch=256] [--repeats=20] [--unroll]

For N in {1, 5, 10, 20} and order in {1, 2, 3}: time to sample a batch of actions with the
paper's residual noise net (spread sizes: obs 18, act 2), against the time of N*order plain
network evaluations measured in the same run (a jitted ``lax.scan`` of the net alone). The ratio
shows what the solver adds beyond its network calls. Writes JSON and a markdown table under
benchmarks/results/.
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
from absl import app, flags

from benchmarks.solver_steps import _time_calls
from dom2_jax import diffusion
from dom2_jax.training.reporting import system_info, write_json

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch", 256, "Actions sampled per call.")
flags.DEFINE_integer("repeats", 20, "Timed calls per configuration (median reported).")
flags.DEFINE_bool("unroll", False, "Unroll the solver scan instead of a rolled lax.scan.")
flags.DEFINE_string("out", os.path.join(os.path.dirname(__file__), "results"), "Output dir.")


def _median_time(fn, *args, repeats):
    """Median wall time of ``repeats`` calls after a compile + warm-up call."""
    ts, _ = _time_calls(fn, args, repeats)  # sorted
    return ts[len(ts) // 2]


def main(argv):
    obs_dim, act_dim, b = 18, 2, FLAGS.batch
    net = diffusion.make_noise_net("residual", act_dim)
    key = jax.random.PRNGKey(0)
    obs = jax.random.normal(key, (b, obs_dim))
    params = net.init(key, jnp.zeros((1, act_dim)), obs[:1], jnp.zeros((1,)))
    sched = diffusion.VPSchedule()

    def sampler(steps, order):
        def f(p, o, k):
            x = jax.random.normal(k, (b, act_dim))
            return diffusion.dpm_solver_sample(lambda x, t: net.apply(p, x, o, t), x, sched,
                                               steps, order=order, unroll=FLAGS.unroll)
        return jax.jit(f)

    def net_calls(n):
        def f(p, o, k):
            x = jax.random.normal(k, (b, act_dim))
            t = jnp.full((b,), 0.5)
            return jax.lax.scan(lambda x, _: (net.apply(p, x, o, t), None), x, None, length=n)[0]
        return jax.jit(f)

    rows = []
    for steps in (1, 5, 10, 20):
        for order in (1, 2, 3):
            nfe = steps * order
            ts = _median_time(sampler(steps, order), params, obs, key, repeats=FLAGS.repeats)
            tn = _median_time(net_calls(nfe), params, obs, key, repeats=FLAGS.repeats)
            rows.append({"steps": steps, "order": order, "network_calls": nfe,
                         "sample_ms": 1e3 * ts, "net_calls_ms": 1e3 * tn, "ratio": ts / tn})
            print(f"N={steps:2d} order={order} NFE={nfe:2d}: sample {1e3*ts:7.2f} ms, "
                  f"{nfe} net calls {1e3*tn:7.2f} ms, ratio {ts/tn:.2f}", flush=True)
    os.makedirs(FLAGS.out, exist_ok=True)
    tag = "unrolled" if FLAGS.unroll else "scan"
    result = {"benchmark": "solver_speed", "batch": b, "loop": tag, "rows": rows,
              "system": system_info(), "command": "python -m benchmarks.solver_speed" +
              (" --unroll" if FLAGS.unroll else "")}
    write_json(os.path.join(FLAGS.out, f"solver_speed_{tag}.json"), result)
    md = ["| N | order | net calls | sample (ms) | net calls alone (ms) | ratio |",
          "|---|---|---|---|---|---|"]
    md += [f"| {r['steps']} | {r['order']} | {r['network_calls']} | {r['sample_ms']:.2f} | "
           f"{r['net_calls_ms']:.2f} | {r['ratio']:.2f} |" for r in rows]
    with open(os.path.join(FLAGS.out, f"solver_speed_{tag}.md"), "w") as f:
        f.write(f"batch {b}, {tag}, {result['system']['devices']}\n\n" + "\n".join(md) + "\n")


if __name__ == "__main__":
    app.run(main)
