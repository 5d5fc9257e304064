r"""DOM2 update throughput and compile time (our jitted, agent-vmapped update alone).

  python -m benchmarks.update_speed [--setting=spread|halfcheetah|both] [--updates=20]
                                    [--seeds=1] [--device]

Settings (reference.md's throughput anchors): spread = 3 agents, obs 18, act 2, N=5;
halfcheetah = 2 agents, obs 6 (obsk 0), act 3, N=10; both with batch 256, critics 3x256,
10 CQL actions and the paper's residual noise net. Reports compile time, ms per update
(median over a ``lax.scan`` of --updates updates, several repeats) and updates/s; with
--seeds=K the update is vmapped over K seeds in one program. The PyTorch comparison and the
FLOP-roofline share are in benchmarks/throughput. --device only labels the
output file with the accelerator name (the same script runs on GPU unchanged).
"""
from __future__ import annotations

import os
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_enum("setting", "both", ["spread", "halfcheetah", "both"], "Which setting.")
flags.DEFINE_integer("updates", 20, "Updates per timed lax.scan call.")
flags.DEFINE_integer("repeats", 3, "Timed calls (median reported).")
flags.DEFINE_integer("seeds", 1, "Seeds vmapped in one program.")
flags.DEFINE_bool("device", False, "Tag results with the accelerator name.")
flags.DEFINE_string("out", os.path.join(os.path.dirname(__file__), "results"), "Output dir.")

SETTINGS = {"spread": dict(agents=3, obs=18, act=2, steps=5),
            "halfcheetah": dict(agents=2, obs=6, act=3, steps=10)}


def measure(setting, updates, repeats, seeds):
    import jax
    import jax.numpy as jnp

    from dom2_jax.algos import dom2

    s = SETTINGS[setting]
    cfg = dom2.default_config()
    cfg.num_solver_steps = s["steps"]
    n = 10_000
    k = jax.random.split(jax.random.PRNGKey(0), 5)
    arrays = {"obs": jax.random.normal(k[0], (n, s["agents"], s["obs"])),
              "actions": jax.random.uniform(k[1], (n, s["agents"], s["act"]), minval=-1, maxval=1),
              "rewards": jax.random.normal(k[2], (n, s["agents"])),
              "next_obs": jax.random.normal(k[3], (n, s["agents"], s["obs"])),
              "dones": jnp.zeros((n, s["agents"]))}
    keys = jax.random.split(jax.random.PRNGKey(1), seeds)
    state = jax.vmap(lambda kk: dom2.init(kk, cfg, s["agents"], s["obs"], s["act"]))(keys)
    run = jax.jit(jax.vmap(lambda st, kk: dom2.train_steps(st, arrays, kk, updates)))
    t = time.perf_counter()
    compiled = run.lower(state, keys).compile()
    compile_s = time.perf_counter() - t
    out = compiled(state, keys)
    jax.block_until_ready(out)
    ts = []
    for r in range(repeats):
        t = time.perf_counter()
        state, m = compiled(state, keys)
        jax.block_until_ready(m)
        ts.append(time.perf_counter() - t)
    ts.sort()
    ms = 1e3 * ts[len(ts) // 2] / updates
    return {"setting": setting, **s, "batch": cfg.batch_size, "seeds": seeds,
            "compile_s": compile_s, "ms_per_update": ms,
            "updates_per_s": 1e3 / ms, "seed_updates_per_s": seeds * 1e3 / ms}


def main(argv):
    import jax

    from dom2_jax.training.reporting import system_info, write_json

    names = ["spread", "halfcheetah"] if FLAGS.setting == "both" else [FLAGS.setting]
    rows = []
    for name in names:
        r = measure(name, FLAGS.updates, FLAGS.repeats, FLAGS.seeds)
        rows.append(r)
        print(f"{name}: compile {r['compile_s']:.1f} s, {r['ms_per_update']:.1f} ms/update "
              f"({r['seeds']} seed(s)), {r['seed_updates_per_s']:.2f} seed-updates/s", flush=True)
    dev = jax.devices()[0].device_kind.replace(" ", "_") if FLAGS.device else "cpu"
    os.makedirs(FLAGS.out, exist_ok=True)
    base = os.path.join(FLAGS.out, f"update_speed_{dev}_seeds{FLAGS.seeds}")
    write_json(base + ".json", {"benchmark": "update_speed", "rows": rows,
                                "system": system_info(),
                                "command": f"python -m benchmarks.update_speed --seeds={FLAGS.seeds}"})
    with open(base + ".md", "w") as f:
        f.write("| setting | seeds | compile (s) | ms/update | updates/s |\n|---|---|---|---|---|\n")
        for r in rows:
            f.write(f"| {r['setting']} | {r['seeds']} | {r['compile_s']:.1f} | "
                    f"{r['ms_per_update']:.1f} | {r['updates_per_s']:.2f} |\n")


if __name__ == "__main__":
    app.run(main)
