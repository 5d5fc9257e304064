"""Host-side checks on metrics coming out of a compiled training chunk."""
from __future__ import annotations

import numpy as np


class NonFiniteLossError(FloatingPointError):
    """A loss or metric became NaN/inf; the message names the term, the step and the agent."""


def check_finite(metrics, first_step: int = 0, where: str = "training"):
    """Raises NonFiniteLossError naming the first non-finite metric.

    ``metrics``: dict of arrays whose leading axis is the update index within the chunk
    ([K, ...], as stacked by ``lax.scan``; extra axes are seeds/agents). ``first_step`` is the
    global step of index 0. Terms are checked in order of the earliest bad step.
    """
    worst = None
    for name, value in metrics.items():
        v = np.asarray(value)
        if v.ndim == 0:
            v = v[None]
        bad = ~np.isfinite(v.reshape(v.shape[0], -1))
        if bad.any():
            k = int(np.argmax(bad.any(axis=1)))
            if worst is None or k < worst[1]:
                worst = (name, k, np.argwhere(bad[k]).ravel().tolist())
    if worst is not None:
        name, k, where_idx = worst
        raise NonFiniteLossError(
            f"{where}: non-finite value in '{name}' at step {first_step + k} "
            f"(flattened seed/agent index {where_idx}); stopping before any checkpoint is "
            "written. Lower the learning rates, check the dataset for extreme values, or "
            "enable gradient clipping.")
