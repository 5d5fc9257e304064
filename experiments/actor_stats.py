r"""What a trained policy does on its own dataset's states: a quick diagnosis of offline runs.

  python -m experiments.actor_stats --workdir=runs/x                  # newest checkpoint
  python -m experiments.actor_stats --workdir=runs/a,runs/b --chunk=4 --samples=8192

For ``--samples`` observations drawn (without replacement, ``--seed``) from the run's dataset,
per seed and agent of the restored checkpoint (the same loader as ``experiments.evaluate``):

  sat_policy / sat_data   fraction of action coordinates with |a| > 0.99 (the policy's action
                          from the algorithm's ``act``, standardised inputs where the run used
                          them; the dataset's action)
  mse_to_data             mean over coordinates of (policy action - dataset action)^2
  q_policy / q_data / q_uniform
                          the first critic Q_1(o, .) at the policy's action, the dataset's
                          action and a uniform random action (algorithms with a critic)
  search_*                OMAR only: its zeroth-order search on the same states: the fraction
                          of saturated coordinates, Q_1 of the found action and the fraction
                          of states where it beats the policy's action (the actor then imitates
                          it)

Typical readings: a policy far from the data (mse) whose Q_1 exceeds the data's is following
critic error; saturation well above the data's is bang-bang control the data never showed.
Writes ``WORKDIR/diagnostics/actor-u<updates>-n<samples>-k<seed>.json`` (atomic) and prints one
line per agent (means over the run's seeds). Same workdir, checkpoint and flags -> the same
numbers.
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging

from dom2_jax import data
from dom2_jax.algos import omar, td3_family
from dom2_jax.training import restore
from dom2_jax.training.reporting import write_json
from dom2_jax.training.trainer import make_policy

FLAGS = flags.FLAGS
SATURATED = 0.99


def _define_flags():
    flags.DEFINE_list("workdir", None, "experiments.train workdir(s), comma separated.")
    flags.DEFINE_integer("chunk", None, "Checkpoint, in chunks of eval_every updates (default: "
                         "the newest).")
    flags.DEFINE_integer("samples", 4096, "Dataset observations to evaluate on.")
    flags.DEFINE_integer("seed", 0, "Seed of the observation draw and the policies' keys.")


def actor_stats(workdir: str, chunk=None, samples: int = 4096, seed: int = 0) -> dict:
    """Computes (and writes) the statistics above for every seed and agent of ``workdir``."""
    def fail(msg):
        raise SystemExit(f"error: {msg}")

    if samples < 1:
        fail(f"--samples must be >= 1, got {samples}")
    try:
        path = restore.read_resolved(workdir).get("dataset") or ""
        if not os.path.isdir(path):
            fail(f"{workdir}: its dataset {path!r} is gone; regenerate it to diagnose this run")
        arrays = data.to_device(data.load(path))
        run = restore.load_run(workdir, chunk, arrays)  # the dataset is loaded once, here
    except restore.RunLoadError as e:
        fail(e)
    n = int(arrays["obs"].shape[0])
    idx = np.sort(np.random.RandomState(seed).choice(n, min(samples, n), replace=False))
    obs, actions = jnp.asarray(arrays["obs"])[idx], jnp.asarray(arrays["actions"])[idx]
    inputs = obs if run.stats is None else (
        (obs - jnp.asarray(run.stats["mean"])) / jnp.asarray(run.stats["std"]))
    policy = make_policy(run.algo, run.stats)
    is_omar = run.algo is omar

    def per_seed(state, key):
        k_act, k_u, k_s = jax.random.split(key, 3)
        acts = policy(state, obs, k_act)                                   # [N, A, d]
        out = {"sat_policy": jnp.mean(jnp.abs(acts) > SATURATED, axis=(0, 2)),
               "sat_data": jnp.mean(jnp.abs(actions) > SATURATED, axis=(0, 2)),
               "mse_to_data": jnp.mean(jnp.square(acts - actions), axis=(0, 2))}
        if not hasattr(state, "critic"):
            return out
        hp = state.hp
        uniform = jax.random.uniform(k_u, actions.shape, minval=-1.0, maxval=1.0)
        q1 = jax.vmap(lambda cp, o, a: td3_family.q1_of(hp, cp, o, a), in_axes=(0, 1, 1))
        critic = state.critic.params
        q_pi = q1(critic, inputs, acts)                              # [A, N]
        out.update(q_policy=jnp.mean(q_pi, axis=-1),
                   q_data=jnp.mean(q1(critic, inputs, actions), axis=-1),
                   q_uniform=jnp.mean(q1(critic, inputs, uniform), axis=-1))
        if is_omar:
            def search(cp, o, pi, q_pi_j, k):
                a_s, q_s = omar.search_actions(hp, cp, o, pi, k)
                return (jnp.mean(jnp.abs(a_s) > SATURATED), jnp.mean(q_s),
                        jnp.mean((q_s > q_pi_j).astype(jnp.float32)))
            sat, q_s, better = jax.vmap(search, in_axes=(0, 1, 1, 0, 0))(
                critic, inputs, acts, q_pi, jax.random.split(k_s, acts.shape[1]))
            out.update(search_sat=sat, search_q=q_s, search_better_frac=better)
        return out

    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.PRNGKey(seed), i))(
        jnp.arange(run.num_seeds))
    stats = jax.device_get(jax.jit(jax.vmap(per_seed))(run.carry.state, keys))  # [S, A] each
    updates = run.step * int(run.config.eval_every)
    out = {"workdir": os.path.abspath(workdir), "algo": run.resolved["algo"],
           "env": run.resolved["env"], "quality": run.resolved.get("quality"),
           "checkpoint_chunk": run.step, "updates": updates, "samples": int(len(idx)),
           "seed": int(seed), "standardised_inputs": run.stats is not None,
           "seeds": [{k: [float(x) for x in v[s]] for k, v in stats.items()}
                     for s in range(run.num_seeds)],
           "mean_over_seeds": {k: [float(x) for x in np.mean(v, axis=0)]
                               for k, v in stats.items()}}
    out["path"] = os.path.join(os.path.abspath(workdir), "diagnostics",
                               f"actor-u{updates}-n{len(idx)}-k{int(seed)}.json")
    write_json(out["path"], out)
    return out


def format_lines(out: dict) -> list:
    m = out["mean_over_seeds"]
    lines = [f"{out['algo']} on {out['env']} {out['quality'] or ''} at {out['updates']} updates "
             f"({len(out['seeds'])} seed(s), {out['samples']} dataset states):"]
    for j in range(len(m["sat_policy"])):
        s = (f"  agent {j}: |a|>{SATURATED} policy {m['sat_policy'][j]:.3f} data "
             f"{m['sat_data'][j]:.3f}; mse to data {m['mse_to_data'][j]:.4f}")
        if "q_policy" in m:
            s += (f"; Q1 policy {m['q_policy'][j]:.2f} data {m['q_data'][j]:.2f} uniform "
                  f"{m['q_uniform'][j]:.2f}")
        if "search_q" in m:
            s += (f"; search: saturated {m['search_sat'][j]:.3f}, Q1 {m['search_q'][j]:.2f}, "
                  f"beats the policy on {m['search_better_frac'][j]:.3f}")
        lines.append(s)
    return lines


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS.workdir:
        raise SystemExit("--workdir is required")
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    for wd in FLAGS.workdir:
        out = actor_stats(wd, FLAGS.chunk, FLAGS.samples, FLAGS.seed)
        print("\n".join(format_lines(out)))
        print(f"wrote {out['path']}")


if __name__ == "__main__":
    _define_flags()
    app.run(main)
