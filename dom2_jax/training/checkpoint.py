"""Orbax checkpoints of the training carry: atomic, keep the last few, resume from the newest
readable one.

Orbax writes each step into a temporary directory and renames it when complete, so a process
killed mid-save leaves no half checkpoint in the list of steps; ``latest_step`` only sees
finalised ones (leftover temporaries are cleaned on the next start). A finalised step that
cannot be read (damaged on disk: truncated, bit-flipped, emptied) is moved aside to
``checkpoints/damaged/<step>`` with a warning naming it and the error, and the next older
step is restored instead, so one bad file never locks a run.

Checkpoints written before the learners held one ``flax`` TrainState per network (the state
then had sibling fields ``actor`` / ``actor_opt``, ...) are restored into the new layout
(``legacy_layout``): parameters and optimiser states are the same arrays, moved.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import serialization
from flax.training.train_state import TrainState


class CheckpointError(RuntimeError):
    """No checkpoint of the directory could be restored; the message names each step's error."""


class Checkpointer:
    def __init__(self, directory: str, max_to_keep: int = 3):
        self.directory = os.path.abspath(directory)
        os.makedirs(self.directory, exist_ok=True)
        self._mgr = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                                 enable_async_checkpointing=False,
                                                 cleanup_tmp_directories=True))
        self.restored_step = None

    def latest_step(self):
        return self._mgr.latest_step()

    def all_steps(self):
        return sorted(self._mgr.all_steps())

    def save(self, step: int, carry) -> None:
        self._mgr.save(int(step), args=ocp.args.StandardSave(carry))
        self._mgr.wait_until_finished()

    def restore(self, template, step=None, set_aside=False):
        """The carry of ``step`` (default: the newest readable step), shaped like ``template``.

        With ``step=None``, a step that fails to restore is skipped with a warning and the
        next older one is tried; ``set_aside=True`` (the training launcher, which will write
        that step again) also moves it to ``checkpoints/damaged/``. An explicit ``step`` is
        restored or raises. ``restored_step`` tells which step was used."""
        steps = [step] if step is not None else sorted(self.all_steps(), reverse=True)
        if not steps or steps[0] is None:
            raise FileNotFoundError(f"no complete checkpoint in {self.directory}")
        errors = []
        for s in steps:
            try:
                carry = self._restore_step(template, s)
            except Exception as e:  # noqa: BLE001 - any read/format error: the step is unusable
                if step is not None:
                    raise
                errors.append(f"step {s}: {type(e).__name__}: {_first_line(e)}")
                self._skip(s, e, set_aside)
                continue
            self.restored_step = s
            return carry
        raise CheckpointError(f"no checkpoint in {self.directory} could be restored ("
                              + "; ".join(errors) + ")")

    def _set_aside(self, step) -> str:
        """Moves step ``step`` to ``damaged/``; returns where it went."""
        src = os.path.join(self.directory, str(step))
        dst = os.path.join(self.directory, "damaged", str(step))
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if os.path.exists(dst):
            shutil.rmtree(dst)
        if os.path.exists(src):
            os.replace(src, dst)
        self._mgr.reload()
        return dst

    def _restore_step(self, template, step):
        abstract = jax.tree.map(_on_local_device, template)
        try:
            return self._mgr.restore(step, args=ocp.args.StandardRestore(abstract))
        except Exception:
            legacy = legacy_layout(abstract)
            if legacy is None:
                raise
            try:
                raw = self._mgr.restore(step, args=ocp.args.StandardRestore(legacy))
            except Exception:
                pass
            else:
                return from_legacy_layout(template, raw)
            raise

    def _skip(self, step, error, set_aside):
        where = f"; moved to {self._set_aside(step)}" if set_aside else ""
        warnings.warn(f"checkpoint step {step} in {self.directory} could not be restored "
                      f"({type(error).__name__}: {_first_line(error)}){where}; trying the next "
                      "older one", RuntimeWarning, stacklevel=3)

    def close(self):
        self._mgr.close()


class ProcessCheckpointer(Checkpointer):
    """The ``Checkpointer`` interface for one process of a multi-process run, whose carry holds
    only this process's seeds (host-local arrays). orbax's multi-process checkpointing writes
    *global* arrays and refuses host-local ones in a multi-host runtime ("Cannot serialize host
    local jax.Array ... in multi-host setting"), so each process writes its own steps as
    ``DIR/<step>.msgpack`` (flax.serialization; written to a temporary name, synced, renamed)
    and keeps the newest ``max_to_keep``. A step that cannot be read falls back to the next
    older one, as with ``Checkpointer``."""

    def __init__(self, directory: str, max_to_keep: int = 3):  # noqa: D107 - no orbax manager
        self.directory = os.path.abspath(directory)
        os.makedirs(self.directory, exist_ok=True)
        self.max_to_keep = int(max_to_keep)
        self.restored_step = None

    def _path(self, step) -> str:
        return os.path.join(self.directory, f"{int(step)}.msgpack")

    def all_steps(self):
        names = os.listdir(self.directory)
        return sorted(int(n[:-8]) for n in names if n.endswith(".msgpack") and n[:-8].isdigit())

    def latest_step(self):
        steps = self.all_steps()
        return steps[-1] if steps else None

    def save(self, step: int, carry) -> None:
        payload = serialization.to_bytes(jax.device_get(carry))
        path = self._path(step)
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        for old in self.all_steps()[:-self.max_to_keep]:
            os.remove(self._path(old))

    def _set_aside(self, step) -> str:
        dst = os.path.join(self.directory, "damaged", os.path.basename(self._path(step)))
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        os.replace(self._path(step), dst)
        return dst

    def _restore_step(self, template, step):
        with open(self._path(step), "rb") as fh:
            raw = serialization.from_bytes(template, fh.read())
        want = jax.tree.map(lambda x: (tuple(x.shape), np.dtype(x.dtype)), template)
        got = jax.tree.map(lambda x: (tuple(np.shape(x)), np.asarray(x).dtype), raw)
        if want != got:
            raise ValueError("stored shapes or dtypes differ from the run's")
        return jax.device_put(raw, jax.local_devices()[0])

    def close(self):
        pass


def _first_line(e, limit=200):
    text = str(e).strip().splitlines()
    return (text[0] if text else "")[:limit]


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


# ----------------------------------------------------------------------------- legacy layout
def _train_state_fields(state):
    return [f.name for f in dataclasses.fields(state)
            if isinstance(getattr(state, f.name), TrainState)]


def legacy_layout(carry):
    """The pre-TrainState layout of a TrainCarry (a dict tree: ``state.<net>`` = parameters,
    ``state.<net>_opt`` = optimiser state, other fields as they are), or None when the carry's
    state holds no TrainState."""
    state = getattr(carry, "state", None)
    if state is None or not dataclasses.is_dataclass(state) or not _train_state_fields(state):
        return None
    nets = _train_state_fields(state)
    old = {}
    for f in dataclasses.fields(state):
        if not f.metadata.get("pytree_node", True):
            continue
        v = getattr(state, f.name)
        if f.name in nets:
            old[f.name], old[f.name + "_opt"] = v.params, v.opt_state
        else:
            old[f.name] = v
    return {"state": old, "key": carry.key, "chunk": carry.chunk}


def from_legacy_layout(template, raw):
    """``template`` (a TrainCarry in the TrainState layout) filled with a ``legacy_layout``
    tree's arrays; each TrainState's own step counter is set to the state's step."""
    state, old = template.state, raw["state"]
    new = {}
    for f in dataclasses.fields(state):
        if not f.metadata.get("pytree_node", True):
            continue
        v = getattr(state, f.name)
        if isinstance(v, TrainState):  # old step [seeds] -> [seeds, agents]
            old_step = jnp.asarray(old["step"])
            step = jnp.broadcast_to(
                old_step.reshape(old_step.shape + (1,) * (len(v.step.shape) - old_step.ndim)),
                v.step.shape).astype(v.step.dtype)
            new[f.name] = v.replace(step=step, params=old[f.name], opt_state=old[f.name + "_opt"])
        else:
            new[f.name] = old[f.name]
    return template.replace(state=state.replace(**new), key=raw["key"], chunk=raw["chunk"])
