"""Several processes (hosts) training one run's seeds, with ``jax.distributed``.

A run's ``--num_seeds`` seeds are split into one contiguous block per process
(``seed_block``); each process trains, evaluates and checkpoints its own block on its local
devices exactly as a one-process run would (seed i is always ``fold_in(PRNGKey(seed), i)``,
so the numbers do not depend on the layout). Nothing crosses processes inside an update:
after each chunk the per-seed metrics and evaluations are gathered (``gather_seeds``,
``jax.experimental.multihost_utils.process_allgather``) so that process 0 can write
metrics.csv and results.json with every seed.

``initialize`` starts ``jax.distributed`` when asked (``--coordinator_address``,
``--num_processes``, ``--process_id``) or when a cluster launcher's environment says there
are several tasks (SLURM's ``srun``, Open MPI's ``mpirun``: ``jax.distributed.initialize()``
reads them itself). On CPU the processes talk through gloo.
"""
from __future__ import annotations

import os
from typing import Any, Optional, Tuple

import jax
import numpy as np

# Environment variables of launchers that jax.distributed.initialize() understands, with the
# variable holding the number of tasks.
CLUSTER_TASK_COUNTS = (("SLURM_JOB_ID", "SLURM_NTASKS"), ("OMPI_MCA_orte_hnp_uri", None),
                       ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_SIZE"))


def cluster_detected(environ=None) -> bool:
    """Whether a launcher started several tasks of this program (SLURM, Open MPI)."""
    environ = os.environ if environ is None else environ
    for marker, count in CLUSTER_TASK_COUNTS:
        if marker in environ and (count is None or int(environ.get(count, "1") or 1) > 1):
            return True
    return False


def initialize(coordinator_address: Optional[str] = None, num_processes: Optional[int] = None,
               process_id: Optional[int] = None, environ=None) -> Tuple[int, int]:
    """Starts ``jax.distributed`` if asked or if a cluster launcher is detected; must run
    before any JAX computation. Returns (process_index, process_count)."""
    given = [coordinator_address is not None, num_processes is not None, process_id is not None]
    if any(given) and not all(given):
        raise ValueError("--coordinator_address, --num_processes and --process_id go together "
                         "(or none of them, under SLURM / Open MPI)")
    if all(given):
        if num_processes < 1 or not 0 <= process_id < num_processes:
            raise ValueError(f"--process_id={process_id} must be in [0, --num_processes="
                             f"{num_processes})")
        if num_processes > 1:
            jax.distributed.initialize(coordinator_address=coordinator_address,
                                       num_processes=num_processes, process_id=process_id)
    elif cluster_detected(environ):
        jax.distributed.initialize()
    return jax.process_index(), jax.process_count()


def seed_block(num_seeds: int, process_index: int, process_count: int) -> np.ndarray:
    """Seed indices of one process: contiguous blocks of ceil(K / P) (the last may be
    shorter). Every process needs at least one seed."""
    per = -(-num_seeds // process_count)
    if per * (process_count - 1) >= num_seeds:
        raise ValueError(f"--num_seeds={num_seeds} leaves a process without seeds: "
                         f"{process_count} processes take blocks of {per}; use at least "
                         f"{per * (process_count - 1) + 1} seeds, or fewer processes")
    return np.arange(process_index * per, min((process_index + 1) * per, num_seeds))


def gather_seeds(tree: Any, num_seeds: int, process_count: int) -> Any:
    """Every process's per-seed host arrays (leading axis: its seed block) -> the arrays of
    all ``num_seeds`` seeds in seed order, on every process. One process: unchanged."""
    if process_count == 1:
        return tree
    from jax.experimental import multihost_utils  # (a) only multi-process runs need it
    per = -(-num_seeds // process_count)

    def pad(x):
        x = np.asarray(x)
        return np.concatenate([x, np.zeros((per - x.shape[0],) + x.shape[1:], x.dtype)])
    gathered = multihost_utils.process_allgather(jax.tree.map(pad, tree))
    return jax.tree.map(lambda x: np.asarray(x).reshape((-1,) + x.shape[2:])[:num_seeds],
                        gathered)


def agree_on_min(value: int, process_count: int) -> int:
    """The smallest ``value`` over processes (e.g. the chunk every process can resume from)."""
    if process_count == 1:
        return int(value)
    from jax.experimental import multihost_utils  # (a) as gather_seeds
    return int(np.min(multihost_utils.process_allgather(np.asarray([value], np.int64))))


def barrier(name: str, process_count: int) -> None:
    if process_count > 1:
        from jax.experimental import multihost_utils  # (a) as gather_seeds
        multihost_utils.sync_global_devices(name)
