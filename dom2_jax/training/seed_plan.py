"""How many seeds to vmap together: memory from the compiled program, speed from measurement.

``experiments.train --num_seeds=K`` trains K seeds. Vmapping them all in one program is what
pays on a GPU (hundreds of seed-updates per second) but loses on a small CPU (measured on the
2-core box: 1.00 seed-updates/s at 1 seed, 0.70 at 4, paper sizes), and a large K does not
fit in a device's memory. The launcher therefore runs the K seeds as groups of G (a host loop
over groups, each a vmapped chunk; the last group is padded with copies of its last seed, so
one program serves all groups), with G chosen here:

  * memory (``memory_plan``): XLA's compiled memory analysis of one seed's chunk (arguments,
    outputs, temporaries) and the device's free memory bound G; when not even one seed fits,
    or the K seeds' training states alone exceed the host's memory, the run is refused
    before anything is allocated, naming the flag;
  * speed (``choose_group``): seed-updates/s measured for G = 1, 2, 4, ... (a short scan of
    updates per candidate, compiled once each); the doubling stops when the rate gains less
    than 5%, so a CPU host keeps G = 1 unless vmapping measurably pays there.

Numbers depend on G only through float32 rounding (XLA's batched kernels differ with the
batch width: 3e-5 after one smoke chunk), so the chosen G is recorded in the workdir
(``seed_plan.json``) and reused on resume; ``--seed_group=G`` fixes it.
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Callable, Optional, Sequence

import jax
import numpy as np

GiB = 1024 ** 3


def tree_bytes(tree) -> int:
    """Bytes of every array (or ShapeDtypeStruct) leaf of ``tree``."""
    return int(sum(np.prod(x.shape, dtype=np.int64) * np.dtype(x.dtype).itemsize
                   for x in jax.tree.leaves(tree)))


def available_host_bytes() -> int:
    """MemAvailable from /proc/meminfo (bytes), else physical memory."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def device_free_bytes(device=None) -> int:
    """Free memory of ``device`` (default: the first local device): the allocator's limit
    minus its use on a GPU/TPU; the host's available memory on a CPU."""
    device = device or jax.local_devices()[0]
    stats = device.memory_stats() if device.platform != "cpu" else None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    return available_host_bytes()


def compiled_bytes(compiled) -> Optional[int]:
    """Peak-memory estimate of a compiled program: arguments + outputs + temporaries - aliased
    (None when the backend gives no memory analysis)."""
    try:
        m = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - not every backend implements it
        return None
    if m is None:
        return None
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
               - m.alias_size_in_bytes)


@dataclasses.dataclass
class SeedPlan:
    group: int                 # seeds vmapped together
    num_groups: int
    bytes_per_seed: Optional[int] = None   # compiled program of one seed (incl. its state)
    capacity_bytes: Optional[int] = None   # free device memory seen
    max_group: Optional[int] = None        # largest group that fits
    rates: dict = dataclasses.field(default_factory=dict)  # {group: seed-updates/s}
    reason: str = ""

    def to_json(self):
        return dataclasses.asdict(self)


def check_states_fit(per_seed_state_bytes: int, num_seeds: int, host_bytes: int = None,
                     fraction: float = 0.6):
    """Refuses (ValueError naming --num_seeds) when the K seeds' training states alone would
    take more than ``fraction`` of the host's available memory (they are all kept between
    groups and checkpointed)."""
    host_bytes = available_host_bytes() if host_bytes is None else host_bytes
    need = per_seed_state_bytes * num_seeds
    if need > fraction * host_bytes:
        fit = max(int(fraction * host_bytes // max(per_seed_state_bytes, 1)), 0)
        raise ValueError(
            f"--num_seeds={num_seeds} needs {need / GiB:.1f} GiB for the training states alone "
            f"({per_seed_state_bytes / 2**20:.2f} MiB per seed), more than {fraction:.0%} of "
            f"the host's {host_bytes / GiB:.1f} GiB available: use at most {fit} seeds per run")


def memory_plan(one_seed_bytes: Optional[int], num_seeds: int, capacity_bytes: int,
                fraction: float = 0.8, flag_hint: str = "--config.agent.batch_size"):
    """Largest group (<= num_seeds) whose compiled chunk fits ``fraction`` of the free memory,
    assuming memory grows linearly with the group (the per-seed program scaled). Raises a
    ValueError naming the flags when one seed does not fit."""
    if not one_seed_bytes:
        return num_seeds
    room = int(fraction * capacity_bytes)
    if one_seed_bytes > room:
        raise ValueError(
            f"one seed's training program needs {one_seed_bytes / GiB:.2f} GiB (XLA's memory "
            f"analysis), more than {fraction:.0%} of the {capacity_bytes / GiB:.2f} GiB free "
            f"on {jax.local_devices()[0].platform}: reduce {flag_hint}, the network sizes or "
            "--config.eval_episodes")
    return max(1, min(num_seeds, room // one_seed_bytes))


def choose_group(num_seeds: int, max_group: int, rate_of: Callable[[int], float],
                 min_gain: float = 1.05, log: Callable[[str], None] = None):
    """Group size by measured seed-updates/s: G = 1, 2, 4, ... (capped by ``max_group`` and
    ``num_seeds``) while each step gains >= ``min_gain`` over the best so far. ``rate_of(G)``
    returns seed-updates/s. Returns (G, {G: rate})."""
    def measure(g):
        rates[g] = float(rate_of(g))
        if log:
            log(f"seed plan: {g} seed(s) vmapped: {rates[g]:.2f} seed-updates/s")

    rates = {}
    best = 1
    measure(1)
    while True:
        nxt = min(2 * best, max_group, num_seeds)
        if nxt <= best:
            break
        measure(nxt)
        if rates[nxt] < min_gain * rates[best]:
            break
        best = nxt
    return best, rates


def group_indices(num_seeds: int, group: int) -> Sequence[np.ndarray]:
    """Seed indices of each group; the last is padded with its last index to width ``group``."""
    out = []
    for start in range(0, num_seeds, group):
        idx = np.arange(start, min(start + group, num_seeds))
        out.append(np.concatenate([idx, np.full(group - len(idx), idx[-1])]))
    return out


def timed_rate(fn, args, num_updates: int, group: int, repeats: int = 2) -> float:
    """seed-updates/s of a compiled ``fn(*args)`` doing ``num_updates`` updates for ``group``
    seeds (best of ``repeats`` timed calls after the first)."""
    jax.block_until_ready(fn(*args))
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t)
    return group * num_updates / best
