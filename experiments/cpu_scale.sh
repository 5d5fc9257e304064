#!/usr/bin/env bash
# The CPU-scale study of issue #26, run in full on a 2-core CPU box (resumable).
#
#   bash experiments/cpu_scale.sh [ROOT] [DATA_ROOT]      # default $HOME/dom2_runs/{cpu_scale,datasets}
#   PHASES="1 2" bash experiments/cpu_scale.sh             # only some phases
#
# Protocol (`--preset=cpu`, experiments/configs/common.py): the quick preset's networks, 1e6
# transitions per dataset, 30,000 updates for EVERY algorithm, 100 evaluation episodes every
# 5,000 updates; observation preprocessing per task (standardised on HalfCheetah for every
# algorithm). Three seeds per cell (base seeds 0, 1, 2; one process each).
#
# Two queues, one per core, each a single-threaded process pinned with taskset (two 1-thread
# processes beat one 2-thread process by ~13% here). Every run is an experiments.sweep entry:
# a finished run is skipped and an unfinished one resumes from its newest checkpoint, so the
# script can be killed at any time (a session's end) and started again by the next session.
# Phases, in priority order:
#   1. DOM2 and MA-SfBC (the cells issue #26's "done when" compares), spread and HalfCheetah,
#      medium and expert, 3 seeds;
#   2. BC, MA-TD3+BC, MA-CQL, OMAR on the same cells;
#   3. shifted evaluations of every finished run (speed for spread; R and E for HalfCheetah;
#      100 episodes; experiments.evaluate writes WORKDIR/evaluations/);
#   4. data efficiency (Fig. 5): DOM2 and MA-TD3+BC on 5% of the trajectories, HalfCheetah
#      medium; the four DOM2 ablations (Fig. 6) on HalfCheetah medium.
# The data are the same bits on every machine (portable rollouts, dom2_jax.envs.portable), so
# a run resumes on another machine.
# At the end of a session (stop the script right after a checkpoint; run phase 3 for the runs
# that finished, since only unfinished runs carry their checkpoint):
#   python -m experiments.archive_runs --root=ROOT --out=experiments/results/runs/cpu_scale \
#       --checkpoints=unfinished
#   python -m experiments.report --root=experiments/results/runs/cpu_scale \
#       --out=experiments/results/cpu_scale --metric=score
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=${1:-$HOME/dom2_runs/cpu_scale}
DATA=${2:-$HOME/dom2_runs/datasets}
PHASES=${PHASES:-"1 2 3 4"}
PY=${PYTHON:-python}
export XLA_FLAGS="${XLA_FLAGS:-} --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
COMMON=(--preset=cpu --generate_missing "--root=$ROOT" "--data_root=$DATA" --seeds=0,1,2
        --num_seeds=1)
SPREAD=mpe_spread
HC=mamujoco_halfcheetah_2x3

sweep() {  # CORE ARGS...: one experiments.sweep pinned to a core
  local core=$1; shift
  taskset -c "$core" "$PY" -m experiments.sweep "${COMMON[@]}" "$@"
}

phase() { [[ " $PHASES " == *" $1 "* ]]; }

# Runs carried over from an earlier machine (experiments/results/runs/cpu_scale holds each run's
# record and newest checkpoint: the end-of-session archive, see below) come back first; a run
# this tree already holds is left as it is.
ARCHIVE=experiments/results/runs/cpu_scale
if [[ -d "$ARCHIVE" ]]; then
  "$PY" -m experiments.archive_runs --restore "--root=$ROOT" "--out=$ARCHIVE" || exit 1
fi

# The four datasets first, one at a time, with seed 0 (both queues would otherwise race to
# generate the same file, each with its own run's seed). ~1 min each on this CPU.
for env in $SPREAD $HC; do
  for q in medium expert; do
    [[ -e "$DATA/$env/$q" ]] && continue
    taskset -c 0 "$PY" -m experiments.generate_dataset --env=$env --quality=$q \
      --num_samples=1000000 --seed=0 "--out=$DATA/$env/$q" || exit 1
  done
done

if phase 1; then
  # HalfCheetah DOM2 is the longest (~2 h a run): it gets a core of its own, the rest the other.
  sweep 1 --algos=dom2 --envs=$HC --qualities=medium,expert &
  # MA-SfBC first (minutes a run): each cell's comparator is there before its DOM2 runs end.
  ( sweep 0 --algos=masfbc --envs=$HC,$SPREAD --qualities=medium,expert
    sweep 0 --algos=dom2 --envs=$SPREAD --qualities=medium,expert ) &
  wait
fi
if phase 2; then
  sweep 0 --algos=bc,matd3bc,macql,omar --envs=$SPREAD --qualities=medium,expert &
  sweep 1 --algos=bc,matd3bc,macql,omar --envs=$HC --qualities=medium,expert &
  wait
fi
if phase 3; then
  for results in $(find "$ROOT" -name results.json | sort); do
    wd=$(dirname "$results")
    case "$wd" in *frac*|*-no_*|*-mlp_noise*) continue ;; esac
    if [[ "$wd" == *"/$SPREAD/"* ]]; then shifts="speed"; else shifts="R E"; fi
    for s in $shifts; do
      ls "$wd"/evaluations/shift-"$s"-*-e100-*.json >/dev/null 2>&1 && continue
      taskset -c 0 "$PY" -m experiments.evaluate --workdir="$wd" --shift="$s" --episodes=100
    done
  done
fi
if phase 4; then
  sweep 0 --algos=dom2,matd3bc --envs=$HC --qualities=medium --fractions=0.05 &
  sweep 1 --algos=dom2 --envs=$HC --qualities=medium --ablations=no_q,no_bc,mlp_noise,no_aug &
  wait
fi
