r"""Train the behaviour policies (independent TD3) that generate the offline datasets.

  python -m experiments.train_behaviour --env=mpe_spread --steps=1000000 --seed=0

Writes (atomically) into --out (default runs/behaviour/<env>):
  <env>_expert.npz   best snapshot (re-evaluated over --final_eval_episodes)
  <env>_medium.npz   snapshot before the expert whose score is closest to
                     random + --medium_fraction * (expert - random)
  behaviour_returns.json[<env>]  measured random/medium/expert scores (mean, std, episodes),
                     the training curve, the config, seed and exact command; medium-replay
                     regeneration (experiments.generate_dataset) re-runs training to the
                     medium chunk with this seed and config.
Datasets from them: ``experiments.generate_dataset --assets_dir=runs/behaviour/<env>``. Replacing
the shipped policies (``--out=dom2_jax/assets``, where a file of <env> already exists) takes
--overwrite_shipped; without it the launcher stops before training, naming the file.
Config: --config=experiments/configs/td3_mpe.py (or td3_halfcheetah.py), --config.<f>=v.
"""
from __future__ import annotations

import json
import os
import shlex
import sys
import time

import jax
from absl import app, flags
from ml_collections import config_flags

from dom2_jax.online import behaviour, policies
from dom2_jax.online import td3 as td3_lib
from experiments.configs.common import exit_bad_override

FLAGS = flags.FLAGS


def _define_flags():
    """CLI flags, defined only when run as a script (the module stays importable next to
    the other launchers, whose flag names overlap)."""
    flags.DEFINE_string("env", "mpe_spread", "Environment name (dom2_jax.envs.make).")
    flags.DEFINE_string("env_kwargs", "{}", "JSON dict of env overrides (recorded).")
    flags.DEFINE_integer("steps", 1_000_000, "Environment transitions to train for.")
    flags.DEFINE_integer("seed", 0, "Training seed.")
    flags.DEFINE_string("out", None, "Output directory (default: runs/behaviour/<env>).")
    flags.DEFINE_bool("overwrite_shipped", False,
                      "Allow --out to be the shipped assets directory (dom2_jax/assets) when that "
                      "replaces a shipped file of --env (its .npz or behaviour_returns.json "
                      "entry).")
    flags.DEFINE_float("medium_fraction", 0.5,
                       "Medium target as a normalised score: random + f * (expert - random).")
    flags.DEFINE_integer("eval_every", 1, "Evaluate / snapshot every this many chunks.")
    flags.DEFINE_integer("final_eval_episodes", None,
                         "Episodes for the reported returns (default 1000 for MPE, 100 for "
                         "HalfCheetah's 1000-step episodes).")
    flags.DEFINE_string("snapshot_dir", None,
                        "Write every evaluated snapshot (chunk_*.npz, atomic) and run.json here, "
                        "so a long run that dies keeps them; see --select_only.")
    flags.DEFINE_bool("save_replay", True,
                      "With --snapshot_dir: also save every chunk's collected transitions under "
                      "<snapshot_dir>/replay (medium-replay then needs no re-run: "
                      "generate_dataset --replay_dir=<snapshot_dir>).")
    flags.DEFINE_bool("select_only", False,
                      "Skip training: select expert/medium from the snapshots in --snapshot_dir "
                      "(e.g. of a run that was stopped early) and write them like a full run.")
    flags.DEFINE_enum("eval_backend", "auto", ["auto", "jax", "cpu"],
                      "Where the final re-evaluations run: jax (the env's jitted rollout: MJX "
                      "for HalfCheetah) or cpu (HalfCheetah on C MuJoCo, ~3x faster on a CPU); "
                      "auto = cpu for HalfCheetah when JAX runs on CPU.")
    flags.DEFINE_string("log_json", None, "Also write the training curve to this JSON file.")
    try:
        config_flags.DEFINE_config_file("config", None,
                                        "TD3 config file (default: per-env defaults).",
                                        lock_config=False)
    except (AttributeError, KeyError) as e:  # ml_collections parses the overrides right here
        exit_bad_override(e)


def default_out(env_name: str) -> str:
    """--out when none is given (relative to the current directory, as the launchers' runs/)."""
    return os.path.join("runs", "behaviour", env_name)


def check_out(env_name: str, out: str, overwrite_shipped: bool) -> None:
    """Exits with one line when writing ``env_name``'s policies into ``out`` would replace a
    shipped file (``policies.ASSETS_DIR``) and ``overwrite_shipped`` is not set."""
    replaced = policies.shipped_files_replaced(env_name, out)
    if replaced and not overwrite_shipped:
        raise SystemExit(f"error: {replaced[0]} is a shipped behaviour file; pass "
                         "--overwrite_shipped to replace it (or choose another --out)")


def main(argv):
    del argv
    out = FLAGS.out or default_out(FLAGS.env)
    check_out(FLAGS.env, out, FLAGS.overwrite_shipped)  # before training, and for --select_only
    env_kwargs = json.loads(FLAGS.env_kwargs)
    config = FLAGS.config if FLAGS.config is not None else td3_lib.default_config(FLAGS.env)
    config.hidden_dims = tuple(config.hidden_dims)
    td3 = behaviour.make_td3(FLAGS.env, config, env_kwargs)
    n_chunks = behaviour.num_chunks_for(FLAGS.steps, config)
    command = "python -m experiments.train_behaviour " + " ".join(
        shlex.quote(a) for a in sys.argv[1:])
    log = lambda s: print(s, flush=True)
    snap_dir = FLAGS.snapshot_dir
    if FLAGS.select_only:
        if not snap_dir:
            raise app.UsageError("--select_only needs --snapshot_dir")
        with open(os.path.join(snap_dir, "run.json")) as f:
            run = json.load(f)
        why = behaviour.run_mismatch(run, seed=FLAGS.seed, env=FLAGS.env, env_kwargs=env_kwargs,
                                     td3_config=td3_lib.config_to_dict(config))
        if why:
            raise app.UsageError(f"--select_only: {snap_dir} was trained with {why}")
        snaps = behaviour.load_snapshots(snap_dir)
        n_chunks = int(snaps[-1]["chunk"])
        train_s = float(snaps[-1].get("wall_s", float("nan")))
        log(f"{len(snaps)} snapshots from {snap_dir} (last chunk {n_chunks}, trained with: "
            f"{run['command']}); selecting only")
        command = run["command"] + f"  # stopped at chunk {n_chunks}; selected by: {command}"
    else:
        print(f"{command}\n{td3.env}\n{config}\n{n_chunks} chunks of "
              f"{behaviour.chunk_transitions(config)} transitions", flush=True)
        on_snapshot = None
        if snap_dir:
            os.makedirs(snap_dir, exist_ok=True)
            run = dict(env=FLAGS.env, seed=FLAGS.seed, env_kwargs=env_kwargs, command=command,
                       td3_config=td3_lib.config_to_dict(config))
            policies.write_json(os.path.join(snap_dir, "run.json"), run)
            on_snapshot = lambda snap: behaviour.save_snapshot(snap_dir, snap)
        on_chunk = None
        if snap_dir and FLAGS.save_replay:
            on_chunk = lambda i, state, m: behaviour.save_replay_chunk(snap_dir, i + 1, state,
                                                                       config)
        t0 = time.time()
        snaps = behaviour.run_training(td3, FLAGS.seed, n_chunks, eval_every=FLAGS.eval_every,
                                       on_chunk=on_chunk, on_snapshot=on_snapshot, log=log)
        train_s = time.time() - t0
    final_eps = FLAGS.final_eval_episodes or (1000 if td3.env.episode_length <= 100 else 100)
    sel = behaviour.select_policies(td3, snaps, FLAGS.seed, medium_fraction=FLAGS.medium_fraction,
                                    final_eval_episodes=final_eps,
                                     backend=FLAGS.eval_backend, log=log)
    cfg = td3_lib.config_to_dict(config)
    common = dict(env=FLAGS.env, env_kwargs=env_kwargs, hidden_dims=list(config.hidden_dims),
                  num_agents=td3.num_agents, obs_dim=td3.obs_dim, act_dim=td3.act_dim,
                  seed=FLAGS.seed, td3_config=cfg, command=command)
    digests = {}
    for q in ("expert", "medium"):
        e = sel[q]
        flat = snaps[e["index"]]["flat_params"]
        digests[q] = policies.params_digest(flat)
        meta = dict(common, quality=q, env_steps=e["env_steps"], chunk=e["chunk"],
                    score=e["score"], score_std=e["score_std"], eval_episodes=e["episodes"],
                    params_sha256=digests[q])
        policies.save_policy(policies.policy_path(FLAGS.env, q, out), flat, meta)
    entry = {
        "random": sel["random"],
        "expert": {k: v for k, v in sel["expert"].items() if k != "index"},
        "medium": {k: v for k, v in sel["medium"].items() if k != "index"},
        "training": dict(
            common, steps=n_chunks * behaviour.chunk_transitions(config), chunks=n_chunks,
            chunk_transitions=behaviour.chunk_transitions(config),
            medium_fraction=FLAGS.medium_fraction, wall_s=round(train_s, 1),
            jax_version=jax.__version__, backend=jax.default_backend(),
            params_sha256=digests,
            curve=[[s["env_steps"], round(s["score"], 3)] for s in snaps]),
    }
    entry["expert"]["params_sha256"] = digests["expert"]
    entry["medium"]["params_sha256"] = digests["medium"]
    path = policies.update_returns(FLAGS.env, entry, out)
    if FLAGS.log_json:
        with open(FLAGS.log_json, "w") as f:
            json.dump(entry, f, indent=1)
    r, m, x = sel["random"], sel["medium"], sel["expert"]
    print(f"random {r['score']:.2f} | medium {m['score']:.2f} (normalised {m['normalised']:.1f}, "
          f"chunk {m['chunk']}) | expert {x['score']:.2f} (chunk {x['chunk']}); "
          f"train {train_s:.0f} s; wrote {path}", flush=True)


if __name__ == "__main__":
    _define_flags()
    app.run(main)
