#!/usr/bin/env bash
# Paper-size diffusion trainings (DOM2, MA-SfBC) in one prepared accelerator call (lent GPU).
#
#   bash experiments/device_train.sh OUTDIR
#
# On 2 CPU cores a paper-size DOM2 update takes ~1.2 s (100k updates: ~33 h); on one H200 it
# takes ~7 ms with 2 seeds vmapped. This script runs what a single 10-minute device call can
# hold, in priority order, under one deadline:
#   1. a smoke step (import, one jitted op on the accelerator; exit 3 if it fails; SMOKE=0 skips),
#   2. the datasets (experiments.generate_dataset, DATASET_SIZE transitions, on the accelerator;
#      DATA_ROOT/ENV/QUALITY-nSIZE, reused if already there),
#   3. for each ALGO, ENV and QUALITY: experiments.train with NUM_SEEDS seeds vmapped,
#      UPDATES updates, an evaluation of EVAL_EPISODES episodes every EVAL_EVERY updates
#      (EVAL_EPISODES_<ENV>, e.g. EVAL_EPISODES_mamujoco_halfcheetah_2x3=100, sets one task's).
# Each training gets min(its own limit, time left before DEADLINE seconds); a run stopped by
# its limit keeps every evaluation it finished (metrics.csv and learning_curve.png are written
# after each one). Workdirs follow experiments.sweep's layout, OUTDIR/runs/ENV/QUALITY/ALGO/
# seed<SEED>-n<NUM_SEEDS>, so `python -m experiments.report --root=...` reads finished ones.
# Everything but checkpoints (paper-size DOM2 on spread: ~150 MB per seed) and datasets is
# packed into OUTDIR/device_train.tar.gz after every step.
#
# Sizes measured on one H200 (session 6, jax 0.11.2, spread, 2 seeds, 1000-episode evaluations;
# BUILD_NOTES "GPU trainings"): dataset of 1e6 transitions ~10 s; process start ~15 s; the first
# chunk costs the XLA compile, DOM2 80-106 s, MA-SfBC ~44 s; each further 4000-update chunk with
# its evaluation DOM2 28 s, MA-SfBC 6.5 s. So DOM2 at 16k updates needs ~235 s per quality and
# the defaults (DOM2, expert and medium) fill one 10-minute call; MA-SfBC at 16k (~90 s per
# quality) belongs in a second call: ALGOS=masfbc T_OTHER=100 DEADLINE=230.
# A CPU dry run at smoke sizes (~3 min):
#   PRESET=smoke UPDATES=4 EVAL_EVERY=2 EVAL_EPISODES=2 DATASET_SIZE=2000 \
#     bash experiments/device_train.sh /tmp/dt
#
# ENVS (default: ENV_NAME, default mpe_spread) may list several tasks; the order is ALGOS, then
# ENVS, then QUALITIES. A training whose workdir already holds results.json is skipped; one with
# checkpoints resumes from the newest, so running the script again continues where it stopped.
#
# Runs longer than one 10-minute call (session 7): DETACH=1 starts the driver in its own process
# session (setsid), which a lent machine keeps running between calls while it stays warm, with
# OUTDIR replaced by STATE_DIR/out (default /tmp/device_train_state/out; its checkpoints stay
# there), then waits at most WAIT seconds (default 560), copies the tarball and the driver's log
# into OUTDIR and returns; the driver's DEADLINE counts from its own start. Calling DETACH=1
# again attaches to a driver that is still running (waits for it again) or, if none runs,
# starts a new one that skips finished trainings and resumes the others. E.g. a 100k-update
# run spanning two calls of a 900 s lease:
#   call 1: DETACH=1 WAIT=560 DEADLINE=800 T_DOM2=780 UPDATES=100000 EVAL_EVERY=20000 ...
#   call 2 (sent within the 30 s the machine stays warm): DETACH=1 WAIT=240 (same variables)
set -u
OUT=${1:?usage: device_train.sh OUTDIR}
if [ "${DETACH:-0}" = 1 ]; then
    ST=${STATE_DIR:-/tmp/device_train_state}
    WAIT=${WAIT:-560}
    mkdir -p "$ST/out" "$OUT"
    alive() { pid=$(cat "$ST/driver.pid" 2>/dev/null); [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; }
    if alive; then
        echo "[device_train] attaching to the running driver (pid $pid)"
    else
        DETACH=0 DRIVER_PIDFILE="$ST/driver.pid" setsid bash "$0" "$ST/out" \
            >> "$ST/driver.log" 2>&1 < /dev/null &
        for _ in $(seq 50); do alive && break; sleep 0.1; done  # the driver writes its pid
        echo "[device_train] started a detached driver (pid $pid; log $ST/driver.log)"
    fi
    end=$(( $(date +%s) + WAIT ))
    while alive && [ "$(date +%s)" -lt "$end" ]; do sleep 2; done
    cp "$ST/out/device_train.tar.gz" "$ST/driver.log" "$OUT/" 2>/dev/null
    tail -n 40 "$ST/driver.log"
    if alive; then
        echo "[device_train] the driver is still running: call again with DETACH=1 to wait for it"
    else
        echo "[device_train] the driver has ended"
    fi
    exit 0
fi
[ -n "${DRIVER_PIDFILE:-}" ] && echo $$ > "$DRIVER_PIDFILE"
ENVS=${ENVS:-${ENV_NAME:-mpe_spread}}
QUALITIES=${QUALITIES:-expert medium}
ALGOS=${ALGOS:-dom2}
NUM_SEEDS=${NUM_SEEDS:-2}
SEED=${SEED:-0}
UPDATES=${UPDATES:-16000}
EVAL_EVERY=${EVAL_EVERY:-4000}
EVAL_EPISODES=${EVAL_EPISODES:-1000}
DATASET_SIZE=${DATASET_SIZE:-1000000}
PRESET=${PRESET:-}
DEADLINE=${DEADLINE:-560}          # seconds after the start by which everything must end
T_DOM2=${T_DOM2:-255}              # per-training limits (seconds)
T_OTHER=${T_OTHER:-100}
T_DATA=${T_DATA:-40}
EXTRA=${EXTRA:-}
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
START=$(date +%s)
DATA="${DATA_ROOT:-/tmp/device_train_datasets}"
mkdir -p "$OUT/runs" "$OUT/logs" "$DATA"
pack() { tar -czf "$OUT/device_train.tar.gz" --exclude=checkpoints -C "$OUT" runs logs \
           2>/dev/null; }
stamp() { echo "[device_train $(date +%H:%M:%S) +$(( $(date +%s) - START ))s] $*"; }
left() { echo $(( DEADLINE - ($(date +%s) - START) )); }

run_limited() {  # name, limit, command...
    local name=$1 limit=$2; shift 2
    local l; l=$(left)
    [ "$l" -lt "$limit" ] && limit=$l
    if [ "$limit" -lt 15 ]; then stamp "$name skipped: ${l}s left"; return 0; fi
    stamp "$name (limit ${limit}s): $*"
    timeout --signal=INT --kill-after=10 "$limit" "$@" >> "$OUT/logs/$name.log" 2>&1
    local rc=$?
    tail -n 4 "$OUT/logs/$name.log"
    stamp "$name exit $rc"
    pack
}

stamp "smoke"
if [ "${SMOKE:-1}" = 1 ] && ! "$PY" - >"$OUT/logs/smoke.log" 2>&1 <<'EOF'
import platform, jax, jax.numpy as jnp
import flax, optax, orbax.checkpoint, ml_collections  # noqa: F401
from dom2_jax.algos import dom2, masfbc  # noqa: F401
print("python", platform.python_version(), "jax", jax.__version__, "flax", flax.__version__)
print("devices", jax.devices(), jax.devices()[0].device_kind)
print("dot", float(jax.jit(lambda a: (a @ a).sum())(jnp.ones((256, 256)))))
EOF
then
    cat "$OUT/logs/smoke.log"; pack; stamp "smoke failed: stopping"; exit 3
fi
[ -f "$OUT/logs/smoke.log" ] && cat "$OUT/logs/smoke.log"

ds() { echo "$DATA/$1/$2-n$DATASET_SIZE"; }  # one directory per task, quality and size
for env in $ENVS; do
    for q in $QUALITIES; do
        if [ -f "$(ds "$env" "$q")/meta.json" ]; then stamp "data $(ds "$env" "$q") exists"; continue; fi
        run_limited "data_${env}_$q" "$T_DATA" "$PY" -m experiments.generate_dataset \
            --env="$env" --quality="$q" --num_samples="$DATASET_SIZE" --out="$(ds "$env" "$q")"
    done
done

for algo in $ALGOS; do
    limit=$T_OTHER; [ "$algo" = dom2 ] && limit=$T_DOM2
    for env in $ENVS; do
        per_env="EVAL_EPISODES_$env"; episodes=${!per_env:-$EVAL_EPISODES}
        for q in $QUALITIES; do
            wd="$OUT/runs/$env/$q/$algo/seed$SEED-n$NUM_SEEDS"
            if [ -f "$wd/results.json" ]; then stamp "train_${env}_${q}_$algo finished before"; continue; fi
            run_limited "train_${env}_${q}_$algo" "$limit" "$PY" -m experiments.train \
                --algo="$algo" --env="$env" --quality="$q" --dataset="$(ds "$env" "$q")" \
                --seed="$SEED" --num_seeds="$NUM_SEEDS" --workdir="$wd" --progress=false \
                ${PRESET:+--preset=$PRESET} --config.num_updates="$UPDATES" \
                --config.eval_every="$EVAL_EVERY" --config.eval_episodes="$episodes" \
                --config.dataset_size="$DATASET_SIZE" $EXTRA
        done
    done
done
stamp "done"
