r"""Train an offline MARL algorithm on a dataset, K seeds vmapped in one compiled program.

  python -m experiments.train --algo=dom2 --env=mpe_spread --quality=expert \
      --preset=quick --generate_missing --num_seeds=2 --workdir=runs/spread_quick

Writes into --workdir: config.json (resolved), metrics.csv, tb/ (TensorBoard event files,
--tensorboard), learning_curve.png, results.json, checkpoints/ (orbax; the newest complete
one is resumed by re-running the same command; a different config, or other data at the
dataset path (config.json's dataset_sha256), is refused). Config fields:
--config=experiments/configs/<algo>.py (default for --algo) and --config.<field>=value
overrides; --helpfull lists every field with its value.
"""
from __future__ import annotations

import dataclasses
import errno
import fcntl
import functools
import hashlib
import importlib
import json
import os
import shutil
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from ml_collections import config_flags
from tqdm import tqdm

from dom2_jax import data, envs
from dom2_jax.data import DatasetError
from dom2_jax.data.generate import generate
from dom2_jax.registry import ALGOS, QUALITIES, TASKS as ENVS, algo_module
from dom2_jax.training import multihost, reporting, seed_plan
from dom2_jax.training.checkpoint import Checkpointer, ProcessCheckpointer
from dom2_jax.training.checks import NonFiniteLossError
from dom2_jax.training.host_eval import make_cpu_evaluate, resolve_eval_backend
from dom2_jax.training.trainer import carry_template, first_nonfinite, make_train, scan_updates
from experiments.configs import common

FLAGS = flags.FLAGS
flags.DEFINE_enum("algo", "dom2", ALGOS, "Algorithm to train.")
flags.DEFINE_enum("env", "mpe_spread", ENVS, "Environment (dataset task and evaluation env).")
flags.DEFINE_enum("quality", None, QUALITIES, "Dataset quality under --data_root (or --dataset).")
flags.DEFINE_string("dataset", None, "Dataset directory (overrides --quality/--data_root).")
flags.DEFINE_string("data_root", "datasets", "Root of generated datasets: ROOT/ENV/QUALITY[-N].")
flags.DEFINE_bool("generate_missing", False, "Generate the dataset first if it does not exist.")
flags.DEFINE_integer("num_seeds", 1, "Seeds trained together (vmapped; sharded over devices).")
flags.DEFINE_integer("devices", 0,
                     "Local devices the seeds are sharded over (0: all). Each group of vmapped "
                     "seeds is split evenly over them (padded when it does not divide); one "
                     "seed's state, optimiser and metrics stay on one device.")
flags.DEFINE_string("coordinator_address", None,
                    "Several processes (hosts) share the seeds (jax.distributed): HOST:PORT of "
                    "process 0, with --num_processes and --process_id. Under SLURM's srun or "
                    "mpirun leave the three out: the launcher's environment is read. Each "
                    "process trains, evaluates and checkpoints its own block of seeds; process 0 "
                    "writes metrics.csv and results.json with every seed.")
flags.DEFINE_integer("num_processes", None, "Processes of a multi-process run (see "
                     "--coordinator_address).")
flags.DEFINE_integer("process_id", None, "This process's index in [0, --num_processes).")
flags.DEFINE_integer("seed_group", 0,
                     "Seeds vmapped per program; the --num_seeds seeds run as groups of this "
                     "size. 0 (default): planned from XLA's memory analysis and measured "
                     "seed-updates/s (dom2_jax.training.seed_plan), recorded in "
                     "WORKDIR/seed_plan.json and reused on resume.")
flags.DEFINE_integer("seed", 0, "Base seed; seed i uses fold_in(PRNGKey(seed), i).")
flags.DEFINE_string("workdir", None, "Output directory (resumes if it holds checkpoints).")
flags.DEFINE_enum("shift", None, ["speed", "R", "E"],
                  "Also evaluate on shifted envs: speed (MPE), R or E (HalfCheetah).")
flags.DEFINE_enum("preset", None, ["smoke", "quick", "cpu"],
                  "smoke: seconds, for checks; quick: minutes on 2 CPU cores and it learns; "
                  "cpu: the CPU-scale comparison protocol (quick networks, 1e6 transitions, "
                  "30k updates for every algorithm, 100 evaluation episodes).")
flags.DEFINE_enum("eval_backend", "auto", ["auto", "jax", "cpu"],
                  "Where periodic evaluations run: 'jax' inside the jitted chunk (vmapped JAX env; "
                  "MJX for HalfCheetah), 'cpu' on C MuJoCo (HalfCheetah only; ~10x faster than MJX "
                  "on a CPU host), 'auto' = 'cpu' for HalfCheetah when JAX runs on CPU, else 'jax'.")
flags.DEFINE_bool("progress", True, "Show a progress bar.")
flags.DEFINE_bool("tensorboard", True, "Also write the metrics as TensorBoard scalars to "
                  "WORKDIR/tb (tags eval/score/seed<i>, eval/score/mean, train/<metric>).")
flags.DEFINE_string("compilation_cache", os.path.expanduser("~/.cache/dom2_jax/xla"),
                    "JAX persistent compilation cache directory ('' disables). Re-running or "
                    "resuming the same config then skips most of the XLA compile time.")
# The default config file follows --algo (read from argv before flags are parsed), so that
# `--config.<field>=...` and `--helpfull` work without naming the file.
_ALGO_IN_ARGV = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--algo=")), "dom2")
_CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
_DEFAULT_CONFIG = os.path.join(_CONFIG_DIR,
                               f"{_ALGO_IN_ARGV if _ALGO_IN_ARGV in ALGOS else 'dom2'}.py")


def _config_help():
    text = ("Config file (default: experiments/configs/<algo>.py); override any field with "
            "--config.<field>=value. Fields and defaults of the default file (before task, "
            "quality and preset defaults; see --show_config for the resolved values):")
    if "--helpfull" in sys.argv or "--help" in sys.argv:
        try:
            cfg = importlib.import_module(
                f"experiments.configs.{os.path.basename(_DEFAULT_CONFIG)[:-3]}").get_config()
            text += "".join(f"\n    {k} = {v!r}" for k, v in common.flatten(cfg).items())
        except Exception as e:  # help must never crash
            text += f" (could not load: {e})"
    return text


try:
    config_flags.DEFINE_config_file("config", _DEFAULT_CONFIG, _config_help(), lock_config=False)
except (AttributeError, KeyError) as _e:  # ml_collections parses the overrides right here
    common.exit_bad_override(_e)
flags.DEFINE_bool("show_config", False, "Print the resolved config and exit (no compile).")


_PROCESS = {"index": 0}  # a multi-process run's process index: only process 0 reports


def _say(msg: str) -> None:
    """Progress messages go to stderr (absl INFO is silenced: orbax is chatty); in a
    multi-process run only process 0's."""
    if _PROCESS["index"] == 0:
        print(msg, file=sys.stderr, flush=True)


def config_module(algo: str):
    return importlib.import_module(f"experiments.configs.{algo}")


def resolve_config(algo, env, quality, preset, cli_overrides=None, config_path=None):
    """Defaults < task defaults < quality defaults < preset < command-line overrides.

    ``cli_overrides``: dotted field -> value (``--config.<field>=`` flags); ``config_path``: a
    config file to use instead of experiments/configs/<algo>.py. Returns (config, overrides).
    """
    module = config_module(algo)
    base = _load_config_file(config_path) if config_path else module.get_config()
    cli = dict(cli_overrides or {})
    layers = [common.TASK_DEFAULTS.get(env, {}), getattr(module, "TASK_DEFAULTS", {}).get(env, {}),
              getattr(module, "QUALITY_DEFAULTS", {}).get((env, quality), {})]
    if preset:
        layers += [common.PRESETS[preset], getattr(module, "PRESETS", {}).get(preset, {})]
    for layer in layers:
        common.apply_overrides(base, layer)
    common.apply_overrides(base, cli)
    if base.algo != algo:
        raise ValueError(f"config file is for algo {base.algo!r} but --algo={algo}")
    common.validate(base)
    return base, cli


def _load_config_file(path):
    spec = importlib.util.spec_from_file_location("_cfg", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config()


def _finished_results(workdir: str, num_seeds: int):
    """The workdir's results.json when it holds every seed's final score, else None."""
    try:
        res = json.load(open(os.path.join(workdir, "results.json")))
    except (OSError, ValueError):
        return None
    seeds = res.get("seeds") or []
    if res.get("num_seeds") == num_seeds and len(seeds) == num_seeds and all(
            s.get("final_score_mean") is not None for s in seeds):
        return res
    return None


def _summary_line(results: dict) -> str:
    refs = results.get("reference_returns") or {}
    msg = (f"{results['algo']} on {results['env']}: final score "
           f"{results['final_score_mean_over_seeds']:.1f} +- "
           f"{results['final_score_std_over_seeds']:.1f} over {results['num_seeds']} seed(s)")
    if "final_normalized_score_mean" in results:
        msg += (f", normalised {results['final_normalized_score_mean']:.1f} "
                f"(dataset: random {refs['random']:.1f}, expert {refs['expert']:.1f})")
    if results.get("shift") and "final_shift_score_mean" in results["seeds"][0]:
        shifted = np.mean([s["final_shift_score_mean"] for s in results["seeds"]])
        msg += f"; shifted ({results['shift']}) {shifted:.1f}"
    return msg


def lock_workdir(workdir: str, name: str = ".lock"):
    """An exclusive lock on WORKDIR/.lock for this process's lifetime (released by the OS when
    it exits, however it exits). A second launch on the same workdir is refused with the
    first one's pid instead of racing it on checkpoints/ and metrics.csv. (Each process of a
    multi-process run locks its own ``.lock.process<i>``.)"""
    path = os.path.join(workdir, name)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise SystemExit(f"{workdir} is in use by another experiments.train (pid {holder}); "
                         "wait for it or use another --workdir")
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def dataset_path(data_root, env, quality, size):
    name = quality if size == 1_000_000 else f"{quality}-n{size}"
    return os.path.join(data_root, env, name)


def get_dataset(path, env_name, quality, config, generate_missing, seed):
    if not os.path.exists(path):
        cmd = (f"python -m experiments.generate_dataset --env={env_name} "
               f"--quality={quality or 'QUALITY'} --num_samples={config.dataset_size} "
               f"--out={path}")
        if not generate_missing:
            raise SystemExit(f"dataset {path!r} does not exist. Generate it with\n  {cmd}\n"
                             "or re-run with --generate_missing.")
        if quality is None:
            raise SystemExit(f"dataset {path!r} does not exist and --quality is not set, so it "
                             "cannot be generated.")
        _say(f"generating {path} ({config.dataset_size} transitions)")
        ds = generate(env_name, quality, int(config.dataset_size), seed,
                                       env_kwargs=dict(config.env_kwargs))
        data.save(ds, path)
    return data.load(path, expected_env=env_name)


def run(argv_flags=FLAGS):

    f = argv_flags
    if f.compilation_cache:
        jax.config.update("jax_compilation_cache_dir", f.compilation_cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    if f.dataset is None and f.quality is None and not f.show_config:
        raise SystemExit("give --quality (with --data_root) or --dataset=DIR")
    if f.num_seeds < 1:
        raise SystemExit(f"--num_seeds must be >= 1, got {f.num_seeds}")
    if f.seed_group < 0:
        raise SystemExit(f"--seed_group must be >= 0 (0: planned), got {f.seed_group}")
    if f.devices < 0:
        raise SystemExit(f"--devices must be >= 0 (0: all local devices), got {f.devices}")
    # Before any JAX computation. Each process takes a contiguous block of the seeds.
    proc, nproc = multihost.initialize(f.coordinator_address, f.num_processes, f.process_id)
    _PROCESS["index"] = proc
    block = multihost.seed_block(f.num_seeds, proc, nproc)
    local_k = len(block)
    mpe = f.env.startswith("mpe_")
    if f.shift is not None and (f.shift == "speed") != mpe:
        raise SystemExit(f"--shift={f.shift} does not apply to {f.env}: use "
                         f"{'speed' if mpe else 'R or E'}")
    config, cli = resolve_config(f.algo, f.env, f.quality, f.preset,
                                 dict(f["config"].override_values), f["config"].config_filename)
    if f.show_config:
        print(config)
        return None
    if f.workdir is None:
        raise SystemExit("--workdir is required")
    # Fail on bad configs before any compilation.
    algo = algo_module(f.algo)
    env = envs.make(f.env, **dict(config.env_kwargs))
    shift_env = envs.make(f.env, shift=f.shift, **dict(config.env_kwargs)) if f.shift else None
    if hasattr(algo, "Hparams"):
        algo.Hparams.from_config(config.agent, env.num_agents, env.obs_dim, env.act_dim)
    eval_backend = resolve_eval_backend(env, f.eval_backend)
    # All seeds' training states are held between groups: refuse sizes the host cannot hold
    # before anything is allocated (shapes only).
    seed_plan.check_states_fit(
        seed_plan.tree_bytes(carry_template(algo, config.agent, env, 1)), local_k)

    if os.path.exists(f.workdir) and not os.path.isdir(f.workdir):
        raise SystemExit(f"--workdir {f.workdir!r} is a file, not a directory")
    path = f.dataset or dataset_path(f.data_root, f.env, f.quality, int(config.dataset_size))
    ds = get_dataset(path, f.env, f.quality, config, f.generate_missing, f.seed)
    data.check_compatible(ds, expected_env=f.env,
                          expected_shapes={"num_agents": env.num_agents, "obs_dim": env.obs_dim,
                                           "act_dim": env.act_dim}, where=f"dataset {path!r}")
    n, want = int(ds.num_transitions), int(config.dataset_size)
    if not want <= n < want + env.episode_length:  # generation rounds up to whole episodes
        msg = (f"dataset {path!r} holds {n} transitions but the config asks for "
               f"dataset_size={want}")
        if f.dataset is None:  # found by name under --data_root: it must be the size asked for
            raise SystemExit(f"error: {msg}; regenerate it, or pass --config.dataset_size={n}")
        _say(f"warning: {msg}; training on all {n} (the protocol records the actual size)")
    new_workdir = not os.path.exists(f.workdir)
    try:
        os.makedirs(f.workdir, exist_ok=True)  # only once the config and the data are known good
    except OSError as e:
        raise SystemExit(f"cannot create --workdir {f.workdir!r}: {e.strerror or e}")
    _lock = lock_workdir(  # noqa: F841  (held until this process exits)
        f.workdir, ".lock" if nproc == 1 else f".lock.process{proc}")
    # The files' digests (meta.sha256) name the data this run trains on: a dataset regenerated
    # at the same path (another machine's CPU gives other HalfCheetah rollouts) is refused on
    # resume instead of silently mixed into the run.
    file_digests = ds.meta.get("sha256") or {}
    dataset_sha256 = (hashlib.sha256(json.dumps(file_digests, sort_keys=True).encode()).hexdigest()
                      if file_digests else None)
    if config.data_fraction < 1.0:
        ds = data.subsample(ds, float(config.data_fraction), f.seed)
    if config.augment:
        ds = data.augment(ds, data.default_thresholds(ds, tuple(config.augment_quantiles)))
    refs = ds.reference_returns or {}

    resolved = {"config": config.to_dict(), "cli_overrides": cli, "algo": f.algo, "env": f.env,
                "quality": f.quality, "dataset": os.path.abspath(path), "num_seeds": f.num_seeds,
                "seed": f.seed, "shift": f.shift, "preset": f.preset,
                "dataset_transitions_used": ds.num_transitions, "dataset_sha256": dataset_sha256,
                "eval_backend": eval_backend,
                "command": " ".join(sys.argv)}
    cfg_file = os.path.join(f.workdir, "config.json")
    if os.path.exists(cfg_file):
        old = json.load(open(cfg_file))
        if hasattr(algo, "Hparams") and isinstance(old.get("config", {}).get("agent"), dict):
            old["config"]["agent"] = algo.Hparams.with_later_fields(old["config"]["agent"])
        keep = ("config", "algo", "env", "dataset", "num_seeds", "seed", "shift")
        if any(old.get(k) != json.loads(json.dumps(resolved[k], default=list)) for k in keep):
            raise SystemExit(f"{f.workdir} holds a run with a different config; use a new "
                             "--workdir (or delete it) instead of resuming.")
        if old.get("dataset_sha256") not in (None, dataset_sha256):  # runs before 2026-12 lack it
            raise SystemExit(f"{f.workdir} was trained on other data than {path} holds now (the "
                             "files' sha256 differ: regenerated or replaced since the run "
                             "started); use a new --workdir, or restore that dataset, instead "
                             "of resuming.")
        stored = _finished_results(f.workdir, f.num_seeds)
        if stored is not None:  # nothing to do: say what it found, change nothing
            _say(f"{f.workdir} holds a finished run (same config and data); nothing was run "
                 "or changed. Its stored result:")
            print(_summary_line(stored))
            print(f"results: {os.path.join(f.workdir, 'results.json')}")
            return stored

    arrays = data.to_device(ds)
    trainer = make_train(config, arrays, env, shift_env, evaluate_in_chunk=eval_backend == "jax")
    if eval_backend == "cpu":  # C MuJoCo between chunks (dom2_jax.training.host_eval)
        host_evaluate = make_cpu_evaluate(trainer.act, env, shift_env, int(config.eval_episodes))
    # seed i is fold_in(PRNGKey(seed), i) whichever process trains it
    seeds = jax.vmap(lambda i: jax.random.fold_in(jax.random.PRNGKey(f.seed), i))(
        jnp.asarray(block))
    init = jax.jit(jax.vmap(trainer.init))
    carry = init(seeds)
    devices = jax.local_devices()[:f.devices or None]
    if f.devices > len(jax.local_devices()):
        raise SystemExit(f"--devices={f.devices}: only {len(jax.local_devices())} local "
                         "device(s)")
    sharding = None
    if len(devices) > 1:
        sharding = NamedSharding(Mesh(np.array(devices), ("seed",)), PartitionSpec("seed"))
    _say(f"{f.algo} on {f.env}: {int(config.num_updates)} updates of batch "
         f"{int(config.agent.batch_size)}, evaluating {int(config.eval_episodes)} episodes every "
         f"{int(config.eval_every)}; observations "
         f"{'standardised' if config.get('normalize_obs', False) else 'raw'}; "
         f"{f.num_seeds} seed(s) from --seed={f.seed}; preset {f.preset or 'none (paper scale)'}; "
         f"data {path} ({ds.num_transitions} transitions used). Full config: "
         f"{os.path.join(f.workdir, 'config.json')} (or --show_config)")
    _say("compiling the training program (on a CPU this takes ~10-60 s; "
         "--compilation_cache=DIR reuses it across runs)...")
    plan_name = "seed_plan.json" if nproc == 1 else f"seed_plan.process{proc}.json"
    if nproc > 1:
        _say(f"{nproc} processes (jax.distributed), {f.num_seeds} seeds in blocks of "
             f"{len(block)}: each trains, evaluates and checkpoints its own")
    t_compile = time.time()
    try:  # refuses sizes that cannot fit, before anything of the run is written
        plan, chunk = plan_seed_groups(f, trainer, algo, carry, sharding, local_k, plan_name)
    except ValueError:
        if new_workdir and proc == 0:
            shutil.rmtree(f.workdir, ignore_errors=True)
        raise
    compile_s = time.time() - t_compile
    _say(f"compiled in {compile_s:.0f} s")
    if proc == 0:
        reporting.write_json(cfg_file, resolved)
    reporting.write_json(os.path.join(f.workdir, plan_name),
                         dict(plan.to_json(), num_seeds=local_k))
    groups = seed_plan.group_indices(local_k, plan.group)
    if sharding is not None:
        _say(f"sharding each group of {plan.group} seeds over {len(devices)} devices")

    if nproc == 1:
        ckpt = Checkpointer(os.path.join(f.workdir, "checkpoints"), int(config.keep_checkpoints))
    else:  # this process's seeds only (dom2_jax.training.checkpoint.ProcessCheckpointer)
        ckpt = ProcessCheckpointer(os.path.join(f.workdir, "checkpoints", f"process{proc}-of-"
                                                f"{nproc}"), int(config.keep_checkpoints))
    log = reporting.MetricsLog.load(os.path.join(f.workdir, "metrics.csv"))
    if proc != 0:
        log.path = None  # process 0 writes the log
    start, restored = 0, None
    if ckpt.latest_step() is not None:
        restored = ckpt.restore(carry, set_aside=True)  # damaged newest step: the next older one
        start = int(np.asarray(restored.chunk)[0])
    agreed = multihost.agree_on_min(start, nproc)
    if agreed != start:  # another process is behind (stopped mid-save): resume where all can
        restored = ckpt.restore(carry, step=agreed) if agreed else None
        start = agreed
    if restored is not None:
        carry = restored
        log.truncate(start * int(config.eval_every))
        _say(f"resumed from chunk {start} ({start * config.eval_every} updates)")
    else:
        log.rows = []
    tb = (reporting.TensorBoardLog(os.path.join(f.workdir, "tb"),
                                   purge_step=start * int(config.eval_every) + 1 if start else None)
          if f.tensorboard and proc == 0 else None)

    k = int(config.eval_every)
    t0 = time.time()
    first_chunk_s = None
    bar = tqdm(total=trainer.num_chunks * k, initial=start * k, unit="upd",
               disable=not f.progress or proc != 0, dynamic_ncols=True)
    ev = None
    for c in range(start, trainer.num_chunks):
        tc = time.time()
        carry, summary, ev = run_groups(chunk, carry, groups, local_k, sharding)
        summary, ev = jax.device_get((summary, ev))
        if eval_backend == "cpu":
            ev = host_evaluate(carry.state, ev["eval_key"])
        summary, ev = multihost.gather_seeds((summary, ev), f.num_seeds, nproc)
        if first_chunk_s is None:
            first_chunk_s = time.time() - tc
        bad = first_nonfinite(summary)
        if bad is not None:
            raise NonFiniteLossError(
                f"non-finite '{bad[0]}' first at update {c * k + bad[1] + 1} (chunk {c}: "
                f"updates {c * k + 1}..{(c + 1) * k}); no checkpoint was written for it. "
                f"Last good checkpoint: {ckpt.latest_step()}.")
        step = (c + 1) * k
        row = {"step": step, "wall_s": time.time() - t0}
        row.update({m: float(np.mean(v)) for m, v in summary.items() if "/" not in m})
        for i in range(f.num_seeds):
            row[f"eval/seed{i}"] = float(ev["score_mean"][i])
            row[f"eval_std/seed{i}"] = float(ev["score_std"][i])
            if "shift_score_mean" in ev:
                row[f"shift_eval/seed{i}"] = float(ev["shift_score_mean"][i])
                row[f"shift_eval_std/seed{i}"] = float(ev["shift_score_std"][i])
        log.append(row)
        if tb is not None:
            tb.write(row)
        ckpt.save(c + 1, carry)
        if proc == 0:
            reporting.plot_learning_curve(
                log.rows, os.path.join(f.workdir, "learning_curve.png"),
                f"{f.algo} on {f.env} ({f.quality or path})", f.num_seeds, refs)
        mean_eval = float(np.mean(ev["score_mean"]))
        bar.set_postfix(eval=f"{mean_eval:.1f}", critic=f"{row.get('critic_loss', np.nan):.3g}")
        bar.update(k)
        if not f.progress and proc == 0:  # logs (sweeps, device runs): a line per evaluation
            print(f"update {step}/{trainer.num_chunks * k}: eval {mean_eval:.1f} "
                  f"({row['wall_s']:.0f} s)", flush=True)
    bar.close()
    if tb is not None:
        tb.close()
    wall = time.time() - t0

    # Results: final and best evaluations per seed.
    results = {"algo": f.algo, "env": f.env, "quality": f.quality, "dataset": os.path.abspath(path),
               "num_seeds": f.num_seeds, "num_updates": int(config.num_updates),
               "eval_episodes": int(config.eval_episodes), "eval_backend": eval_backend,
               "shift": f.shift,
               "reference_returns": refs, "config": config.to_dict(),
               "wall_clock_s": wall, "compile_s": compile_s, "first_chunk_s": first_chunk_s,
               "first_chunk_s_incl_compile": compile_s + (first_chunk_s or 0.0),
               "seed_plan": plan.to_json(),
               "devices": [str(d) for p in range(nproc) for d in
                           [x for x in jax.devices() if x.process_index == p][:f.devices or None]],
               "processes": nproc,
               "process_seed_blocks": [multihost.seed_block(f.num_seeds, p, nproc).tolist()
                                       for p in range(nproc)],
               "updates_per_s_per_seed": (trainer.num_chunks - start) * k / max(wall, 1e-9),
               "system": reporting.system_info(), "seeds": []}
    if trainer.obs_stats is not None:  # what act() needs: obs -> (obs - mean) / std first
        results["obs_normalization"] = {k: np.asarray(v).tolist()
                                        for k, v in trainer.obs_stats.items()}
    # The last chunk ends with an evaluation of the final parameters. A run stopped after its
    # last checkpoint but before results.json takes that evaluation back from metrics.csv
    # (same numbers as the uninterrupted run); only runs from before the per-seed std was
    # logged evaluate the final parameters again.
    final_keys = jax.vmap(lambda s: jax.random.fold_in(s, 999))(seeds)
    last = log.rows[-1] if log.rows else {}
    logged = ev is None and last.get("step") == trainer.num_chunks * k and all(
        np.isfinite(last.get(f"{p}/seed{i}", np.nan)) for i in range(f.num_seeds)
        for p in ("eval", "eval_std") + (("shift_eval", "shift_eval_std") if f.shift else ()))
    if ev is not None:
        final = ev
    elif logged:
        final = {"score_mean": [last[f"eval/seed{i}"] for i in range(f.num_seeds)],
                 "score_std": [last[f"eval_std/seed{i}"] for i in range(f.num_seeds)]}
        if f.shift:
            final.update(
                shift_score_mean=[last[f"shift_eval/seed{i}"] for i in range(f.num_seeds)],
                shift_score_std=[last[f"shift_eval_std/seed{i}"] for i in range(f.num_seeds)])
    elif eval_backend == "cpu":
        final = multihost.gather_seeds(host_evaluate(carry.state, final_keys), f.num_seeds, nproc)
    else:
        final = multihost.gather_seeds(
            jax.device_get(jax.jit(jax.vmap(trainer.evaluate))(carry.state, final_keys)),
            f.num_seeds, nproc)
    for i in range(f.num_seeds):
        curve = [r[f"eval/seed{i}"] for r in log.rows]
        entry = {"seed_index": i, "final_score_mean": float(final["score_mean"][i]),
                 "final_score_std": float(final["score_std"][i]),
                 "best_eval_score": float(np.max(curve)) if curve else None}
        if "shift_score_mean" in final:
            entry.update(final_shift_score_mean=float(final["shift_score_mean"][i]),
                         final_shift_score_std=float(final["shift_score_std"][i]))
        if refs.get("random") is not None and refs.get("expert") is not None:
            entry["final_normalized_score"] = data.normalized_score(entry["final_score_mean"], refs)
            if "final_shift_score_mean" in entry:
                entry["final_shift_normalized_score"] = data.normalized_score(
                    entry["final_shift_score_mean"], refs)
        results["seeds"].append(entry)
    scores = [s["final_score_mean"] for s in results["seeds"]]
    results["final_score_mean_over_seeds"] = float(np.mean(scores))
    results["final_score_std_over_seeds"] = float(np.std(scores))
    if "final_normalized_score" in results["seeds"][0]:
        results["final_normalized_score_mean"] = float(
            np.mean([s["final_normalized_score"] for s in results["seeds"]]))
    ckpt.close()
    if proc != 0:  # process 0 writes every seed's results
        return results
    reporting.write_json(os.path.join(f.workdir, "results.json"), results)
    print(_summary_line(results))
    print(f"results: {os.path.join(f.workdir, 'results.json')}")
    return results


def plan_seed_groups(f, trainer, algo, carry, sharding=None, num_seeds=None,
                     plan_name="seed_plan.json"):
    """(SeedPlan, compiled vmapped chunk for the plan's group width); see
    ``dom2_jax.training.seed_plan``. A workdir's recorded plan is reused. With ``sharding``
    (a 1-D mesh over the seed axis) every group is a multiple of the device count and is
    compiled for inputs split over the devices. ``num_seeds`` (default ``--num_seeds``): the
    seeds this process trains, planned in ``WORKDIR/plan_name``."""
    k = f.num_seeds if num_seeds is None else int(num_seeds)
    n_dev = 1 if sharding is None else sharding.mesh.size
    take = lambda idx: jax.tree.map(lambda x: x[idx], carry)
    # The carry is donated: a chunk's new carry takes the old one's buffers, so the seeds'
    # states are held once (64 paper-size DOM2 seeds are 9 GiB on a 24 GiB host).
    # The dataset is an argument, not a constant of the program (``Trainer.chunk_on``).
    chunk_fn = jax.jit(jax.vmap(trainer.chunk_on, in_axes=(0, None)), donate_argnums=0)
    train_data = trainer.data
    compiled = {}

    def abstract(g):  # a group's carry as sharded shapes (every leaf has the seed axis first)
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct((g,) + x.shape[1:], x.dtype,
                                                           sharding=sharding), carry)

    def compile_chunk(g):
        if g not in compiled:
            compiled[g] = chunk_fn.lower(abstract(g) if sharding is not None
                                         else take(np.zeros(g, int)), train_data).compile()
        return compiled[g]

    data_bytes = seed_plan.tree_bytes(train_data)

    def seeds_bytes(program):
        """XLA's bytes of a compiled group program less the dataset: an argument of every
        group's program but held once (already allocated, so not in the free memory either),
        not a per-seed cost. None without a memory analysis."""
        b = seed_plan.compiled_bytes(program)
        return max(b - data_bytes, 1) if b else None

    plan_file = os.path.join(f.workdir, plan_name)
    stored = json.load(open(plan_file)) if os.path.exists(plan_file) else {}
    one_bytes = None
    capacity = seed_plan.device_free_bytes()
    if stored.get("num_seeds") == k and stored.get("group"):
        group, reason, rates, max_group = int(stored["group"]), "recorded in seed_plan.json", \
            stored.get("rates", {}), stored.get("max_group")
    elif f.seed_group > 0 or k == 1 or n_dev > 1:
        group, reason, rates, max_group = (min(f.seed_group or k, k), "--seed_group" if
                                           f.seed_group else "all seeds on the devices", {}, None)
    else:
        # one seed per device (SPMD: the analysis is per device); compiled only to plan
        one_bytes = seeds_bytes(compile_chunk(n_dev))
        max_group = seed_plan.memory_plan(one_bytes, k, capacity)
        n = 8  # updates per timing call

        def rate_of(g):
            fn = jax.jit(jax.vmap(lambda st, key, d: scan_updates(algo.update, st, d, key, n),
                                  in_axes=(0, None, None)))
            return seed_plan.timed_rate(fn, (take(np.zeros(g, int)).state,
                                             jax.random.PRNGKey(0), train_data), n, g)

        group, rates = seed_plan.choose_group(k, max_group, rate_of, log=_say)
        reason = "measured"
    group = -(-group // n_dev) * n_dev  # an equal share per device (padded)
    plan = seed_plan.SeedPlan(group=group, num_groups=-(-k // group), bytes_per_seed=one_bytes,
                              capacity_bytes=capacity, max_group=max_group,
                              rates={str(a): b for a, b in rates.items()}, reason=reason)
    compiled_chunk = compile_chunk(group)
    group_bytes = seeds_bytes(compiled_chunk)
    if one_bytes is None and group_bytes:
        plan = dataclasses.replace(plan, bytes_per_seed=group_bytes // max(group // n_dev, 1))
    if k == 1 and group_bytes:  # the one compile a single seed needs anyway: does it fit?
        seed_plan.memory_plan(group_bytes, 1, capacity)
    if k > 1:
        _say(f"seed plan: {k} seeds as {plan.num_groups} group(s) of {group} ({reason})")
    return plan, lambda c: compiled_chunk(c, train_data)


def run_groups(chunk, carry, groups, num_seeds, sharding=None):
    """One chunk for every seed, group by group (each group one call of the compiled vmapped
    chunk). Each group's new carry is written into ``carry`` in place (``_put_group``, the old
    buffers donated), so the seeds' states are held once plus one group; the padded tail of
    the last group is dropped. With ``sharding`` each group is placed split over the devices
    and its outputs are brought back to the carry's device."""
    if sharding is None and len(groups) == 1 and len(groups[0]) == num_seeds:
        return chunk(carry)
    summaries, evs, done = [], [], 0
    for idx in groups:
        real = idx[:min(len(idx), num_seeds - done)]  # without the padding
        done += len(real)
        sub = jax.tree.map(lambda x: x[idx], carry)
        if sharding is not None:
            sub = jax.device_put(sub, sharding)
        new, summary, ev = chunk(sub)
        if sharding is not None:
            new, summary, ev = jax.device_get((new, summary, ev))
        head = lambda t: jax.tree.map(lambda x: x[:len(real)], t)  # noqa: E731
        carry = _put_group(carry, jnp.asarray(real), head(new))
        summaries.append(head(summary))
        evs.append(head(ev))
    cat = lambda *xs: jnp.concatenate([jnp.asarray(x) for x in xs])  # noqa: E731
    return carry, jax.tree.map(cat, *summaries), jax.tree.map(cat, *evs)


@functools.partial(jax.jit, donate_argnums=0)
def _put_group(carry, idx, new):
    """``carry`` with rows ``idx`` replaced by ``new`` (in place: ``carry`` is donated)."""
    return jax.tree.map(lambda x, y: x.at[idx].set(y), carry, new)


def disk_full(error) -> bool:
    """Whether ``error`` or an exception in its chain is ENOSPC (orbax and tensorstore re-raise
    it in their own types, sometimes only as text)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if getattr(error, "errno", None) == errno.ENOSPC or "No space left on device" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


def _first_line(e, limit=160):
    lines = str(e).strip().splitlines()
    return (lines[0] if lines else type(e).__name__)[:limit]


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    try:
        run()
    except (ValueError, DatasetError) as e:  # bad config / dataset: one clear line, no trace
        logging.error("%s", e)
        raise SystemExit(f"error: {e}")
    except Exception as e:  # noqa: BLE001 - a full disk (orbax wraps it): one line, resumable
        if not disk_full(e):
            raise
        workdir = FLAGS["workdir"].value
        raise SystemExit(f"error: no space left on device while writing {workdir} "
                         f"({_first_line(e)}); free some space and re-run the same command: "
                         "it resumes from the newest complete checkpoint")
    except KeyboardInterrupt:  # Ctrl-C: the newest complete checkpoint is where a re-run resumes
        print("interrupted: re-run the same command to resume from the newest checkpoint",
              file=sys.stderr, flush=True)
        sys.stdout.flush()
        # Exit now: background threads (orbax's async saves, XLA's pools) must not keep the
        # process alive. Checkpoints are written to a temporary directory and renamed, so an
        # unfinished save is ignored by the next run.
        os._exit(130)


if __name__ == "__main__":
    app.run(main)
