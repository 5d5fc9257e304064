r"""DOM2 update throughput: our jitted JAX update against an eager PyTorch implementation of the
same update, seed scaling, and the share of the machine's matmul peak the update reaches.

  python -m benchmarks.throughput [--settings=spread,halfcheetah] [--updates=5] [--repeats=2]
                                  [--seeds_list=1,4,16] [--seeds_settings=spread] [--device]
                                  [--remat_solver] [--devices=1,2] [--quick] [--no_torch]
                                  [--torch_threads=0] [--out=DIR]

Settings (reference.md's throughput anchors):
  spread       3 agents, obs 18, act 2, N = 5 DPM-Solver-1 steps
  halfcheetah  2 agents, obs 6 (OMAR's obsk 0), act 3, N = 10
both with dom2.default_config(): batch 256, residual noise net 512-256-128 | 128-256-512
(Fourier time embedding 32, obs embedding 32, condition 128), 2 critics of 3 x 256, M = 10 CQL
actions with the log-density correction, Adam + grad-norm clip 1, soft targets, EMA actor.

Measured in one process, warm-up and compilation excluded from every timing:
* JAX: ``jax.jit(trainer.scan_updates(dom2.update, ...))`` = a ``lax.scan`` of --updates updates per call (minibatch
  drawn on device inside the scan), agents vmapped; median over --repeats calls after one
  warm-up call. Compile time (lower + compile) is reported separately.
* PyTorch (benchmarks/torch_dom2.py): the same update in eager mode, a Python loop over agents
  (as Diffusion-QL / OMAR code does), initialised from the same JAX parameters (parameter
  counts asserted equal); median over --repeats runs of --updates updates after 2 warm-up
  updates. ``torch.set_num_threads`` is set to the number of cores JAX's CPU backend uses
  (``--torch_threads`` overrides it).
* Seeds: ``jax.jit(jax.vmap(scan_updates))`` over S seeds for S in --seeds_list (S = 1 reuses
  the plain measurement), on the settings in --seeds_settings (default: spread on CPU, where
  one 16-seed update takes ~10 s; every setting on an accelerator). Updates per call for S
  seeds: max(1, --updates // S). Each seeds row also reports the compiled program's memory
  from XLA (``compiled.memory_analysis()`` through ``seed_plan.compiled_bytes``: arguments +
  outputs + temporaries - aliased) in total and per seed. --remat_solver measures every seeds
  row a second time with DOM2's ``remat_solver`` on (S = 1 then times its own plain program),
  so the table shows what rematerialising the solver steps buys in bytes and costs in time.
* Devices (--devices=1,2,...): every seeds row with S > 1 is measured again with the seed axis
  split over D local devices (a 1-D ``NamedSharding`` mesh, as ``experiments.train
  --devices``; S must be a multiple of D, else the row says so), so seed-updates/s per device
  count sit side by side. On a CPU with ``XLA_FLAGS=--xla_force_host_platform_device_count=D``
  the "devices" share the same cores: those rows measure the mechanism (the sharded program
  runs, with no cross-device traffic inside an update), not a speed-up.
* Seed plan, per setting (and remat switch): the group ``experiments.train --num_seeds`` would
  choose from these measurements. ``seed_plan.memory_plan`` bounds the group by 80% of the
  device's free memory (``seed_plan.device_free_bytes()`` at the start of the run: a GPU's
  allocator limit minus its use, a CPU host's MemAvailable) over the bytes per seed of the
  smallest measured count; ``seed_plan.choose_group`` is fed the measured seed-updates/s.
  choose_group doubles from 1; here its i-th doubling step is the i-th smallest measured count
  that fits, so with --seeds_list=1,2,4,8,... the rule is exactly the launcher's, and with
  1,4,16 each measured count is one step (continue while a step gains >= 5%).
* FLOPs of one update: XLA's cost analysis of the lowered single update with the solver scan
  unrolled (XLA counts a loop body once, so the rolled program would under-count N-fold),
  next to an analytic matmul count from the parameter shapes (backward = 2 x forward). The
  matmul peak is the median GFLOP/s of a jitted ``jnp.dot`` of square float32 matrices
  (1024 and 2048 on CPU, 4096 and 8192 on an accelerator; the best is used).

--device: label the output files with the accelerator (``device_label`` of
``jax.devices()[0].device_kind``, e.g. ``nvidia_h200``), run torch on CUDA when available (with
TF32 matmuls, as JAX's default float32 precision on NVIDIA GPUs), and seeds-scale every
setting. Without it the files are ``throughput.{json,md,png}``. The script runs unchanged on a
GPU; if torch is not installed the torch part is skipped with a message (install it with
``pip install -e .[bench]``). ``bash benchmarks/device_suite.sh OUTDIR`` runs this with the
other two benchmarks in one prepared accelerator session.
Files are rewritten after every setting ("complete": false until the last), and a seeds count
that fails (e.g. out of GPU memory) becomes an "error" row instead of ending the run.
--quick: tiny networks and batch for a test (files ``throughput_quick*``, under
``runs/benchmarks/`` unless --out says otherwise: a quick run never replaces a committed result).
--from_json=PATH: re-derive the figures of a saved result from its raw call times and rewrite
its .json/.md/.png without measuring.

Outputs under benchmarks/results/ (--out=DIR to change): throughput[_<device>].json / .md / .png.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import platform
import statistics
import sys
import time
from typing import Optional

import jax
import jax.numpy as jnp
import jaxlib
import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from absl import app, flags

from benchmarks.outputs import default_out
from benchmarks.solver_steps import device_label
from dom2_jax import diffusion
from dom2_jax.algos import dom2
from dom2_jax.data.transforms import sample_batch
from dom2_jax.training import seed_plan
from dom2_jax.training.reporting import write_json
from dom2_jax.training.trainer import scan_updates

# Torch's OpenMP threads spin-wait by default; on a machine whose cores are shared with other
# jobs that makes 2-thread eager torch 20-40x slower at small sizes (measured here: 1.5 s vs
# 66 ms per tiny update). Passive waiting is torch's best setting under load. Set before torch
# is imported; an explicit OMP_WAIT_POLICY in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")



@dataclasses.dataclass
class Options:
    """The command-line flags (see the module docstring); ``run(Options(...))`` from Python."""

    settings: Optional[str] = None      # comma list; default spread,halfcheetah (spread if quick)
    updates: Optional[int] = None       # updates per timed call; default 5 (2 if quick)
    repeats: Optional[int] = None       # timed calls, median reported; default 2 (1 if quick)
    seeds_list: Optional[str] = None    # default 1,4,16 (1,2 if quick)
    seeds_settings: Optional[str] = None  # default: spread on CPU, all on an accelerator
    device: bool = False                # label files with the accelerator; torch on CUDA
    quick: bool = False                 # tiny sizes, XLA optimisations off (for tests)
    no_torch: bool = False
    torch_threads: int = 0              # 0: the cores JAX uses
    out: Optional[str] = None           # default benchmarks/results (runs/benchmarks if quick)
    from_json: Optional[str] = None     # only rewrite the .md/.png of a saved .json
    remat_solver: bool = False          # also measure the seeds rows with DOM2's remat_solver
    devices: Optional[str] = None       # device counts the seeds rows are split over (default 1)


SETTINGS = {"spread": dict(agents=3, obs=18, act=2, steps=5),
            "halfcheetah": dict(agents=2, obs=6, act=3, steps=10)}
QUICK = dict(noise_hidden=(8,), critic_hidden=(16, 16), batch_size=16, steps=2)
TARGET_RATIO = 1.5  # the target: JAX updates/s >= 1.5 x eager PyTorch

# reference.md, "Throughput anchors" (ms per update of all agents; noise net hidden 256 with 3
# residual blocks, 2 critics 3x256, M = 10, batch 256; HalfCheetah there has obs 17).
ANCHORS = {
    "gflop_per_update": {"spread": 29.0},
    "cpu_2core": {"spread": {"torch_eager_ms": [300.0, 320.0], "jax_ms": 258.0}},
    "H200": {"spread": {"torch_eager_ms": 96.5, "torch_cuda_graph_ms": 14.5, "jax_ms": 2.6,
                        "jax_32_seeds_ms": 21.7, "jax_256_seeds_ms": 154.8},
             "halfcheetah_obs17": {"torch_eager_ms": 88.5, "torch_cuda_graph_ms": 15.7,
                                   "jax_ms": 3.6, "jax_32_seeds_ms": 23.4}},
}

RESULT_KEYS = ("benchmark", "command", "quick", "system", "load_before", "load_after",
               "matmul_peak", "settings", "seeds", "anchors", "target_ratio", "torch_status",
               "device_free_bytes", "plans")
MiB = 2 ** 20


# ----------------------------------------------------------------------------- helpers
def _median(xs):
    return statistics.median(xs)


def derive(res):
    """(Re)derives every per-update figure of a result from its raw call times (``call_s``:
    the median call / updates per call), so a saved JSON can be re-summarised (--from_json)."""
    peak = res["matmul_peak"]["gflops"]
    accel = res["system"]["jax_backend"] != "cpu"
    for name, r in res["settings"].items():
        for part in ("jax", "torch"):
            p = r.get(part)
            if p and p.get("call_s"):
                p["ms_per_update"] = 1e3 * _median(p["call_s"]) / p["updates_per_call"]
                p["updates_per_s"] = 1e3 / p["ms_per_update"]
        flops = r["flops_per_update"]
        r["gflops_per_s"] = flops * r["jax"]["updates_per_s"] / 1e9
        r["peak_share"] = r["gflops_per_s"] / peak
        if r.get("torch"):
            r["ratio"] = r["jax"]["updates_per_s"] / r["torch"]["updates_per_s"]
            r["torch_gflops_per_s"] = flops * r["torch"]["updates_per_s"] / 1e9
        r["anchor_comparison"] = anchor_comparison(name, r, accel)
    for row in res["seeds"]:
        if row.get("error"):
            continue
        r = res["settings"][row["setting"]]
        if row.get("call_s"):
            row["ms_per_update"] = 1e3 * _median(row["call_s"]) / row["updates_per_call"]
        elif row["seeds"] == 1:
            row["ms_per_update"] = r["jax"]["ms_per_update"]
        row["updates_per_s_per_seed"] = 1e3 / row["ms_per_update"]
        row["seed_updates_per_s"] = row["seeds"] * 1e3 / row["ms_per_update"]
        row["gflops_per_s"] = r["flops_per_update"] * row["seed_updates_per_s"] / 1e9
        row.setdefault("remat_solver", False)
        row.setdefault("compiled_bytes", None)
        row["bytes_per_seed"] = (row["compiled_bytes"] / row["seeds"] if row["compiled_bytes"]
                                 else None)
    res["timing_statistic"] = "median of call_s (statistics.median) / updates per call"
    res.setdefault("device_free_bytes", None)
    res["plans"] = seed_plans(res["seeds"], res["device_free_bytes"])
    return res


def seed_plans(seed_rows, free_bytes):
    """The seed group ``experiments.train`` would pick from this run's measurements, one plan
    per (setting, remat_solver) with measured seeds rows (see ``plan_from_rows``)."""
    groups = {}
    for row in seed_rows:
        if not row.get("error") and row.get("seed_updates_per_s") and row.get("devices", 1) == 1:
            groups.setdefault((row["setting"], bool(row.get("remat_solver"))), []).append(row)
    return [plan_from_rows(name, remat, rows, free_bytes)
            for (name, remat), rows in groups.items()]


def plan_from_rows(name, remat, rows, free_bytes):
    """``seed_plan``'s two rules applied to measured rows of one setting.

    Memory: ``seed_plan.memory_plan`` with the per-seed bytes of the smallest measured count
    (XLA's memory analysis of its compiled program / its seeds) and ``free_bytes`` (the
    device's free memory at the start of the run): the largest group that fits 80% of it.
    Speed: ``seed_plan.choose_group`` fed the measured seed-updates/s. choose_group doubles
    from 1 (G = 1, 2, 4, ...); here its i-th doubling step stands for the i-th smallest measured
    count that fits in memory, so with --seeds_list=1,2,4,8,... the rule is exactly the
    launcher's, and with e.g. 1,4,16 each measured count is one step (keep going while a step
    gains >= 5% over the best so far)."""
    rows = sorted(rows, key=lambda r: r["seeds"])
    rate = {r["seeds"]: r["seed_updates_per_s"] for r in rows}
    one = rows[0].get("bytes_per_seed")
    one = int(math.ceil(one)) if one else None
    plan = {"setting": name, "remat_solver": remat, "measured_seeds": sorted(rate),
            "seed_updates_per_s": {str(k): v for k, v in rate.items()},
            "one_seed_bytes": one, "one_seed_bytes_from": rows[0]["seeds"],
            "device_free_bytes": free_bytes, "memory_max_group": None, "memory_error": None,
            "ladder": None, "rates_compared": None, "group": None,
            "rule": "seed_plan.choose_group over the measured counts (the i-th smallest "
                    "measured count as its i-th doubling step, >= 5% gain per step), capped "
                    "by seed_plan.memory_plan(bytes per seed, free device memory)"}
    ladder = sorted(rate)
    if one and free_bytes:
        try:
            plan["memory_max_group"] = seed_plan.memory_plan(one, 2 ** 31, free_bytes)
        except ValueError as e:  # not even one seed fits
            plan["memory_error"] = str(e)
            return plan
        ladder = [k for k in ladder if k <= plan["memory_max_group"]] or ladder[:1]
    top = 2 ** (len(ladder) - 1)
    g, seen = seed_plan.choose_group(top, top, lambda g: rate[ladder[g.bit_length() - 1]])
    plan.update(ladder=ladder, group=ladder[g.bit_length() - 1],
                rates_compared={str(ladder[k.bit_length() - 1]): v for k, v in seen.items()})
    return plan


def memory_info(compiled):
    """XLA's memory analysis of a compiled program: ``seed_plan.compiled_bytes`` (arguments +
    outputs + temporaries - aliased; None without an analysis) and its parts."""
    out = {"compiled_bytes": seed_plan.compiled_bytes(compiled)}
    try:
        m = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - not every backend implements it
        m = None
    if m is not None:
        out["memory"] = {k: int(getattr(m, k + "_size_in_bytes"))
                         for k in ("argument", "output", "temp", "alias")}
    return out


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def jax_threads() -> int:
    """Cores XLA's CPU backend uses (its thread pool is sized to the usable cores)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def machine_info(torch_mod, torch_threads):
    info = {"cpu_model": cpu_model(), "cpu_cores": os.cpu_count(), "usable_cores": jax_threads(),
            "platform": platform.platform(), "python": platform.python_version(),
            "jax": jax.__version__, "jaxlib": jaxlib.__version__,
            "jax_backend": jax.default_backend(),
            "jax_devices": [str(d) for d in jax.devices()],
            "jax_device_kind": jax.devices()[0].device_kind,
            "jax_threads": jax_threads(), "torch": None, "torch_threads": None,
            "torch_device": None}
    if torch_mod is not None:
        info.update(torch=torch_mod.__version__, torch_threads=torch_threads)
    return info


def matmul_peak(sizes, reps=7):
    """Median float32 GFLOP/s of a jitted jnp.dot of square matrices; best over sizes."""
    out = {}
    for n in sizes:
        k1, k2 = jax.random.split(jax.random.PRNGKey(n))
        a = jax.random.normal(k1, (n, n), jnp.float32)
        b = jax.random.normal(k2, (n, n), jnp.float32)
        f = jax.jit(jnp.dot)
        jax.block_until_ready(f(a, b))
        ts = []
        for _ in range(reps):
            t = time.perf_counter()
            jax.block_until_ready(f(a, b))
            ts.append(time.perf_counter() - t)
        out[str(n)] = 2.0 * n**3 / _median(ts) / 1e9
    return {"gflops_by_size": out, "gflops": max(out.values()), "dtype": "float32",
            "precision": "jax default"}


def _torch_sync(torch, device):
    """Waits for queued torch work on ``device`` (a no-op on CPU)."""
    return torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)


def _timed_calls(fn, reps, sync):
    """Wall times of ``reps`` calls of ``fn()``, each followed by ``sync()``."""
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        sync()
        ts.append(time.perf_counter() - t)
    return ts


def torch_matmul_peak(torch, device, sizes, reps=7):
    out = {}
    for n in sizes:
        a = torch.randn(n, n, device=device)
        b = torch.randn(n, n, device=device)
        sync = _torch_sync(torch, device)
        torch.mm(a, b)
        sync()
        ts = _timed_calls(lambda: torch.mm(a, b), reps, sync)
        out[str(n)] = 2.0 * n**3 / _median(ts) / 1e9
    return {"gflops_by_size": out, "gflops": max(out.values())}


def make_config(setting, quick, remat=False):
    s = SETTINGS[setting]
    cfg = dom2.default_config()
    cfg.remat_solver = remat  # jax.checkpoint per solver step of the Q term (same values)
    # The reference anchors (shared/reference.md) and the eager PyTorch update time the CQL of
    # Eq. 1 as printed, uniform proposals only. (DOM2's default adds the policy proposals: one
    # more forward DPM-Solver pass over the batch per update.)
    cfg.cql_policy_noise = 0.0
    cfg.num_solver_steps = QUICK["steps"] if quick else s["steps"]
    if quick:
        cfg.noise_hidden = QUICK["noise_hidden"]
        cfg.critic_hidden = QUICK["critic_hidden"]
        cfg.batch_size = QUICK["batch_size"]
    return cfg


@functools.lru_cache(maxsize=None)
def init_state(setting: str, quick: bool, seeds: int = 0, remat: bool = False):
    """(config, setting dict, DOM2State) with seed 0 (``seeds`` > 0: a leading seed axis;
    ``remat``: DOM2's remat_solver on); jitted and cached (tests reuse the --quick state)."""
    s = SETTINGS[setting]
    cfg = make_config(setting, quick, remat)
    hp = dom2.Hparams.from_config(cfg, s["agents"], s["obs"], s["act"])
    init = lambda k: dom2.init(k, hp, s["agents"], s["obs"], s["act"])
    if seeds:
        state = jax.jit(jax.vmap(init))(jax.random.split(jax.random.PRNGKey(0), seeds))
    else:
        state = jax.jit(init)(jax.random.PRNGKey(0))
    return cfg, s, state


def random_arrays(s, n=10_000, seed=0):
    """Random device-resident transitions [n, A, ...] (the same for JAX and torch)."""
    k = jax.random.split(jax.random.PRNGKey(seed), 5)
    a, o, d = s["agents"], s["obs"], s["act"]
    return {"obs": jax.random.normal(k[0], (n, a, o)),
            "actions": jax.random.uniform(k[1], (n, a, d), minval=-1, maxval=1),
            "rewards": jax.random.normal(k[2], (n, a)),
            "next_obs": jax.random.normal(k[3], (n, a, o)),
            "dones": jnp.zeros((n, a))}


def param_count(tree) -> int:
    return int(sum(x.size for x in jax.tree.leaves(tree)))


def analytic_flops(state) -> float:
    """Matmul FLOPs of one DOM2 update of all agents from the parameter shapes.

    Per agent and sample, with F_a the noise net's forward, F_q one Q net's forward, F_c = 2 F_q:
      target actor N F_a + target critics F_c + critic fwd/bwd 3 F_c (1 + M)
      + actor: eps loss 3 F_a, differentiable solver 3 N F_a, Q_1 fwd + input-grad 2 F_q.
    (backward = 2 x forward; the first layer's unneeded input gradient is not subtracted).
    """
    hp = state.hp
    a = hp.num_agents

    def dense_flops(tree):
        ks = [x for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]
              if str(path[-1]).find("kernel") >= 0]
        return sum(2.0 * k.shape[-2] * k.shape[-1] for k in ks)

    f_a = dense_flops(state.actor.params)
    f_c = dense_flops(state.critic.params)
    # kernels are stacked [A, in, out]: 2 in out is already the per-agent, per-sample count
    f_q = f_c / 2
    n, m = hp.num_solver_steps, hp.num_cql_actions
    per = n * f_a + f_c + 3 * f_c * (1 + m) + 3 * f_a + 3 * n * f_a + 2 * f_q
    return per * hp.batch_size * a


def xla_flops(state, arrays):
    """XLA cost-analysis FLOPs of one update, solver scan unrolled (lowered HLO; no compile)."""
    batch = sample_batch(arrays, jax.random.PRNGKey(0), state.hp.batch_size)
    orig = diffusion.dpm_solver_sample
    diffusion.dpm_solver_sample = functools.partial(orig, unroll=True)
    try:
        lowered = jax.jit(lambda st, b, k: dom2.update(st, b, k)).lower(
            state, batch, jax.random.PRNGKey(1))
        ca = lowered.cost_analysis()
    finally:
        diffusion.dpm_solver_sample = orig
    if isinstance(ca, (list, tuple)):
        ca = ca[0] if ca else None
    return float(ca["flops"]) if ca and "flops" in ca else None


# ----------------------------------------------------------------------------- JAX
def seed_sharding(num_devices: int):
    """A 1-D mesh over the first ``num_devices`` local devices, split along the seed axis."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec  # (a) only --devices needs it
    devices = jax.local_devices()
    if num_devices > len(devices):
        raise ValueError(f"{num_devices} devices asked for, {len(devices)} present (on a CPU: "
                         f"XLA_FLAGS=--xla_force_host_platform_device_count={num_devices})")
    return NamedSharding(Mesh(np.array(devices[:num_devices]), ("seed",)),
                         PartitionSpec("seed"))


def time_jax(state, arrays, updates, repeats, seeds=None, sharding=None):
    """Compile + time jit(scan_updates) (optionally vmapped over ``seeds`` states, placed split
    over a seed ``sharding``)."""
    key = jax.random.PRNGKey(2)
    run = lambda st, k: scan_updates(dom2.update, st, arrays, k, updates)
    if seeds is None:
        fn = jax.jit(run)
        keys = key
    else:
        fn = jax.jit(jax.vmap(run))
        keys = jax.random.split(key, seeds)
        if sharding is not None:
            state, keys = jax.device_put((state, keys), sharding)
    t = time.perf_counter()
    compiled = fn.lower(state, keys).compile()
    compile_s = time.perf_counter() - t
    t = time.perf_counter()
    state, metrics = compiled(state, keys)  # warm-up
    jax.block_until_ready(metrics)
    warm_s = time.perf_counter() - t
    first = {k: float(v.reshape((-1,) + v.shape[-2:])[0, 0].mean()) for k, v in metrics.items()}
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        state, metrics = compiled(state, keys)
        jax.block_until_ready(metrics)
        ts.append(time.perf_counter() - t)
    ms = 1e3 * _median(ts) / updates
    return {"compile_s": compile_s, "warmup_call_s": warm_s, "updates_per_call": updates,
            "repeats": repeats, "call_s": ts, "ms_per_update": ms, "updates_per_s": 1e3 / ms,
            "first_update_metrics": first, **memory_info(compiled)}


# ----------------------------------------------------------------------------- torch
def time_torch(torch, cfg, s, state, arrays, updates, repeats, device):
    from benchmarks import torch_dom2  # (a) imports torch, optional ([bench] extra)
    model = torch_dom2.TorchDOM2(cfg, s["agents"], s["obs"], s["act"], device=device)
    torch_dom2.load_jax_state(model, state)  # same initial parameters as the JAX run
    counts = model.num_params()
    t_arrays = {k: torch.as_tensor(np.array(v), device=device) for k, v in arrays.items()}
    sync = _torch_sync(torch, device)
    t = time.perf_counter()
    first = model.train_steps(t_arrays, 1)
    model.train_steps(t_arrays, 1)
    sync()
    warm_s = time.perf_counter() - t
    first = {k: float(np.mean([float(m[k]) for m in first])) for k in first[0]}
    ts = _timed_calls(lambda: model.train_steps(t_arrays, updates), repeats, sync)
    ms = 1e3 * _median(ts) / updates
    return {"params_per_agent": counts, "warmup_s": warm_s, "updates_per_call": updates,
            "repeats": repeats, "call_s": ts, "ms_per_update": ms, "updates_per_s": 1e3 / ms,
            "first_update_metrics": first, "device": device}


# ----------------------------------------------------------------------------- outputs
def write_md(path, res):
    sysi = res["system"]
    peak = res["matmul_peak"]["gflops"]
    lines = [f"# DOM2 update throughput ({'quick' if res['quick'] else 'default sizes'})", "",
             f"Command: `{res['command']}`  ",
             f"Machine: {sysi['cpu_model']}, {sysi['cpu_cores']} cores; JAX {sysi['jax']} on "
             f"{sysi['jax_devices']} ({sysi['jax_threads']} threads); torch {sysi['torch']} "
             f"({sysi['torch_threads']} threads, {sysi['torch_device']}).  ",
             f"Load average (1/5/15 min) before: {res['load_before']}, after: {res['load_after']}."
             f"  ", f"Matmul peak (jitted jnp.dot float32): {peak:.1f} GFLOP/s "
             f"{res['matmul_peak']['gflops_by_size']}.", ""]
    if not res.get("complete", True):
        lines += ["**Partial result**: the run stopped before every requested setting was "
                  "measured.", ""]
    if res["torch_status"] != "ok":
        lines += [f"PyTorch part: {res['torch_status']}", ""]
    lines += ["| setting | params/agent (actor, critic) | JAX ms/update | JAX updates/s | "
              "torch ms/update | torch updates/s | JAX / torch | compile (s) | GFLOP/update "
              "(XLA / analytic) | JAX GFLOP/s | % matmul peak |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in res["settings"].items():
        j, t = r["jax"], r.get("torch")
        lines.append(
            f"| {name} ({r['agents']} agents, obs {r['obs']}, act {r['act']}, "
            f"N={r['solver_steps']},"
            f" batch {r['batch']}) | {r['params_per_agent']['actor']:,}, "
            f"{r['params_per_agent']['critic']:,} | {j['ms_per_update']:.1f} | "
            f"{j['updates_per_s']:.2f} | "
            + (f"{t['ms_per_update']:.1f} | {t['updates_per_s']:.2f} | **{r['ratio']:.2f}x** | "
               if t else "– | – | – | ")
            + f"{j['compile_s']:.1f} | "
            + (f"{r['xla_flops'] / 1e9:.3g}" if r["xla_flops"] else "–")
            + f" / {r['analytic_flops'] / 1e9:.3g} | {r['gflops_per_s']:.1f} | "
            f"{100 * r['peak_share']:.0f}% |")
    if res["seeds"]:
        lines += ["", "Seeds vmapped in one program (JAX). Program MiB: XLA's memory analysis "
                  "of the compiled program (`seed_plan.compiled_bytes`: arguments + outputs + "
                  "temporaries - aliased); remat: DOM2's `remat_solver` (`jax.checkpoint` per "
                  "solver step of the Q term).", "",
                  "| setting | seeds | devices | remat | updates/call | compile (s) | ms/update "
                  "(all seeds) | updates/s per seed | seed-updates/s total | GFLOP/s | program "
                  "MiB | MiB per seed |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for row in res["seeds"]:
            remat = "on" if row.get("remat_solver") else "off"
            nd = row.get("devices", 1)
            if row.get("error"):
                lines.append(f"| {row['setting']} | {row['seeds']} | {nd} | {remat} | failed: "
                             f"{row['error']} | | | | | | | |")
                continue
            lines.append(f"| {row['setting']} | {row['seeds']} | {nd} | {remat} | "
                         f"{row['updates_per_call']} | "
                         f"{row['compile_s']:.1f} | {row['ms_per_update']:.1f} | "
                         f"{row['updates_per_s_per_seed']:.2f} | {row['seed_updates_per_s']:.2f} | "
                         f"{row['gflops_per_s']:.1f} | {_mib(row.get('compiled_bytes'))} | "
                         f"{_mib(row.get('bytes_per_seed'), '{:,.2f}')} |")
        if any(row.get("devices", 1) > 1 for row in res["seeds"]):
            cpu = res["system"]["jax_backend"] == "cpu"
            lines += ["", "devices > 1: the seed axis split over that many local devices (a 1-D "
                      "mesh, as `experiments.train --devices`); program MiB is then per "
                      "device." + (" On this CPU the devices are forced host devices "
                                   "(`--xla_force_host_platform_device_count`) sharing the same "
                                   "cores: these rows measure the mechanism, not a speed-up."
                                   if cpu else "")]
    if res.get("plans"):
        lines += ["", "Seed plan per setting: the group `experiments.train --num_seeds` would "
                  "vmap, from these rows (`seed_plan.choose_group` fed the measured "
                  "seed-updates/s, the i-th smallest measured count standing for its i-th "
                  "doubling step, >= 5% gain per step; `seed_plan.memory_plan` with the bytes "
                  "per seed of the smallest count and the device's free memory at the start "
                  "of the run, 80% of it usable):", ""]
        lines += [f"* {plan_line(p)}" for p in res["plans"]]
    lines += ["", "Anchors (reference.md; net hidden 256 x 3 residual blocks, ~29 GFLOP per spread "
              "update, HalfCheetah obs 17):", ""]
    for name, r in res["settings"].items():
        for line in r["anchor_comparison"]:
            lines.append(f"* {name}: {line}")
    lines += ["", f"Target: JAX >= {TARGET_RATIO}x eager PyTorch updates/s."]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def write_png(path, res):
    matplotlib.use("Agg")
    names = list(res["settings"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ax = axes[0]
    x = range(len(names))
    jv = [res["settings"][n]["jax"]["updates_per_s"] for n in names]
    tv = [(res["settings"][n].get("torch") or {}).get("updates_per_s", 0.0) for n in names]
    ax.bar([i - 0.2 for i in x], jv, 0.4, label="JAX (jit, agents vmapped, scan)")
    ax.bar([i + 0.2 for i in x], tv, 0.4, label="PyTorch eager (loop over agents)")
    for i, n in enumerate(names):
        r = res["settings"][n].get("ratio")
        if r:
            ax.text(i, max(jv[i], tv[i]) * 1.02, f"{r:.2f}x", ha="center")
    ax.set_xticks(list(x))
    ax.set_xticklabels(names)
    ax.set_ylabel("updates / s (all agents)")
    ax.set_title(f"DOM2 update, {res['system']['jax_device_kind']}")
    ax.legend(fontsize=8)
    ax = axes[1]
    for n, remat in sorted({(r["setting"], bool(r.get("remat_solver"))) for r in res["seeds"]}):
        rows = [r for r in res["seeds"] if r["setting"] == n and not r.get("error")
                and bool(r.get("remat_solver")) == remat]
        lab = f"{n}, remat" if remat else n
        ax.plot([r["seeds"] for r in rows], [r["seed_updates_per_s"] for r in rows], "o-",
                label=f"{lab}: total seed-updates/s")
        ax.plot([r["seeds"] for r in rows], [r["updates_per_s_per_seed"] for r in rows], "s--",
                label=f"{lab}: updates/s per seed")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("seeds vmapped")
    ax.set_ylabel("updates / s")
    ax.set_title("JAX seed scaling")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def anchor_comparison(name, r, accel):
    out = []
    j = r["jax"]
    gf_anchor = ANCHORS["gflop_per_update"]["spread"]
    if name == "spread":
        if not accel:
            a = ANCHORS["cpu_2core"]["spread"]
            out.append(f"anchor 2-core CPU: JAX {a['jax_ms']} ms "
                       f"({gf_anchor / a['jax_ms'] * 1e3:.0f}"
                       f" GFLOP/s), eager torch {a['torch_eager_ms'][0]:.0f}-"
                       f"{a['torch_eager_ms'][1]:.0f} ms (ratio "
                       f"{a['torch_eager_ms'][0] / a['jax_ms']:.2f}-"
                       f"{a['torch_eager_ms'][1] / a['jax_ms']:.2f}x); ours: JAX "
                       f"{j['ms_per_update']:.1f} ms at {r['gflops_per_s']:.0f} GFLOP/s"
                       + (f", ratio {r['ratio']:.2f}x" if r.get("ratio") else ""))
        a = ANCHORS["H200"]["spread"]
        out.append(f"anchor H200: JAX {a['jax_ms']} ms ({gf_anchor / a['jax_ms']:.1f} TFLOP/s), "
                   f"eager torch {a['torch_eager_ms']} ms "
                   f"({a['torch_eager_ms'] / a['jax_ms']:.0f}x), "
                   f"torch CUDA graph {a['torch_cuda_graph_ms']} ms; ours "
                   f"{j['ms_per_update']:.1f} ms for {r['flops_per_update'] / 1e9:.0f} GFLOP "
                   f"({r['gflops_per_s'] / 1e3:.2f} TFLOP/s)")
    else:
        a = ANCHORS["H200"]["halfcheetah_obs17"]
        out.append(f"anchor H200 (obs 17): JAX {a['jax_ms']} ms, eager torch "
                   f"{a['torch_eager_ms']} ms ({a['torch_eager_ms'] / a['jax_ms']:.0f}x); ours "
                   f"{j['ms_per_update']:.1f} ms at {r['gflops_per_s']:.0f} GFLOP/s"
                   + (f", ratio {r['ratio']:.2f}x" if r.get("ratio") else ""))
    return out


# ----------------------------------------------------------------------------- main
def run(opts: Options = None, argv_flags=None):
    """Runs the benchmark, writes the files and returns the result dict (keys RESULT_KEYS)."""
    opts = opts or Options()
    if opts.from_json:
        with open(opts.from_json) as f:
            res = json.load(f)
        derive(res)
        _write_files(opts.from_json[:-len(".json")], res)
        return res
    quick = opts.quick
    prev_opt = jax.config.read("jax_disable_most_optimizations")
    if quick:  # halves XLA's compile time for the test; timings in quick mode mean nothing
        jax.config.update("jax_disable_most_optimizations", True)
    try:
        return _run(opts, argv_flags)
    finally:
        jax.config.update("jax_disable_most_optimizations", prev_opt)


def _run(opts, argv_flags):
    quick = opts.quick
    settings = (opts.settings or ("spread" if quick else "spread,halfcheetah")).split(",")
    for n in settings:
        if n not in SETTINGS:
            raise ValueError(f"unknown setting {n!r}; choose from {sorted(SETTINGS)}")
    updates = opts.updates or (2 if quick else 5)
    repeats = opts.repeats or (1 if quick else 2)
    seeds_list = [int(x) for x in (opts.seeds_list or ("1,2" if quick else "1,4,16")).split(",")
                  if x]
    devices_list = sorted({int(x) for x in (opts.devices or "1").split(",") if x} | {1})
    for d in devices_list:
        if d > 1:
            seed_sharding(d)  # fails now, naming the fix, rather than after the first setting
    accel = jax.default_backend() != "cpu"
    seeds_settings = (opts.seeds_settings.split(",") if opts.seeds_settings is not None
                      else (settings if accel else [n for n in settings if n == "spread"]))
    load_before = [round(x, 2) for x in os.getloadavg()]

    torch = None
    torch_status = "skipped (--no_torch)"
    if not opts.no_torch:
        try:
            import torch  # noqa: F811  (a) optional ([bench] extra)
            torch_status = "ok"
        except ImportError:
            torch_status = ("skipped: torch is not installed (pip install -e .[bench] or "
                            "torch==2.13.0)")
            print(f"PyTorch part {torch_status}", flush=True)
    t_threads = opts.torch_threads or jax_threads()
    t_device = "cpu"
    if torch is not None:
        torch.set_num_threads(t_threads)
        if opts.device and torch.cuda.is_available():
            t_device = "cuda"
    system = machine_info(torch, t_threads)
    system["torch_device"] = t_device if torch is not None else None
    if torch is not None and t_device == "cuda":
        system["torch_cuda_device"] = torch.cuda.get_device_name(0)
        # JAX's default float32 matmul precision on NVIDIA GPUs uses TF32; give torch the same
        # (its default is full float32 matmuls) so the two do the same arithmetic
        torch.set_float32_matmul_precision("high")
        system["torch_float32_matmul_precision"] = torch.get_float32_matmul_precision()
    print(f"Running on: {system['cpu_model']} ({system['cpu_cores']} cores); JAX {system['jax']} "
          f"backend {system['jax_backend']} devices {system['jax_devices']}; torch "
          f"{system['torch']} on {system['torch_device']} with {system['torch_threads']} threads; "
          f"load {load_before}", flush=True)

    sizes = (256, 512) if quick else ((4096, 8192) if accel else (1024, 2048))
    peak = matmul_peak(sizes)
    if torch is not None:
        peak["torch"] = torch_matmul_peak(torch, t_device, sizes)
    print(f"matmul peak: JAX {peak['gflops']:.1f} GFLOP/s {peak['gflops_by_size']}"
          + (f"; torch {peak['torch']['gflops']:.1f}" if torch is not None else ""), flush=True)

    free_bytes = seed_plan.device_free_bytes()  # before this run allocates anything
    results, seed_rows = {}, []
    for name in settings:
        cfg, s, state = init_state(name, quick)
        arrays = random_arrays(s)
        hp = state.hp
        counts = {"actor": param_count(state.actor.params) // s["agents"],
                  "critic": param_count(state.critic.params) // s["agents"]}
        xf = xla_flops(state, arrays)
        af = analytic_flops(state)
        flops = xf if xf else af
        xf_txt = f"{xf / 1e9:.2f} G" if xf else "n/a (no cost analysis on this backend)"
        print(f"[{name}] params/agent {counts}; FLOPs/update XLA {xf_txt}, "
              f"analytic {af / 1e9:.2f} G", flush=True)
        r = {"agents": s["agents"], "obs": s["obs"], "act": s["act"], "batch": hp.batch_size,
             "solver_steps": hp.num_solver_steps, "noise_hidden": list(hp.noise_hidden),
             "critic_hidden": list(hp.critic_hidden), "cql_actions": hp.num_cql_actions,
             "params_per_agent": counts, "xla_flops": xf, "analytic_flops": af,
             "flops_per_update": flops,
             "flops_source": "xla_cost_analysis_unrolled" if xf else "analytic"}
        r["jax"] = time_jax(state, arrays, updates, repeats)
        print(f"[{name}] JAX: compile {r['jax']['compile_s']:.1f} s, "
              f"{r['jax']['ms_per_update']:.1f} ms/update, {r['jax']['updates_per_s']:.2f} "
              f"updates/s", flush=True)
        if torch is not None:
            tr = time_torch(torch, cfg, s, state, arrays, updates, repeats, t_device)
            if tr["params_per_agent"] != counts:
                raise AssertionError(f"parameter counts differ: torch {tr['params_per_agent']} "
                                     f"vs JAX {counts}")
            r["torch"] = tr
            r["params_equal"] = True
            r["ratio"] = r["jax"]["updates_per_s"] / tr["updates_per_s"]
            print(f"[{name}] torch: {tr['ms_per_update']:.1f} ms/update, "
                  f"{tr['updates_per_s']:.2f} updates/s; params equal {counts}; JAX/torch "
                  f"{r['ratio']:.2f}x (target {TARGET_RATIO}x)", flush=True)
            print(f"[{name}] first-update losses JAX {_fmt(r['jax']['first_update_metrics'])} | "
                  f"torch {_fmt(tr['first_update_metrics'])}", flush=True)
        r["gflops_per_s"] = flops * r["jax"]["updates_per_s"] / 1e9
        r["peak_share"] = r["gflops_per_s"] / peak["gflops"]
        if r.get("torch"):
            r["torch_gflops_per_s"] = flops * r["torch"]["updates_per_s"] / 1e9
        r["anchor_comparison"] = anchor_comparison(name, r, accel)
        results[name] = r
        if name in seeds_settings:
            for remat in (False, True) if opts.remat_solver else (False,):
                seed_rows += seed_scaling(name, quick, remat, r, arrays, updates, repeats,
                                          seeds_list, flops, devices_list)
            for plan in seed_plans([x for x in seed_rows if x["setting"] == name], free_bytes):
                print(f"[{name}] seed plan: {plan_line(plan)}", flush=True)

        # results so far are written after every setting, so a run stopped by a time limit
        # (e.g. a lent accelerator's) keeps what it measured; "complete" says which it is
        res = _save(opts, argv_flags, system, load_before, peak, results, seed_rows,
                    torch_status, free_bytes, complete=name == settings[-1])
    return res


def seed_scaling(name, quick, remat, r, arrays, updates, repeats, seeds_list, flops,
                 devices_list=(1,)):
    """Seeds rows of one setting: ``jax.vmap`` of the update scan over S seeds for S in
    ``seeds_list``, timed and with XLA's compiled bytes. S = 1 without remat reuses the plain
    measurement ``r["jax"]``; with ``remat`` (DOM2's remat_solver) S = 1 is measured plain too.
    For each D > 1 in ``devices_list`` every S > 1 is measured again split over D devices."""
    rows = []
    for k in seeds_list:
        for d in devices_list:
            if d == 1 or k > 1:
                rows += _seed_row(name, quick, remat, r, arrays, updates, repeats, k, flops, d)
    return rows


def _seed_row(name, quick, remat, r, arrays, updates, repeats, k, flops, d):
    """One seeds row (a list of one dict): k seeds on d devices, or the reason it failed."""
    tag = (" (remat_solver)" if remat else "") + (f" over {d} devices" if d > 1 else "")
    head = {"setting": name, "seeds": k, "devices": d, "remat_solver": remat}
    if k % d:
        return [dict(head, error=f"{k} seeds do not split over {d} devices")]
    try:
        if k == 1 and not remat:
            j = r["jax"]
            row = {"compile_s": j["compile_s"], "ms_per_update": j["ms_per_update"],
                   "updates_per_call": updates, "compiled_bytes": j.get("compiled_bytes"),
                   "memory": j.get("memory"), "note": "the plain (un-vmapped) measurement"}
        elif k == 1:
            row = time_jax(init_state(name, quick, 0, True)[2], arrays, updates, repeats)
            row["note"] = "plain (un-vmapped), remat_solver on"
        else:
            st = init_state(name, quick, k, remat)[2]
            row = time_jax(st, arrays, max(1, updates // k), repeats, seeds=k,
                           sharding=seed_sharding(d) if d > 1 else None)
    except Exception as e:  # e.g. out of device memory at many seeds
        msg = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
        print(f"[{name}] {k} seeds{tag} failed: {msg}", flush=True)
        return [dict(head, error=msg)]
    row.pop("first_update_metrics", None)
    row.update(head, updates_per_s_per_seed=1e3 / row["ms_per_update"],
               seed_updates_per_s=k * 1e3 / row["ms_per_update"])
    row["gflops_per_s"] = flops * row["seed_updates_per_s"] / 1e9
    row["bytes_per_seed"] = row["compiled_bytes"] / k if row.get("compiled_bytes") else None
    print(f"[{name}] {k} seeds{tag}: compile {row['compile_s']:.1f} s, "
          f"{row['ms_per_update']:.1f} ms/update, {row['seed_updates_per_s']:.2f} "
          f"seed-updates/s, program {_mib(row['compiled_bytes'])} MiB "
          f"({_mib(row['bytes_per_seed'])} MiB per seed)", flush=True)
    return [row]


def _mib(b, fmt="{:,.1f}"):
    return fmt.format(b / MiB) if b else "–"


def plan_line(p):
    """One line of text for a plan of ``seed_plans``."""
    head = f"{p['setting']}, remat {'on' if p['remat_solver'] else 'off'}: "
    if p["memory_error"]:
        return head + f"refused: {p['memory_error']}"
    rates = ", ".join(f"{k}: {v:.2f}" for k, v in p["rates_compared"].items())
    mem = (f"memory: one seed {_mib(p['one_seed_bytes'])} MiB, {p['device_free_bytes'] / 2**30:.1f}"
           f" GiB free -> at most {p['memory_max_group']:,} seeds per group"
           if p["memory_max_group"] else "memory: not analysed (no compiled bytes or free "
                                          "memory recorded)")
    return (head + f"group {p['group']} of the measured {p['measured_seeds']} seeds "
            f"(choose_group compared {rates} seed-updates/s); {mem}")


def _save(opts, argv_flags, system, load_before, peak, results, seed_rows, torch_status,
          free_bytes, complete):
    res = {"benchmark": "throughput", "quick": opts.quick, "complete": complete,
           "command": "python -m benchmarks.throughput " + " ".join(argv_flags or []),
           "system": system, "load_before": load_before,
           "load_after": [round(x, 2) for x in os.getloadavg()], "matmul_peak": peak,
           "settings": results, "seeds": seed_rows, "anchors": ANCHORS,
           "target_ratio": TARGET_RATIO, "torch_status": torch_status,
           "device_free_bytes": free_bytes}
    derive(res)
    dev = device_label(jax.devices()[0].device_kind) if opts.device else None
    stem = "throughput" + ("_quick" if opts.quick else "") + (f"_{dev}" if dev else "")
    out = output_dir(opts)
    os.makedirs(out, exist_ok=True)
    base = os.path.join(out, stem)
    _write_files(base, res)
    print(f"load after: {res['load_after']}; wrote {base}.json/.md/.png"
          + ("" if complete else f" (partial: {', '.join(results)} so far)"), flush=True)
    return res


def output_dir(opts: Options) -> str:
    """``opts.out``, or the default: benchmarks/results, runs/benchmarks for a quick run."""
    return opts.out or default_out(opts.quick)


def _write_files(base, res):
    """``base``.json / .md / .png of a derived result."""
    write_json(base + ".json", res)
    write_md(base + ".md", res)
    write_png(base + ".png", res)


def _fmt(m):
    return ", ".join(f"{k} {m[k]:.3g}" for k in ("critic_loss", "actor_loss", "actor_bc") if k in m)


def main(argv):
    f = flags.FLAGS
    try:
        run(Options(**{k.name: f[k.name].value for k in dataclasses.fields(Options)}),
            [a for a in sys.argv[1:]])
    except ValueError as e:  # a bad setting or device count: one line, no traceback
        raise SystemExit(f"error: {e}")


if __name__ == "__main__":
    _d = Options()
    flags.DEFINE_string("settings", None, "Comma list of settings (default spread,halfcheetah;"
                        " spread with --quick).")
    flags.DEFINE_integer("updates", None, "Updates per timed call (default 5; 2 with --quick).")
    flags.DEFINE_integer("repeats", None, "Timed calls, median reported (default 2; 1 quick).")
    flags.DEFINE_string("seeds_list", None, "Seed counts vmapped (default 1,4,16; 1,2 quick).")
    flags.DEFINE_string("seeds_settings", None, "Settings to seed-scale (default: spread on "
                        "CPU, all on an accelerator).")
    flags.DEFINE_bool("device", False, "Label files with the accelerator name; torch on CUDA.")
    flags.DEFINE_bool("quick", False, "Tiny sizes, XLA optimisations off (for tests).")
    flags.DEFINE_bool("no_torch", False, "Skip the PyTorch comparison.")
    flags.DEFINE_integer("torch_threads", 0, "torch threads (0: the cores JAX uses).")
    flags.DEFINE_string("out", _d.out, "Output dir (default benchmarks/results; "
                        "runs/benchmarks with --quick).")
    flags.DEFINE_string("from_json", None, "Only rewrite the .md/.png of this saved .json.")
    flags.DEFINE_string("devices", None, "Device counts to split every seeds row over, e.g. "
                        "1,2 (default 1). On a CPU: XLA_FLAGS=--xla_force_host_platform_device_"
                        "count=N forces N host devices (mechanism only: they share the cores).")
    flags.DEFINE_bool("remat_solver", False, "Also measure every seeds row with DOM2's "
                      "remat_solver on (jax.checkpoint per solver step of the Q term; as "
                      "--config.agent.remat_solver=True in experiments.train), next to the rows "
                      "with it off: XLA's program bytes and the time side by side.")
    app.run(main)
