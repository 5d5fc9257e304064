r"""Evaluate a trained run's checkpoint again, in the standard or a shifted environment.

  python -m experiments.evaluate --workdir=runs/x --shift=speed --episodes=1000
  python -m experiments.evaluate --workdir=runs/hc --shift=E          # HalfCheetah: R or E

Tables 2 and 4 of the paper train on data from the standard environment and evaluate in shifted
ones (MPE: each agent's speed ~ U[v_min, 1]; HalfCheetah: random / extreme power, density and
friction). ``experiments.train --shift=S`` does that during training; this launcher does it
afterwards for any ``experiments.train`` workdir, from its newest checkpoint (the final
parameters of a finished run) or ``--chunk=C``, for every vmapped seed of the run, without the
dataset (observation statistics come from results.json when the run standardised inputs).

``--act_candidates=K`` (DOM2): act by choosing one of K policy samples by the target critics'
min Q (``dom2.Hparams.act_candidates``; Diffusion-QL's evaluation, MA-SfBC's selection rule)
instead of the run's own setting; the file name gets ``-c<K>`` and the result records it.
For MA-SfBC it sets ``num_candidates`` (K=1: one diffusion-BC sample, no selection).

Writes ``WORKDIR/evaluations/<standard|shift-S>-u<updates>-e<episodes>-k<eval_seed>.json``
(atomic) with each seed's mean and std episode score, the normalised score where the run's
dataset has reference returns, and the standard environment's score on as many episodes (so the
drop a shift causes is measured with the same episode count). ``experiments.report`` puts the
shifted evaluations of a finished run's final parameters into its Table 2 / 4 rows. Same
workdir, flags and eval seed -> the same numbers. Do not point it at a workdir whose training is
still running.
"""
from __future__ import annotations

import dataclasses
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging

from dom2_jax import data, envs
from dom2_jax.training import restore
from dom2_jax.training.host_eval import make_cpu_evaluate, resolve_eval_backend
from dom2_jax.training.reporting import write_json
from dom2_jax.training.trainer import make_evaluate, make_policy

SHIFTS = {"speed": "mpe_", "R": "mamujoco_", "E": "mamujoco_"}

FLAGS = flags.FLAGS


def _define_flags():
    flags.DEFINE_string("workdir", None, "An experiments.train workdir (config.json, "
                        "checkpoints/).")
    flags.DEFINE_enum("shift", None, list(SHIFTS), "Evaluate in this shifted environment: "
                      "speed (MPE) or R / E (HalfCheetah); default: the standard environment.")
    flags.DEFINE_integer("episodes", None, "Episodes per seed (default: the run's "
                         "eval_episodes).")
    flags.DEFINE_integer("chunk", None, "Checkpoint to evaluate, in chunks of eval_every "
                         "updates (default: the newest).")
    flags.DEFINE_integer("eval_seed", 0, "Seed of the evaluation episodes (seed i of the run "
                         "uses fold_in(PRNGKey(eval_seed), i)).")
    flags.DEFINE_enum("eval_backend", "auto", ["auto", "jax", "cpu"],
                      "HalfCheetah: 'cpu' = C MuJoCo, 'jax' = MJX, 'auto' = C MuJoCo when JAX "
                      "runs on a CPU (see experiments.train).")
    flags.DEFINE_integer("act_candidates", None, "DOM2: act with one of K policy samples chosen "
                         "by the target critics' min Q; MA-SfBC: its number of behaviour "
                         "samples (default: the run's own setting).")
    flags.DEFINE_enum("act_selection", None, ["softmax", "argmax"], "DOM2, with "
                      "--act_candidates: softmax of the standardised Q (temperature "
                      "act_temperature) or argmax (default: the run's setting).")


def _fail(msg):
    raise SystemExit(f"error: {msg}")


def _read_resolved(workdir: str) -> dict:
    try:
        return restore.read_resolved(workdir)
    except restore.RunLoadError as e:
        _fail(e)


def load_run(workdir: str, chunk=None, dataset_arrays=None) -> restore.LoadedRun:
    """``dom2_jax.training.restore.load_run``, its errors as a one-line exit."""
    try:
        return restore.load_run(workdir, chunk, dataset_arrays)
    except restore.RunLoadError as e:
        _fail(e)


# MA-SfBC's names for DOM2's acting options (its candidates are behaviour samples): with
# --act_candidates=1 it acts on one diffusion-BC sample, which measures what selection adds.
ACTING_ALIASES = {"act_candidates": "num_candidates", "act_selection": "selection"}


def with_acting(carry, act_overrides):
    """``carry`` whose state acts with ``act_overrides`` (Hparams fields such as DOM2's
    act_candidates, or MA-SfBC's ``ACTING_ALIASES``); refused for an algorithm without them."""
    if not act_overrides:
        return carry
    hp = carry.state.hp

    def field(k):  # DOM2's flag name, or the algorithm's own name for it
        alias = ACTING_ALIASES.get(k)
        return alias if not hasattr(hp, k) and alias and hasattr(hp, alias) else k
    act_overrides = {field(k): v for k, v in act_overrides.items()}
    missing = [k for k in act_overrides if not hasattr(hp, k)]
    if missing:
        _fail(f"{type(hp).__module__.split('.')[-1]} has no acting option {missing[0]} "
              "(--act_candidates / --act_selection are DOM2's and MA-SfBC's)")
    hp = dataclasses.replace(hp, **act_overrides)
    for ok, msg in hp.checks():
        if not ok:
            _fail(msg)
    return carry.replace(state=carry.state.replace(hp=hp))


def evaluate_workdir(workdir: str, shift=None, episodes=None, chunk=None, eval_seed=0,
                     eval_backend="auto", keys=None, act_overrides=None):
    """Evaluates every seed of ``workdir``'s checkpoint; returns (and writes) the result dict.
    ``act_overrides``: acting fields of the algorithm's Hparams to evaluate with instead of
    the run's (e.g. ``{"act_candidates": 32}``; see ``with_acting``).

    ``keys``: one evaluation key per seed ([S]; default fold_in(PRNGKey(eval_seed), i)), used
    as the trainer's evaluation uses its chunk's key: split into (standard env, shifted env)."""
    env_name = _read_resolved(workdir)["env"]
    if shift is not None and not env_name.startswith(SHIFTS[shift]):
        _fail(f"--shift={shift} does not apply to {env_name}: use "
              f"{'speed' if env_name.startswith('mpe_') else 'R or E'}")
    if episodes is not None and int(episodes) < 1:  # before the (slow) restore
        _fail(f"--episodes must be >= 1, got {episodes}")
    run = load_run(workdir, chunk)
    resolved, results, config, env = run.resolved, run.results, run.config, run.env
    algo_name, num_seeds, step, filled = resolved["algo"], run.num_seeds, run.step, run.filled
    episodes = int(episodes or config.eval_episodes)
    target = (envs.make(env_name, shift=shift, **dict(config.get("env_kwargs", {})))
              if shift else env)
    policy = make_policy(run.algo, run.stats)
    act_overrides = {k: v for k, v in (act_overrides or {}).items() if v is not None}
    carry = with_acting(run.carry, act_overrides)
    updates = int(step) * int(config.eval_every)

    if keys is None:
        keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.PRNGKey(eval_seed), i))(
            jnp.arange(num_seeds))
    shift_env = target if shift else None
    backend = resolve_eval_backend(env, eval_backend)
    t0 = time.time()
    # As the trainer's evaluation: key -> (standard env key, shifted env key); the standard
    # environment is always evaluated too, on as many episodes, so the drop is measured.
    if backend == "cpu":
        ev = make_cpu_evaluate(policy, env, shift_env, episodes)(carry.state, keys)
    else:
        evaluate = make_evaluate(env, shift_env, policy, episodes)
        ev = jax.device_get(jax.jit(jax.vmap(evaluate))(carry.state, keys))
    ev = {k: np.asarray(v, np.float64) for k, v in ev.items()}
    wall = time.time() - t0
    pre = "shift_" if shift else ""
    means, stds = ev[pre + "score_mean"], ev[pre + "score_std"]

    refs = results.get("reference_returns") or {}
    norm = None
    if refs.get("random") is not None and refs.get("expert") not in (None, refs.get("random")):
        norm = lambda s: float(data.normalized_score(s, refs))
    out = {"workdir": os.path.abspath(workdir), "algo": algo_name, "env": env_name,
           "quality": resolved.get("quality"), "shift": shift, "episodes": episodes,
           "eval_seed": int(eval_seed), "eval_backend": backend, "checkpoint_chunk": int(step),
           "updates": updates, "num_updates": int(config.num_updates),
           "final_parameters": updates == int(config.num_updates),
           "reference_returns": refs, "wall_s": wall, "agent_fields_defaulted": filled,
           "act_overrides": act_overrides,
           "seeds": [{"seed_index": i, "score_mean": float(means[i]),
                      "score_std": float(stds[i]),
                      "normalized_score": norm(float(means[i])) if norm else None,
                      "standard_score_mean": float(ev["score_mean"][i]),
                      "standard_score_std": float(ev["score_std"][i])}
                     for i in range(num_seeds)]}
    out["score_mean_over_seeds"] = float(np.mean(means))
    out["score_std_over_seeds"] = float(np.std(means))
    out["standard_score_mean_over_seeds"] = float(np.mean(ev["score_mean"]))
    act_tag = ((f"-c{act_overrides['act_candidates']}" if "act_candidates" in act_overrides
                else "") + (f"-{act_overrides['act_selection']}" if "act_selection" in
                            act_overrides else ""))
    name = (f"{'shift-' + shift if shift else 'standard'}-u{updates}-e{episodes}"
            f"-k{int(eval_seed)}{act_tag}.json")
    out["path"] = os.path.join(os.path.abspath(workdir), "evaluations", name)
    write_json(out["path"], out)
    return out


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if FLAGS.workdir is None:
        raise SystemExit("--workdir is required")
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    try:
        out = evaluate_workdir(FLAGS.workdir, FLAGS.shift, FLAGS.episodes, FLAGS.chunk,
                               FLAGS.eval_seed, FLAGS.eval_backend,
                               act_overrides={"act_candidates": FLAGS.act_candidates,
                                              "act_selection": FLAGS.act_selection})
    except ValueError as e:  # e.g. a config the algorithm rejects: one clear line
        raise SystemExit(f"error: {e}")
    where = f"shifted environment {out['shift']!r}" if out["shift"] else "standard environment"
    per_seed = ", ".join(f"{s['score_mean']:.1f}" for s in out["seeds"])
    print(f"{out['algo']} on {out['env']} ({where}), {out['updates']} updates, "
          f"{out['episodes']} episodes per seed: {out['score_mean_over_seeds']:.1f} +- "
          f"{out['score_std_over_seeds']:.1f} over {len(out['seeds'])} seed(s) [{per_seed}]"
          + (f"; standard environment {out['standard_score_mean_over_seeds']:.1f}"
             if out["shift"] else "") + f" ({out['wall_s']:.0f} s)")
    print(f"wrote {out['path']}")


if __name__ == "__main__":
    _define_flags()
    app.run(main)
