"""Orbax checkpoints of the training carry: atomic, keep the last few, resume from the newest.

Orbax writes each step into a temporary directory and renames it when complete, so a process
killed mid-save leaves no half checkpoint in the list of steps; ``latest_step`` only sees
finalised ones (leftover temporaries are cleaned on the next start).
"""
from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp


class Checkpointer:
    def __init__(self, directory: str, max_to_keep: int = 3):
        self.directory = os.path.abspath(directory)
        os.makedirs(self.directory, exist_ok=True)
        self._mgr = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                                 enable_async_checkpointing=False,
                                                 cleanup_tmp_directories=True))

    def latest_step(self):
        return self._mgr.latest_step()

    def all_steps(self):
        return sorted(self._mgr.all_steps())

    def save(self, step: int, carry) -> None:
        self._mgr.save(int(step), args=ocp.args.StandardSave(carry))
        self._mgr.wait_until_finished()

    def restore(self, template, step=None):
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no complete checkpoint in {self.directory}")
        abstract = jax.tree.map(_on_local_device, template)
        return self._mgr.restore(step, args=ocp.args.StandardRestore(abstract))

    def close(self):
        self._mgr.close()


def _on_local_device(leaf):
    """Abstract leaf to restore into; placed on this process's default device when the template
    does not say where (e.g. ``jax.eval_shape`` output). Without a placement orbax reuses the
    one recorded at save time, so a checkpoint written on a CPU host fails to restore on a GPU
    host ("Topology mismatch"), and vice versa."""
    leaf = ocp.utils.to_shape_dtype_struct(leaf)
    if isinstance(leaf, jax.ShapeDtypeStruct) and leaf.sharding is None:
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        leaf = jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device)
    return leaf
