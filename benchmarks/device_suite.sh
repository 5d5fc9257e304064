#!/usr/bin/env bash
# The three benchmarks in --device mode, in one prepared accelerator run (for a lent GPU/TPU).
#
#   bash benchmarks/device_suite.sh OUTDIR [SPREAD_POLICY_WORKDIR]
#
# 1. python -m benchmarks.throughput --device   (JAX vs torch on CUDA; seeds vmapped)
# 2. python -m benchmarks.env_speed --device    (JAX MPE and MJX HalfCheetah at large batches)
# 3. python -m benchmarks.solver_steps --device --workdir=SPREAD_POLICY_WORKDIR
#    (skipped without a workdir: training a policy does not belong in a short lease)
#
# A smoke step first imports the package and runs one jitted op on the accelerator, and the
# script stops there (exit 3) if that fails, so a broken environment costs seconds, not the
# lease. Each benchmark then runs under its own time limit (T_THROUGHPUT, T_ENV, T_SOLVER
# seconds; throughput writes its files after every setting, so a stopped run keeps what it
# measured). Results land in OUTDIR/results, logs in OUTDIR/logs, and both are packed into
# OUTDIR/device_suite.tar.gz after every part. Sizes can be overridden through the variables
# below. The defaults fit one 10-minute device call on one H200 (measured there in session 5:
# throughput ~300 s with 128 seeds at most, since 256 seeds of the paper-size net ran out of
# its 141 GB; env_speed 55 s; solver_steps 114 s; smoke ~20 s).
set -u
OUT=${1:?usage: device_suite.sh OUTDIR [SPREAD_POLICY_WORKDIR]}
POLICY=${2:-}
T_THROUGHPUT=${T_THROUGHPUT:-320}
T_ENV=${T_ENV:-100}
T_SOLVER=${T_SOLVER:-150}
TP_FLAGS=${TP_FLAGS:---updates=20 --repeats=5 --seeds_list=1,32,128}
ENV_FLAGS=${ENV_FLAGS:---mpe_scenarios=spread,tag --mpe_batch_sizes=4096,65536
           --mjx_batch_sizes=4096,65536}
SOLVER_FLAGS=${SOLVER_FLAGS:---sampler_impl=dynamic --compilation_cache=}
export PYTHONUNBUFFERED=1
# leave room for torch next to JAX's preallocated pool
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.8}
PY=${PYTHON:-python3}
mkdir -p "$OUT/results" "$OUT/logs"
pack() { tar -czf "$OUT/device_suite.tar.gz" -C "$OUT" results logs 2>/dev/null; }
stamp() { echo "[device_suite $(date +%H:%M:%S)] $*"; }

stamp "smoke"
if ! "$PY" - >"$OUT/logs/smoke.log" 2>&1 <<'EOF'
import platform, jax, jax.numpy as jnp
import flax, optax, chex, orbax.checkpoint, mujoco
from dom2_jax.algos import dom2  # noqa: F401
from dom2_jax.envs import make
print("python", platform.python_version(), "jax", jax.__version__, "flax", flax.__version__,
      "optax", optax.__version__, "chex", chex.__version__, "mujoco", mujoco.__version__)
print("devices", jax.devices(), jax.devices()[0].device_kind)
print("dot", float(jax.jit(lambda a: (a @ a).sum())(jnp.ones((256, 256)))))
env = make("mpe_spread")
print("spread reset ok", jax.tree.map(jnp.shape, env.reset(jax.random.PRNGKey(0))[0]))
try:  # MJX is needed by env_speed's HalfCheetah part only: report, don't stop
    from mujoco import mjx  # noqa: F401
    print("mujoco.mjx ok")
except Exception as e:
    print("mujoco.mjx import FAILED:", type(e).__name__, e)
try:
    import torch
    print("torch", torch.__version__, "cuda", torch.cuda.is_available())
except ImportError as e:
    print("torch missing:", e)
EOF
then
    cat "$OUT/logs/smoke.log"; pack; stamp "smoke failed: stopping"; exit 3
fi
cat "$OUT/logs/smoke.log"

run_part() {  # name, seconds, command...
    local name=$1 secs=$2; shift 2
    stamp "$name (limit ${secs}s): $*"
    timeout --signal=INT --kill-after=10 "$secs" "$@" > >(tee "$OUT/logs/$name.log") 2>&1
    stamp "$name exit $?"
    pack
}
run_part throughput "$T_THROUGHPUT" "$PY" -m benchmarks.throughput --device $TP_FLAGS \
    --out="$OUT/results"
run_part env_speed "$T_ENV" "$PY" -m benchmarks.env_speed --device $ENV_FLAGS --out="$OUT/results"
if [ -n "$POLICY" ]; then
    run_part solver_steps "$T_SOLVER" "$PY" -m benchmarks.solver_steps --device \
        --workdir="$POLICY" $SOLVER_FLAGS --out="$OUT/results"
else
    stamp "solver_steps skipped: no policy workdir given"
fi
ls -la "$OUT/results"
stamp "done"
