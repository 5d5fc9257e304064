r"""Return, latency and accuracy of a trained DOM2 policy versus the sampler and its steps N.

    python -m benchmarks.solver_steps                     # CPU default (~10 min incl. training)
    python -m benchmarks.solver_steps --workdir=runs/x    # use a policy from experiments.train
    python -m benchmarks.solver_steps --device            # accelerator: larger batches, label
    python -m benchmarks.solver_steps --quick             # seconds-scale sizes (tests)

What it measures, for every sampler in ``dom2_jax.diffusion.SOLVERS`` (DPM-Solver order 1, 2,
3, DPM-Solver++(2M), DDPM) and N in ``--steps`` (default 1,2,3,5,10,20,50):
  * evaluation return of the trained policy: ``--eval_episodes`` episodes (200; 2000 with
    ``--device``) in one jitted, vmapped rollout, the same episode keys for every setting;
  * action-sampling latency: batch 1 (one environment step, all agents), median of
    ``--latency_repeats`` jitted calls after compilation (includes dispatch overhead);
  * throughput: joint actions per second at batch ``--throughput_batch`` (1024);
  * sample accuracy on targets whose noised marginal is exact (no network): a 2-D Gaussian
    mixture (sliced Wasserstein-1, mean, covariance and mode-weight errors against exact
    samples of q_{t_end}; the distance between two exact sample sets is reported as the
    floor) and, for the deterministic solvers, the max error against the exact
    probability-flow map of a Gaussian (the target of BUILD_NOTES' solver table).

The policy: by default the script trains one itself with the launcher
(``experiments.train --preset=quick`` on the 100k-transition spread expert dataset, generated
if missing, with ``--num_updates`` updates; a smaller budget than the quick preset's 3000 so
the whole run fits ~10 minutes on 2 CPU cores) into ``--train_dir`` and reuses it when it is
already complete. ``--workdir=DIR`` evaluates a policy trained earlier by
``python -m experiments.train ... --workdir=DIR`` instead (seed ``--seed_index``). The policy
was TRAINED with one sampler setting (its config's solver order / N / grid, first-order N=5 on
MPE by default); this benchmark swaps only the sampler used at evaluation, and the output says
so.

HalfCheetah (``--env=mamujoco_halfcheetah_2x3``) runs only with ``--workdir`` (no trained
behaviour policy exists to make a non-random dataset, and MJX compiles slowly on CPU); without
one the outputs hold an explicit "not run here" entry with the reason.

``--device``: label the output files with ``jax.devices()[0].device_kind`` and use larger
batches (2000 evaluation episodes, 65536 accuracy samples); the code is the same on CPU and GPU.
Outputs: ``benchmarks/results/solver_steps[_<device>].{json,md,png}`` (``--quick`` runs:
``runs/benchmarks/``, so they never replace the committed results; ``--out`` to change the
directory). JSON keys: ``benchmark, env, device_label, system, command, settings, policy,
note, rows`` (one per solver and N: ``solver, num_steps, grid, network_calls, return_mean,
return_std, return_stderr, normalized_score, latency_ms_median, latency_ms_p90,
throughput_joint_actions_per_s, throughput_batch, compile_s``), ``accuracy`` (``target,
num_samples, floor_sliced_w1, rows``: ``solver, num_steps, network_calls, sliced_w1,
mean_error, cov_error, mode_weight_error, gaussian_flow_max_error``), ``library_sampler_check``
(the trained setting re-measured with ``diffusion.sample`` when the sweep used the dynamic-N
sampler) and ``not_run``.

Sampler implementation (``--sampler_impl``): on CPU the sweep uses ``dynamic_sample``, the
library's step formulas in a ``fori_loop`` whose trip count N is traced, so one compiled
program per solver serves every N (each XLA compile costs 3-8 s on 2 CPU cores; 35 static
programs x 3 shapes would not fit the ~10 minute budget). It equals ``diffusion.sample`` to
float32 rounding (tests), and the trained setting is re-measured with the library sampler as
a check. ``--sampler_impl=library`` (the default with ``--device``) uses ``diffusion.sample``
for every point. The accuracy part always uses ``diffusion.sample``.
"""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import re
import subprocess
import sys
import time
from typing import List, Optional, Sequence

import jax
import jax.numpy as jnp
import matplotlib
import matplotlib.pyplot as plt
import ml_collections
import numpy as np
from absl import app, flags
from matplotlib.ticker import NullFormatter, ScalarFormatter

from benchmarks import cli
from benchmarks.outputs import default_out
from dom2_jax import diffusion, envs
from dom2_jax.algos import dom2
from dom2_jax.diffusion import SOLVERS
from dom2_jax.diffusion import solvers as lib
from dom2_jax.envs.rollout import make_rollout
from dom2_jax.training.checkpoint import Checkpointer
from dom2_jax.training.reporting import system_info, write_json
from dom2_jax.training.trainer import carry_template

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_STEPS = (1, 2, 3, 5, 10, 20, 50)
SOLVER_LABELS = {"dpm1": "DPM-Solver-1 (DDIM)", "dpm2": "DPM-Solver-2", "dpm3": "DPM-Solver-3",
                 "dpmpp2m": "DPM-Solver++(2M)", "ddpm": "DDPM (ancestral)"}
HALFCHEETAH_NOT_RUN = (
    "not run here: no trained HalfCheetah behaviour policy exists (only random-quality data can "
    "be generated, so a DOM2 policy trained on it says little about solver steps) and MJX "
    "compiles slowly on CPU; pass --workdir of an experiments.train run on HalfCheetah to run it")


def _say(msg):
    print(msg, flush=True)


def device_label(device_kind: str) -> str:
    """File-name friendly device kind, e.g. 'NVIDIA H100 80GB HBM3' -> 'nvidia_h100_80gb_hbm3'."""
    return re.sub(r"[^a-z0-9]+", "_", device_kind.lower()).strip("_") or "device"


# ----------------------------------------------------------------------------- samplers
def dynamic_sample(solver, eps_fn, x_T, schedule, num_steps, key=None, t_end=1e-3, grid="logsnr",
                   t_start=1.0):
    """``diffusion.sample`` with ``num_steps`` a TRACED int: one compiled program serves every N.

    Every solver calls the library's own step function (``solvers._dpm_step``,
    ``_dpmpp2m_step``, ``_ddpm_step``) on the same time grid (uniform in log-SNR or in t, end
    points pinned). The loop is a ``lax.fori_loop`` with a dynamic trip count instead of a
    ``lax.scan`` of static length: both lower to an XLA while loop, so the per-step cost is the
    same, but a sweep over N compiles once instead of once per N (XLA compiles take 3-8 s per
    program on the 2-core CPU). Outputs equal ``diffusion.sample`` to float32 rounding
    (tests/test_benchmarks.py); DDPM draws its per-step noise with ``fold_in(key, i)`` instead
    of ``split(key, N)[i]`` (same distribution, other numbers).
    """

    dt = x_T.dtype
    n = jnp.asarray(num_steps, jnp.int32)
    l_start = schedule.log_snr(jnp.asarray(t_start, dt))
    l_end = schedule.log_snr(jnp.asarray(t_end, dt))

    def t_at(i):
        frac = i.astype(dt) / n.astype(dt)
        if grid == "logsnr":
            t = schedule.t_from_log_snr(l_start + frac * (l_end - l_start))
        elif grid == "time_uniform":
            t = t_start + frac * (t_end - t_start)
        else:
            raise ValueError(f"unknown time grid {grid!r}")
        return jnp.where(i == 0, jnp.asarray(t_start, dt),
                         jnp.where(i == n, jnp.asarray(t_end, dt), t)).astype(dt)

    if solver in ("dpm1", "dpm2", "dpm3"):
        order = int(solver[-1])
        r1, r2 = (0.5, None) if order == 2 else (1.0 / 3.0, 2.0 / 3.0)
        body = lambda i, x: lib._dpm_step(eps_fn, schedule, x, t_at(i), t_at(i + 1), order, r1, r2,
                                          grid)
        return jax.lax.fori_loop(0, n, body, x_T)
    if solver == "dpmpp2m":
        body = lambda i, c: lib._dpmpp2m_step(eps_fn, schedule, *c, t_at(i), t_at(i + 1), i == 0)
        return jax.lax.fori_loop(0, n, body, (x_T, jnp.zeros_like(x_T), jnp.ones((), dt)))[0]
    if solver == "ddpm":
        if key is None:
            raise ValueError("the ddpm sampler is stochastic and needs a PRNG key")

        def body(i, x):
            noise = jax.random.normal(jax.random.fold_in(key, i), x.shape, x.dtype)
            return lib._ddpm_step(eps_fn, schedule, x, t_at(i), t_at(i + 1), noise, i == n - 1)
        return jax.lax.fori_loop(0, n, body, x_T)
    raise ValueError(f"unknown solver {solver!r}")


# ----------------------------------------------------------------------------- policy
def make_policy(hp, solver: str, num_steps=None, grid=None, impl="library"):
    """A policy that samples with ``solver`` instead of the trained solver setting.

    impl "library": ``policy(actor_params, obs [..., A, obs_dim], key)`` with ``num_steps``
    fixed, sampling with ``diffusion.sample`` (one compile per N). impl "dynamic":
    ``policy((actor_params, n), obs, key)`` with ``n`` an int32 array, sampling with
    ``dynamic_sample`` (one compile for all N).

    Key use matches ``dom2.act``: one key per agent, which draws x_T; so at the trained setting
    the library policy equals ``dom2.act`` exactly (tests check it). DDPM's noise uses a key
    folded from the agent's key. ``grid`` None: the policy's grid for the DPM solvers, the
    library default ("time_uniform") for DDPM.
    """

    net, sched = hp.noise_net_module, hp.schedule
    grid = grid or solver_grid(hp, solver)

    def agent(params, n, obs, key):
        x_T = jax.random.normal(key, obs.shape[:-1] + (hp.act_dim,), obs.dtype)
        eps_fn = lambda x, t: net.apply(params, x, obs, t)
        k_noise = jax.random.fold_in(key, 1) if solver == "ddpm" else None
        if impl == "dynamic":
            a = dynamic_sample(solver, eps_fn, x_T, sched, n, key=k_noise, t_end=hp.t_end,
                               grid=grid)
        else:
            a = diffusion.sample(solver, eps_fn, x_T, sched, num_steps, key=k_noise,
                                 t_end=hp.t_end, grid=grid)
        return jnp.clip(a, -1.0, 1.0)

    def policy(params, obs, key):
        actor, n = params if impl == "dynamic" else (params, None)
        lead = obs.shape[:-2]
        obs_a = jnp.moveaxis(obs.reshape((-1,) + obs.shape[-2:]), 1, 0)  # [A, M, obs_dim]
        keys = jax.random.split(key, hp.num_agents)
        acts = jax.vmap(lambda p, o, k: agent(p, n, o, k))(actor, obs_a, keys)
        return jnp.moveaxis(acts, 0, 1).reshape(lead + (hp.num_agents, hp.act_dim))

    if impl not in ("library", "dynamic"):
        raise ValueError(f"impl must be 'library' or 'dynamic', got {impl!r}")
    if impl == "library" and num_steps is None:
        raise ValueError("impl='library' needs num_steps")
    return policy


def solver_grid(hp, solver):
    return "time_uniform" if solver == "ddpm" else hp.solver_grid


def trained_solver(hp):
    return f"dpm{hp.solver_order}"


def eval_params(state):
    return state.actor_ema if state.hp.ema_decay > 0 else state.actor.params


# ----------------------------------------------------------------------------- training / loading
def train_command(args, train_dir):
    cmd = [sys.executable, "-m", "experiments.train", "--algo=dom2", f"--env={args.env}",
           "--progress=false", f"--workdir={train_dir}", f"--preset={args.preset}",
           f"--config.num_updates={args.num_updates}", f"--config.eval_every={args.eval_every}"]
    if args.dataset:
        cmd.append(f"--dataset={os.path.abspath(args.dataset)}")
    else:
        cmd += [f"--quality={args.quality}", f"--data_root={os.path.abspath(args.data_root)}",
                "--generate_missing"]
    cmd += [f"--config.{kv}" for kv in args.train_override]
    return cmd


def train_policy(args, train_dir):
    """Runs the launcher into ``train_dir`` unless it already holds a finished run."""
    if os.path.exists(os.path.join(train_dir, "results.json")):
        _say(f"reusing the trained policy in {train_dir} (delete it to retrain)")
        return None
    cmd = train_command(args, train_dir)
    _say("training: " + " ".join(cmd[1:]))
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    t0 = time.time()
    # stdout (the launcher's final score line) is captured and echoed; its progress messages
    # on stderr stream through.
    r = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    if r.returncode != 0:
        raise SystemExit(f"training failed (exit {r.returncode}; its messages are above):\n"
                         f"{r.stdout[-3000:]}")
    _say(r.stdout.strip())
    return time.time() - t0


def load_policy(workdir, seed_index=0):
    """(state of seed ``seed_index``, env, run info) from an experiments.train workdir."""

    cfg_path = os.path.join(workdir, "config.json")
    if not os.path.exists(cfg_path):
        raise SystemExit(f"{workdir} has no config.json: not an experiments.train workdir")
    resolved = json.load(open(cfg_path))
    if resolved.get("algo") != "dom2":
        raise SystemExit(f"{workdir} holds a {resolved.get('algo')!r} run; this benchmark "
                         "needs a DOM2 policy (--algo=dom2)")
    config = ml_collections.ConfigDict(resolved["config"])
    env = envs.make(resolved["env"], **dict(config.get("env_kwargs", {})))
    num_seeds = int(resolved.get("num_seeds", 1))
    if not 0 <= seed_index < num_seeds:
        raise SystemExit(f"--seed_index={seed_index} but {workdir} has {num_seeds} seed(s)")

    template = carry_template(dom2, config.agent, env, num_seeds)
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"))
    step = ckpt.latest_step()
    if step is None:
        raise SystemExit(f"{workdir} has no complete checkpoint")
    carry = ckpt.restore(template)
    ckpt.close()
    state = jax.tree.map(lambda x: x[seed_index], carry.state)
    info = {"workdir": os.path.abspath(workdir), "env": resolved["env"],
            "quality": resolved.get("quality"), "dataset": resolved.get("dataset"),
            "seed_index": seed_index, "checkpoint_chunk": int(step),
            "num_updates_done": int(step) * int(config.eval_every),
            "preset": resolved.get("preset"), "command": resolved.get("command")}
    res_path = os.path.join(workdir, "results.json")
    if os.path.exists(res_path):
        res = json.load(open(res_path))
        seed = res["seeds"][seed_index]
        info.update(final_score_launcher=seed.get("final_score_mean"),
                    final_normalized_score_launcher=seed.get("final_normalized_score"),
                    reference_returns=res.get("reference_returns") or {},
                    launcher_wall_clock_s=res.get("wall_clock_s"))
    return state, env, info


# ----------------------------------------------------------------------------- timing
def _time_calls(fn, args, repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    compile_s = time.perf_counter() - t0
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        ts.append(time.perf_counter() - t)
    ts.sort()
    return ts, compile_s


def measure_policy(state, env, solvers, steps, args, refs, log=_say):
    """Rows of return / latency / throughput for every (solver, N)."""

    hp = state.hp
    actor = eval_params(state)
    k_eval, k_obs, k_act = jax.random.split(jax.random.PRNGKey(args.seed), 3)
    obs_batch, _ = jax.vmap(env.reset)(jax.random.split(k_obs, args.throughput_batch))
    obs_one = obs_batch[0]
    rows = []
    for solver in solvers:
        if args.sampler_impl == "dynamic":  # one compiled rollout / latency program per solver
            policy = make_policy(hp, solver, impl="dynamic")
            run = jax.jit(make_rollout(env, policy, args.eval_episodes))
            act = jax.jit(policy)
        for n in steps:
            if args.sampler_impl == "dynamic":
                params = (actor, jnp.asarray(n, jnp.int32))
            else:
                params = actor
                policy = make_policy(hp, solver, n)
                run = jax.jit(make_rollout(env, policy, args.eval_episodes))
                act = jax.jit(policy)
            t0 = time.perf_counter()
            score = np.asarray(jax.device_get(run(params, k_eval)["score"]))
            rollout_s = time.perf_counter() - t0
            lat, c_lat = _time_calls(act, (params, obs_one, k_act), args.latency_repeats)
            thr, c_thr = _time_calls(act, (params, obs_batch, k_act), args.throughput_repeats)
            mean = float(score.mean())
            row = {"solver": solver, "num_steps": n, "grid": solver_grid(hp, solver),
                   "network_calls": diffusion.network_calls(solver, n),
                   "return_mean": mean, "return_std": float(score.std()),
                   "return_stderr": float(score.std() / np.sqrt(len(score))),
                   "normalized_score": _normalized(mean, refs),
                   "latency_ms_median": 1e3 * float(np.median(lat)),
                   "latency_ms_p90": 1e3 * float(np.percentile(lat, 90)),
                   "throughput_batch": args.throughput_batch,
                   "throughput_joint_actions_per_s": args.throughput_batch / float(np.median(thr)),
                   "compile_s": {"rollout_incl_run": rollout_s, "latency_first_call": c_lat,
                                 "throughput_first_call": c_thr},
                   "trained_setting": (solver == trained_solver(hp)
                                       and n == hp.num_solver_steps)}
            rows.append(row)
            log(f"{solver:8s} N={n:3d} NFE={row['network_calls']:4d}  return "
                f"{mean:8.1f} +- {row['return_stderr']:5.1f}"
                + (f" (norm {row['normalized_score']:6.1f})" if row["normalized_score"]
                   is not None else "")
                + f"  latency {row['latency_ms_median']:7.2f} ms  throughput "
                f"{row['throughput_joint_actions_per_s']:10,.0f}/s")
    return rows


def library_check(state, env, args, refs, log=_say):
    """The trained setting measured again with the library sampler (``diffusion.sample``,
    static N; the exact ``dom2.act`` path), to compare with the dynamic-N loop's figures."""
    a = dataclasses.replace(args, sampler_impl="library")
    hp = state.hp
    rows = measure_policy(state, env, [trained_solver(hp)], [hp.num_solver_steps], a, refs,
                          log=lambda m: log("library sampler check: " + m))
    return rows[0]


def _normalized(score, refs):
    if refs and refs.get("random") is not None and refs.get("expert") is not None:
        return 100.0 * (score - refs["random"]) / (refs["expert"] - refs["random"])
    return None


# ----------------------------------------------------------------------------- accuracy
MIXTURE = {"mus": [[-1.0, 0.0], [1.0, 0.5]], "weights": [0.3, 0.7], "std": 0.1}
GAUSSIAN = {"mu": [0.7, -0.3], "std": 0.2}


def gaussian_eps(mu, s, schedule):
    def eps_fn(x, t):
        a, sig = schedule.alpha(t)[..., None], schedule.sigma(t)[..., None]
        return sig * (x - a * mu) / (a**2 * s**2 + sig**2)
    return eps_fn


def gaussian_exact_flow(x1, mu, s, t_end, schedule):
    """Exact probability-flow ODE map x_1 -> x_{t_end} for data N(mu, s^2 I)."""
    a1, s1 = schedule.alpha(1.0), schedule.sigma(1.0)
    ae, se = schedule.alpha(t_end), schedule.sigma(t_end)
    z = (x1 - a1 * mu) / jnp.sqrt(a1**2 * s**2 + s1**2)
    return ae * mu + jnp.sqrt(ae**2 * s**2 + se**2) * z


def mixture_eps(mus, s, weights, schedule):
    """Exact eps of the noised isotropic mixture sum_k w_k N(alpha mu_k, (alpha^2 s^2 + sigma^2) I)."""
    logw = jnp.log(jnp.asarray(weights))

    def eps_fn(x, t):
        a, sig = schedule.alpha(t)[..., None, None], schedule.sigma(t)[..., None, None]
        var = a**2 * s**2 + sig**2
        diff = x[..., None, :] - a * mus
        logp = logw - 0.5 * jnp.sum(diff**2 / var, -1) - 0.5 * mus.shape[-1] * jnp.log(var[..., 0])
        resp = jax.nn.softmax(logp, axis=-1)[..., None]
        return sig[..., 0] * jnp.sum(resp * diff / var, axis=-2)
    return eps_fn


def mixture_exact_samples(key, n, mus, s, weights, t, schedule):
    """Exact samples of the noised marginal q_t of the mixture."""
    k1, k2 = jax.random.split(key)
    comp = jax.random.choice(k1, len(weights), (n,), p=jnp.asarray(weights))
    a, sig = schedule.alpha(t), schedule.sigma(t)
    std = jnp.sqrt(a**2 * s**2 + sig**2)
    return a * mus[comp] + std * jax.random.normal(k2, (n, mus.shape[-1]))


def sliced_w1(x, y, key, num_proj=256):
    """Sliced Wasserstein-1 between equal-size sample sets (mean over random directions)."""
    d = jax.random.normal(key, (num_proj, x.shape[-1]))
    d = d / jnp.linalg.norm(d, axis=-1, keepdims=True)
    px, py = jnp.sort(x @ d.T, axis=0), jnp.sort(y @ d.T, axis=0)
    return jnp.mean(jnp.abs(px - py))


def measure_accuracy(solvers, steps, num_samples, seed=0, t_end=1e-3, log=_say):
    sched = diffusion.VPSchedule()
    mus = jnp.asarray(MIXTURE["mus"])
    s, w = MIXTURE["std"], MIXTURE["weights"]
    k_x, k_ref, k_ref2, k_proj, k_ddpm, k_g = jax.random.split(jax.random.PRNGKey(seed), 6)
    ref = mixture_exact_samples(k_ref, num_samples, mus, s, w, t_end, sched)
    # floor: SW1 between independent exact sample sets of the same size (8 pairs; one pair is
    # too noisy: the mode counts of two sets differ by ~sqrt(n w (1 - w)) samples)
    floors = []
    for i in range(8):
        ka, kb = jax.random.split(jax.random.fold_in(k_ref2, i))
        floors.append(float(sliced_w1(
            mixture_exact_samples(ka, num_samples, mus, s, w, t_end, sched),
            mixture_exact_samples(kb, num_samples, mus, s, w, t_end, sched), k_proj)))
    floor, floor_std = float(np.mean(floors)), float(np.std(floors))
    ref_mean = jnp.mean(ref, 0)
    ref_cov = jnp.cov(ref.T)
    # exact moments of q_{t_end} (the floor of the mean/cov errors is their sampling error)
    x_T = jax.random.normal(k_x, (num_samples, 2))
    eps_mix = mixture_eps(mus, s, w, sched)
    g_mu, g_s = jnp.asarray(GAUSSIAN["mu"]), GAUSSIAN["std"]
    eps_g = gaussian_eps(g_mu, g_s, sched)
    x_g = jax.random.normal(k_g, (min(num_samples, 512), 2))
    exact_g = gaussian_exact_flow(x_g, g_mu, g_s, t_end, sched)
    right = float(w[1])
    rows = []
    for solver in solvers:
        for n in steps:
            def f(x, k, xg):
                x0 = diffusion.sample(solver, eps_mix, x, sched, n, key=k, t_end=t_end)
                if solver == "ddpm":
                    return x0, jnp.full((), jnp.nan)
                xg = diffusion.sample(solver, eps_g, xg, sched, n, t_end=t_end)
                return x0, jnp.max(jnp.abs(xg - exact_g))

            x0, flow_err = jax.jit(f)(x_T, k_ddpm, x_g)
            sw = float(sliced_w1(x0, ref, k_proj))
            flow_err = None if solver == "ddpm" else float(flow_err)
            row = {"solver": solver, "num_steps": n,
                   "network_calls": diffusion.network_calls(solver, n),
                   "sliced_w1": sw,
                   "mean_error": float(jnp.linalg.norm(jnp.mean(x0, 0) - ref_mean)),
                   "cov_error": float(jnp.linalg.norm(jnp.cov(x0.T) - ref_cov)),
                   "mode_weight_error": abs(float(jnp.mean(x0[:, 0] > 0)) - right),
                   "gaussian_flow_max_error": flow_err,
                   "finite": bool(np.all(np.isfinite(np.asarray(x0))))}
            rows.append(row)
            log(f"accuracy {solver:8s} N={n:3d}: SW1 {sw:.4f} (floor {floor:.4f}), mode weight "
                f"err {row['mode_weight_error']:.3f}, Gaussian flow err "
                + ("–" if flow_err is None else f"{flow_err:.2e}"))
    target = (f"2-D mixture {w[0]} N({MIXTURE['mus'][0]}, {s}^2 I) + {w[1]} "
              f"N({MIXTURE['mus'][1]}, {s}^2 I), compared at t_end={t_end} with exact samples "
              f"of its noised marginal; Gaussian flow error: N({GAUSSIAN['mu']}, "
              f"{GAUSSIAN['std']}^2 I), max |x - exact ODE map(x_T)| over {x_g.shape[0]} samples "
              "(deterministic solvers only). logSNR grid, DDPM on the uniform-t grid.")
    return {"target": target, "num_samples": num_samples, "t_end": t_end,
            "floor_sliced_w1": floor, "floor_sliced_w1_std": floor_std,
            "mode_weight_sampling_std": float(np.sqrt(right * (1 - right) / num_samples)),
            "rows": rows}


# ----------------------------------------------------------------------------- outputs
def write_markdown(path, result):
    pol = result.get("policy") or {}
    sysinfo = result["system"]
    lines = [f"# Solver steps: DOM2 on {result['env']} ({result['device_kind']})", "",
             f"`{result['command']}` — devices {sysinfo['devices']}, {sysinfo['cpu_count']} CPUs, "
             f"load {result['machine_load_1min_start']:.1f} -> "
             f"{result['machine_load_1min_end']:.1f}, total {result['wall_clock_s']:.0f} s.", ""]
    for nr in result.get("not_run", []):
        lines += [f"**{nr['env']}: {nr['reason']}**", ""]
    if result.get("rows"):
        lines += [f"**Note:** {result['note']}", ""]
        if pol:
            lines += [_policy_line(pol), ""]
        s = result["settings"]
        lines += [f"Return: mean over {s['eval_episodes']} episodes (one jitted vmapped rollout, "
                  "the same episode keys for every setting), +- standard error. Latency: batch 1 "
                  f"(one env step, all agents), median of {s['latency_repeats']} calls. "
                  f"Throughput: joint actions/s at batch {s['throughput_batch']}. "
                  "NFE = network calls per action. * = the trained setting.", "",
                  "| solver | N | NFE | return | normalised | latency (ms) | throughput (/s) |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for r in result["rows"]:
            norm = "–" if r["normalized_score"] is None else f"{r['normalized_score']:.1f}"
            star = "*" if r.get("trained_setting") else ""
            lines.append(f"| {r['solver']}{star} | {r['num_steps']} | {r['network_calls']} | "
                         f"{r['return_mean']:.1f} +- {r['return_stderr']:.1f} | {norm} | "
                         f"{r['latency_ms_median']:.2f} | "
                         f"{r['throughput_joint_actions_per_s']:,.0f} |")
        lines.append("")
        if s.get("sampler_impl") == "dynamic":
            lines.append("Sampler implementation: `dynamic_sample` (the library's step formulas "
                         "in a `fori_loop` with a traced N, so one compile per solver serves "
                         "every N; equal to `diffusion.sample` to float32 rounding).")
            chk = result.get("library_sampler_check")
            trained = [r for r in result["rows"] if r.get("trained_setting")]
            if chk and trained:
                t = trained[0]
                lines.append(f"Check at the trained setting with the library sampler "
                             f"(`diffusion.sample`, static N, the `dom2.act` path): return "
                             f"{chk['return_mean']:.1f} (dynamic {t['return_mean']:.1f}), "
                             f"latency {chk['latency_ms_median']:.2f} ms (dynamic "
                             f"{t['latency_ms_median']:.2f}), throughput "
                             f"{chk['throughput_joint_actions_per_s']:,.0f}/s (dynamic "
                             f"{t['throughput_joint_actions_per_s']:,.0f}).")
            lines.append("")
    acc = result.get("accuracy")
    if acc:
        lines += ["## Sample accuracy on an exact-score target", "", acc["target"], "",
                  f"{acc['num_samples']} samples; floor (SW1 between two independent exact "
                  f"sample sets, mean +- std over 8 pairs): {acc['floor_sliced_w1']:.4f} +- "
                  f"{acc.get('floor_sliced_w1_std', float('nan')):.4f}; the mode-weight error "
                  f"includes sampling noise of std "
                  f"{acc.get('mode_weight_sampling_std', float('nan')):.3f}. A converged "
                  "deterministic solver maps x_T to exact samples, so its SW1 sits at about "
                  "the floor.", "",
                  "| solver | N | NFE | sliced W1 | mean err | cov err | mode-weight err | "
                  "Gaussian flow max err |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in acc["rows"]:
            fe = "–" if r["gaussian_flow_max_error"] is None else f"{r['gaussian_flow_max_error']:.2e}"
            lines.append(f"| {r['solver']} | {r['num_steps']} | {r['network_calls']} | "
                         f"{r['sliced_w1']:.4f} | {r['mean_error']:.4f} | {r['cov_error']:.4f} | "
                         f"{r['mode_weight_error']:.3f} | {fe} |")
        lines.append("")
    with open(path, "w") as f:
        f.write("\n".join(lines))


def _policy_line(pol):
    parts = [f"Policy: {pol.get('source')}"]
    if pol.get("trained_with"):
        tw = pol["trained_with"]
        parts.append(f"trained with {tw['solver']} N={tw['num_steps']} ({tw['grid']} grid)")
    if pol.get("num_updates_done") is not None:
        parts.append(f"{pol['num_updates_done']} updates"
                     + (f" (launcher wall clock {pol['launcher_wall_clock_s']:.0f} s, incl. "
                        "compile)" if pol.get("launcher_wall_clock_s") else ""))
    if pol.get("final_score_launcher") is not None:
        ns = pol.get("final_normalized_score_launcher")
        parts.append(f"launcher's final evaluation {pol['final_score_launcher']:.1f}"
                     + (f" (normalised {ns:.1f})" if ns is not None else ""))
    refs = pol.get("reference_returns") or {}
    if refs.get("random") is not None and refs.get("expert") is not None:
        parts.append(f"dataset references random {refs['random']:.1f}, expert "
                     f"{refs['expert']:.1f}")
    return "; ".join(parts) + "."


def plot(path, result):
    matplotlib.use("Agg")

    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    (ax_r, ax_l), (ax_t, ax_a) = axes
    rows = result.get("rows") or []
    solvers = list(dict.fromkeys(r["solver"] for r in rows))
    for solver in solvers:
        rs = [r for r in rows if r["solver"] == solver]
        ns = [r["num_steps"] for r in rs]
        lab = SOLVER_LABELS.get(solver, solver)
        ax_r.errorbar(ns, [r["return_mean"] for r in rs], yerr=[r["return_stderr"] for r in rs],
                      marker="o", capsize=3, label=lab)
        ax_l.plot(ns, [r["latency_ms_median"] for r in rs], marker="o", label=lab)
        ax_t.plot(ns, [r["throughput_joint_actions_per_s"] for r in rs], marker="o", label=lab)
    for r in rows:
        if r.get("trained_setting"):
            ax_r.plot([r["num_steps"]], [r["return_mean"]], "k*", ms=14, zorder=5,
                      label="trained setting")
    refs = (result.get("policy") or {}).get("reference_returns") or {}
    for name, ls in (("expert", "--"), ("random", ":")):
        if refs.get(name) is not None and rows:
            ax_r.axhline(refs[name], color="grey", ls=ls, lw=1, label=f"dataset {name}")
    s = result.get("settings", {})
    ax_r.set(xscale="log", xlabel="solver steps N", ylabel="evaluation return",
             title=f"Return ({s.get('eval_episodes', '?')} episodes; policy trained with "
                   f"{(result.get('policy') or {}).get('trained_with', {}).get('solver', '?')} "
                   f"N={(result.get('policy') or {}).get('trained_with', {}).get('num_steps', '?')})")
    ax_l.set(xscale="log", yscale="log", xlabel="solver steps N", ylabel="ms",
             title="Action-sampling latency (batch 1, all agents, median)")
    ax_t.set(xscale="log", yscale="log", xlabel="solver steps N", ylabel="joint actions / s",
             title=f"Throughput (batch {s.get('throughput_batch', '?')})")
    acc = result.get("accuracy")
    if acc:
        for solver in list(dict.fromkeys(r["solver"] for r in acc["rows"])):
            rs = [r for r in acc["rows"] if r["solver"] == solver]
            ax_a.plot([r["num_steps"] for r in rs], [r["sliced_w1"] for r in rs], marker="o",
                      label=SOLVER_LABELS.get(solver, solver))
        ax_a.axhline(acc["floor_sliced_w1"], color="grey", ls="--", lw=1,
                     label="floor (exact vs exact, mean of 8 pairs)")
        ax_a.set(xscale="log", yscale="log", xlabel="solver steps N",
                 ylabel="sliced W1 to exact samples",
                 title="Sample accuracy, 2-D Gaussian mixture (exact score)")
    ticks = s.get("steps") or []
    for ax in axes.flat:
        if ticks:
            ax.set_xticks(ticks)
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.grid(True, which="both", alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "not run", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle(f"DOM2 solver steps on {result['env']} — {result['device_kind']}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- main
@dataclasses.dataclass
class Options:
    """The command-line flags (``--helpshort``); ``run(Options(...))`` from Python. ``None``:
    the default that depends on --quick / --device (``resolve``)."""

    env: str = "mpe_spread"
    workdir: Optional[str] = None        # experiments.train workdir with a DOM2 policy
    seed_index: int = 0
    train_dir: Optional[str] = None      # default runs/solver_steps/<env>_<preset>_u<updates>
    quality: str = "expert"
    data_root: str = os.path.join(ROOT, "datasets")
    dataset: Optional[str] = None
    preset: Optional[str] = None         # quick (smoke with --quick)
    num_updates: Optional[int] = None    # 1500 (2 with --quick)
    eval_every: Optional[int] = None     # 500 (2 with --quick)
    train_override: List[str] = dataclasses.field(default_factory=list)
    steps: Optional[str] = None          # comma list (or a list of ints from Python)
    solvers: Optional[str] = None        # comma list (or a list)
    eval_episodes: Optional[int] = None
    latency_repeats: Optional[int] = None
    throughput_batch: Optional[int] = None
    throughput_repeats: Optional[int] = None
    accuracy_samples: Optional[int] = None
    no_accuracy: bool = False
    sampler_impl: Optional[str] = None   # dynamic (CPU default) or library (--device default)
    seed: int = 0
    device: bool = False
    quick: bool = False
    compilation_cache: str = os.path.expanduser("~/.cache/dom2_jax/xla")
    out: Optional[str] = None            # benchmarks/results (runs/benchmarks with --quick)


def define_flags(fv):
    """The script's flags on ``fv`` (``flags.FLAGS`` when run as a script; see benchmarks.cli)."""
    d = Options()
    kw = dict(flag_values=fv)
    flags.DEFINE_string("env", d.env, "Environment of the policy.", **kw)
    flags.DEFINE_string("workdir", None, "experiments.train workdir holding a trained DOM2 "
                        "policy (skips training).", **kw)
    flags.DEFINE_integer("seed_index", d.seed_index, "Which seed of --workdir.", **kw)
    flags.DEFINE_string("train_dir", None, "Where to train when --workdir is not given (default "
                        "runs/solver_steps/<env>_<preset>_u<num_updates>); reused if complete.",
                        **kw)
    flags.DEFINE_string("quality", d.quality, "Dataset quality for the launcher.", **kw)
    flags.DEFINE_string("data_root", d.data_root, "Launcher data root (the dataset is generated "
                        "there if missing).", **kw)
    flags.DEFINE_string("dataset", None, "Dataset dir (instead of --quality/--data_root).", **kw)
    flags.DEFINE_string("preset", None, "Launcher preset (default quick; smoke with --quick).",
                        **kw)
    flags.DEFINE_integer("num_updates", None, "Training updates (default 1500; 2 with --quick).",
                         **kw)
    flags.DEFINE_integer("eval_every", None, "Launcher chunk size (default 500 as the quick "
                         "preset; 2 with --quick).", **kw)
    flags.DEFINE_multi_string("train_override", [], "Extra launcher config override "
                              "FIELD=VALUE (repeatable).", **kw)
    flags.DEFINE_string("steps", None, "Comma-separated N (default 1,2,3,5,10,20,50; 1,2 with "
                        "--quick).", **kw)
    flags.DEFINE_string("solvers", None, "Comma-separated samplers (default "
                        "dpm1,dpm2,dpm3,dpmpp2m,ddpm).", **kw)
    flags.DEFINE_integer("eval_episodes", None, "Default 200 (2000 --device, 4 --quick).", **kw)
    flags.DEFINE_integer("latency_repeats", None, "Default 50 (3 --quick).", **kw)
    flags.DEFINE_integer("throughput_batch", None, "Default 1024 (8 --quick).", **kw)
    flags.DEFINE_integer("throughput_repeats", None, "Default 3 (2 --quick).", **kw)
    flags.DEFINE_integer("accuracy_samples", None, "Default 8192 (65536 --device, 256 --quick).",
                         **kw)
    flags.DEFINE_bool("no_accuracy", False, "Skip the sample-accuracy part.", **kw)
    flags.DEFINE_enum("sampler_impl", None, ["dynamic", "library"],
                      "dynamic (default on CPU): one compiled program per solver for all N "
                      "(dynamic_sample); library (default with --device): diffusion.sample "
                      "with static N, one compile per (solver, N).", **kw)
    flags.DEFINE_integer("seed", d.seed, "Seed of the evaluation keys and accuracy samples.",
                         **kw)
    flags.DEFINE_bool("device", False, "Accelerator run: label the files with the device kind, "
                      "larger batches.", **kw)
    flags.DEFINE_bool("quick", False, "Tiny sizes (tests).", **kw)
    flags.DEFINE_string("compilation_cache", d.compilation_cache,
                        "JAX persistent compilation cache ('' disables).", **kw)
    flags.DEFINE_string("out", None, "Output directory (default benchmarks/results; "
                        "runs/benchmarks with --quick).", **kw)


def _list(v, conv=str):
    return [conv(x) for x in v.split(",") if x] if isinstance(v, str) else list(v)


def resolve(opts: Options) -> Options:
    """``opts`` with every ``None`` replaced by its --quick / --device default and the comma
    lists split (ValueError on an unknown solver or a bad N); resolving twice changes nothing."""
    q, d = opts.quick, opts.device
    defaults = dict(preset="smoke" if q else "quick", num_updates=2 if q else 1500,
                    eval_every=2 if q else 500,
                    eval_episodes=4 if q else (2000 if d else 200),
                    latency_repeats=3 if q else 50, throughput_batch=8 if q else 1024,
                    throughput_repeats=2 if q else 3,
                    accuracy_samples=256 if q else (65536 if d else 8192),
                    sampler_impl="library" if d else "dynamic", out=default_out(q))
    args = dataclasses.replace(opts, **{k: v for k, v in defaults.items()
                                        if getattr(opts, k) is None})
    args.steps = (_list(args.steps, int) if args.steps
                  else ([1, 2] if q else list(DEFAULT_STEPS)))
    args.solvers = _list(args.solvers) if args.solvers else list(SOLVERS)
    args.train_override = list(args.train_override)
    bad = [s for s in args.solvers if s not in SOLVERS]
    if bad:
        raise ValueError(f"unknown solvers {bad}; expected some of {list(SOLVERS)}")
    if any(n < 1 for n in args.steps):
        raise ValueError("--steps must be positive")
    if args.sampler_impl not in ("dynamic", "library"):
        raise ValueError(f"--sampler_impl must be dynamic or library, got {args.sampler_impl!r}")
    return args


def parse_args(argv):
    """Resolved options from a list of flags, read with the script's flag definitions (without
    touching the global absl flags)."""
    return resolve(cli.parse(define_flags, Options, argv))


def main(argv):
    """absl entry point: ``python -m benchmarks.solver_steps --flags``."""
    cli.main(argv, Options, run, resolve)


def run(opts: Options = None, argv: Optional[Sequence[str]] = None):
    """Runs the benchmark, writes its files and returns the result dict. ``argv``: the flags
    to record as the command (default: the flags that reproduce ``opts``)."""
    opts = opts or Options()
    args = resolve(opts)
    argv = list(argv) if argv is not None else cli.flag_argv(opts)

    if args.compilation_cache:
        jax.config.update("jax_compilation_cache_dir", args.compilation_cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    t_start, load_start = time.time(), os.getloadavg()[0]
    sysinfo = system_info()
    sysinfo.update(platform=platform.platform(), processor=platform.processor())
    kind = getattr(jax.devices()[0], "device_kind", jax.default_backend())
    _say(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, load {load_start:.1f}; "
         f"jax {jax.__version__}, backend {jax.default_backend()}, devices {jax.devices()} "
         f"({kind})")
    stem = "solver_steps" + (f"_{device_label(kind)}" if args.device else "")
    os.makedirs(args.out, exist_ok=True)
    result = {"benchmark": "solver_steps", "env": args.env, "device_kind": kind,
              "device_label": device_label(kind) if args.device else None, "system": sysinfo,
              "command": " ".join(["python -m benchmarks.solver_steps"] + argv),
              "settings": {k: getattr(args, k) for k in (
                  "steps", "solvers", "eval_episodes", "latency_repeats", "throughput_batch",
                  "throughput_repeats", "accuracy_samples", "sampler_impl", "quick", "device",
                  "seed")},
              "policy": None, "note": None, "rows": [], "library_sampler_check": None,
              "accuracy": None, "not_run": [],
              "machine_load_1min_start": load_start}

    run_policy = True
    if args.env.startswith("mamujoco") and args.workdir is None:
        result["not_run"].append({"env": args.env, "reason": HALFCHEETAH_NOT_RUN})
        _say(f"{args.env}: {HALFCHEETAH_NOT_RUN}")
        run_policy = False
    if run_policy:
        train_s = None
        workdir = args.workdir
        if workdir is None:
            workdir = os.path.abspath(args.train_dir or os.path.join(
                ROOT, "runs", "solver_steps", f"{args.env}_{args.preset}_u{args.num_updates}"))
            train_s = train_policy(args, workdir)
        state, env, info = load_policy(workdir, args.seed_index)
        if info["env"] != args.env:
            raise SystemExit(f"--env={args.env} but {workdir} holds a {info['env']} run")
        hp = state.hp
        info.update(source=("trained by this script" if args.workdir is None
                            else "loaded from --workdir"),
                    train_wall_s_this_run=train_s,
                    trained_with={"solver": trained_solver(hp), "num_steps": hp.num_solver_steps,
                                  "grid": hp.solver_grid},
                    networks={"noise_net": hp.noise_net, "noise_hidden": list(hp.noise_hidden),
                              "critic_hidden": list(hp.critic_hidden)},
                    actor_used="EMA" if hp.ema_decay > 0 else "online")
        result["policy"] = info
        result["note"] = (f"the policy was TRAINED with DPM-Solver-{hp.solver_order} and "
                          f"N={hp.num_solver_steps} ({hp.solver_grid} grid; the Q-term "
                          "back-propagates through that sampler); this benchmark swaps only the "
                          "sampler used at evaluation, so other settings measure how well the "
                          "learned noise model transfers, not a policy trained with them")
        _say("note: " + result["note"])
        refs = info.get("reference_returns") or {}
        result["rows"] = measure_policy(state, env, args.solvers, args.steps, args, refs)
        if args.sampler_impl == "dynamic" and not args.quick:
            result["library_sampler_check"] = library_check(state, env, args, refs)
    if not args.no_accuracy:
        result["accuracy"] = measure_accuracy(args.solvers, args.steps, args.accuracy_samples,
                                              seed=args.seed)
    result["machine_load_1min_end"] = os.getloadavg()[0]
    result["wall_clock_s"] = time.time() - t_start
    paths = {ext: os.path.join(args.out, f"{stem}.{ext}") for ext in ("json", "md", "png")}
    write_json(paths["json"], result)
    write_markdown(paths["md"], result)
    plot(paths["png"], result)
    _say(f"wrote {', '.join(paths.values())} ({result['wall_clock_s']:.0f} s)")
    return result


if __name__ == "__main__":
    define_flags(flags.FLAGS)
    app.run(main)
