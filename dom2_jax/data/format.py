"""On-disk dataset format, in-memory ``Dataset``, validation, atomic ``save`` and checked ``load``.

A dataset is a directory ``DIR`` holding one uncompressed ``.npy`` file per array (written with
``np.save(..., allow_pickle=False)``) and ``meta.json``. For N transitions, E episodes, A agents:

=================== ======================== =======================================================
file                shape / dtype            meaning
=================== ======================== =======================================================
obs.npy             [N, A, obs_dim] float32  observation of each agent before the action
actions.npy         [N, A, act_dim] float32  joint action (each agent's action in [-1, 1])
rewards.npy         [N, A] float32           reward of each agent
next_obs.npy        [N, A, obs_dim] float32  observation after the action
dones.npy           [N, A] bool              TRUE terminations only (stop bootstrapping); a
                                             time-limit truncation is not a done
episode_starts.npy  [E] int64                index of each trajectory's first transition
episode_lengths.npy [E] int64                transitions in each trajectory (>= 1)
episode_returns.npy [E] float32              the episode SCORE as the paper defines it per env
=================== ======================== =======================================================

Trajectories are contiguous and in order: ``episode_starts[0] == 0``,
``episode_starts[i + 1] == episode_starts[i] + episode_lengths[i]``, ``sum(lengths) == N``.
A done may only be set on the last transition of its trajectory.

``meta.json`` holds: ``format_version`` (1), ``env``, ``env_kwargs``, ``quality``,
``num_transitions``, ``num_episodes``, ``num_agents``, ``obs_dim``, ``act_dim``, ``generator``
(free-form dict), ``reference_returns`` (dict, optional keys ``random`` / ``expert``), ``sha256``
(array name -> hex digest of the ``.npy`` file bytes) and ``created`` (ISO-8601 time). Other keys
(e.g. ``augmentations``, ``subsample``, ``sources``) are kept as provenance.

No pickle anywhere: arrays go through ``np.save/np.load(allow_pickle=False)``, metadata is JSON.
"""
from __future__ import annotations

import copy
import dataclasses
import datetime
import hashlib
import json
import math
import os
import secrets
import shutil
from typing import Any, Iterable, Mapping, Optional

import numpy as np

FORMAT_VERSION = 1
META_FILE = "meta.json"

#: Per-transition arrays, in the order the learner sees them.
TRANSITION_KEYS = ("obs", "actions", "rewards", "next_obs", "dones")
#: Per-episode bookkeeping arrays.
EPISODE_KEYS = ("episode_starts", "episode_lengths", "episode_returns")
ARRAY_NAMES = TRANSITION_KEYS + EPISODE_KEYS

DTYPES = {
    "obs": np.dtype(np.float32),
    "actions": np.dtype(np.float32),
    "rewards": np.dtype(np.float32),
    "next_obs": np.dtype(np.float32),
    "dones": np.dtype(np.bool_),
    "episode_starts": np.dtype(np.int64),
    "episode_lengths": np.dtype(np.int64),
    "episode_returns": np.dtype(np.float32),
}
NDIMS = {
    "obs": 3, "actions": 3, "rewards": 2, "next_obs": 3, "dones": 2,
    "episode_starts": 1, "episode_lengths": 1, "episode_returns": 1,
}
_FLOAT_KEYS = ("obs", "actions", "rewards", "next_obs", "episode_returns")

REQUIRED_META = (
    "format_version", "env", "env_kwargs", "quality", "num_transitions", "num_episodes",
    "num_agents", "obs_dim", "act_dim", "generator", "reference_returns", "sha256", "created",
)
_COUNT_META = ("num_transitions", "num_episodes", "num_agents", "obs_dim", "act_dim")

_HASH_CHUNK = 1 << 22   # 4 MiB
_FINITE_CHUNK = 1 << 16  # rows per chunk of the NaN/inf scan (bounds temporaries with mmap)


class DatasetError(ValueError):
    """A dataset is missing, corrupt, inconsistent or does not fit the run (one problem each)."""


def _now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


# ----------------------------------------------------------------------------------------------
# In-memory dataset
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """An offline multi-agent dataset: numpy arrays (see the module docstring) plus ``meta``.

    Frozen: derive new datasets with ``augment``, ``subsample``, ``concatenate`` or ``replace``;
    treat the arrays and ``meta`` as read-only (arrays loaded with ``mmap=True`` really are).

    Attributes:
      obs: [N, A, obs_dim] float32.        actions: [N, A, act_dim] float32.
      rewards: [N, A] float32.             next_obs: [N, A, obs_dim] float32.
      dones: [N, A] bool (true terminations only).
      episode_starts: [E] int64.  episode_lengths: [E] int64.  episode_returns: [E] float32.
      meta: dict (``meta.json``; ``sha256`` only on datasets read from or written to disk).
    """

    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_obs: np.ndarray
    dones: np.ndarray
    episode_starts: np.ndarray
    episode_lengths: np.ndarray
    episode_returns: np.ndarray
    meta: dict = dataclasses.field(default_factory=dict)

    # -- sizes ---------------------------------------------------------------------------------
    @property
    def num_transitions(self) -> int:
        return int(self.obs.shape[0])

    @property
    def num_episodes(self) -> int:
        return int(self.episode_lengths.shape[0])

    @property
    def num_agents(self) -> int:
        return int(self.obs.shape[1])

    @property
    def obs_dim(self) -> int:
        return int(self.obs.shape[2])

    @property
    def act_dim(self) -> int:
        return int(self.actions.shape[2])

    def __len__(self) -> int:
        return self.num_transitions

    # -- meta shortcuts ------------------------------------------------------------------------
    @property
    def env(self) -> Optional[str]:
        return self.meta.get("env")

    @property
    def env_kwargs(self) -> dict:
        return dict(self.meta.get("env_kwargs") or {})

    @property
    def quality(self) -> Optional[str]:
        return self.meta.get("quality")

    @property
    def reference_returns(self) -> dict:
        return dict(self.meta.get("reference_returns") or {})

    # -- views ---------------------------------------------------------------------------------
    def arrays(self) -> dict:
        """All eight arrays by name (no copies)."""
        return {k: getattr(self, k) for k in ARRAY_NAMES}

    def transitions(self) -> dict:
        """The five per-transition arrays {obs, actions, rewards, next_obs, dones} ([N, A, ...])."""
        return {k: getattr(self, k) for k in TRANSITION_KEYS}

    def episode(self, i: int) -> dict:
        """Trajectory ``i``: dict of per-transition array views ([T_i, A, ...]) and ``score``."""
        if not -self.num_episodes <= i < self.num_episodes:
            raise IndexError(f"episode {i} out of range for {self.num_episodes} episodes")
        s = int(self.episode_starts[i])
        sl = slice(s, s + int(self.episode_lengths[i]))
        out = {k: getattr(self, k)[sl] for k in TRANSITION_KEYS}
        out["score"] = float(self.episode_returns[i])
        return out

    def replace(self, **changes) -> "Dataset":
        """``dataclasses.replace`` followed by validation (counts in meta refreshed)."""
        new = dataclasses.replace(self, **changes)
        if any(k in changes for k in ARRAY_NAMES):
            meta = _refresh_meta(new.meta, new.arrays())
            meta.pop("sha256", None)
            new = dataclasses.replace(new, meta=meta)
        return new.validate()

    def validate(self) -> "Dataset":
        """Checks dtypes, shapes, finiteness and episode bookkeeping; raises ``DatasetError``."""
        _check_arrays(self.arrays(), where="dataset")
        _check_meta_counts(self.meta, self.arrays(), where="dataset meta")
        return self

    def summary(self) -> str:
        """One line: env, quality, sizes and return statistics."""
        r = self.episode_returns
        stats = (f"return mean {float(r.mean()):.2f} min {float(r.min()):.2f} "
                 f"max {float(r.max()):.2f}") if r.size else "no episodes"
        return (f"{self.env}/{self.quality}: {self.num_transitions} transitions, "
                f"{self.num_episodes} episodes, {self.num_agents} agents, obs {self.obs_dim}, "
                f"act {self.act_dim}; {stats}")

    def __repr__(self) -> str:
        return f"Dataset({self.summary()})"

    # -- constructors --------------------------------------------------------------------------
    @classmethod
    def from_episodes(cls, episodes: Iterable[Mapping[str, Any]], *, env: str, quality: str,
                      env_kwargs: Optional[dict] = None, generator: Optional[dict] = None,
                      reference_returns: Optional[dict] = None,
                      meta: Optional[dict] = None) -> "Dataset":
        """Builds a dataset from a sequence of trajectories.

        Each episode is a mapping with ``obs`` [T, A, obs_dim], ``actions`` [T, A, act_dim],
        ``rewards`` [T, A], ``next_obs`` [T, A, obs_dim], ``dones`` [T, A] (true terminations
        only) and ``score`` (the episode's score as the paper defines it for the env). If
        ``score`` is absent it defaults to the per-agent summed reward averaged over agents
        (the paper's score for spread and HalfCheetah; NOT for tag, where it is predator 0's).
        """
        parts = {k: [] for k in TRANSITION_KEYS}
        lengths, scores = [], []
        for i, ep in enumerate(episodes):
            missing = [k for k in TRANSITION_KEYS if k not in ep]
            if missing:
                raise DatasetError(f"episode {i} lacks {missing}")
            n = int(np.shape(ep["obs"])[0])
            for k in TRANSITION_KEYS:
                parts[k].append(np.asarray(ep[k]))
            lengths.append(n)
            if "score" in ep and ep["score"] is not None:
                scores.append(float(ep["score"]))
            else:
                scores.append(float(np.asarray(ep["rewards"], np.float64).sum(0).mean()))
        if not lengths:
            raise DatasetError("from_episodes got no episodes")
        cat = {k: np.concatenate(v, axis=0) for k, v in parts.items()}
        return build_dataset(**cat, episode_lengths=np.asarray(lengths, np.int64),
                             episode_returns=np.asarray(scores, np.float32), env=env,
                             quality=quality, env_kwargs=env_kwargs, generator=generator,
                             reference_returns=reference_returns, meta=meta)


def build_dataset(obs, actions, rewards, next_obs, dones, episode_lengths, episode_returns, *,
                  env: str, quality: str, env_kwargs: Optional[dict] = None,
                  generator: Optional[dict] = None, reference_returns: Optional[dict] = None,
                  meta: Optional[dict] = None) -> Dataset:
    """Builds and validates a ``Dataset`` from flat arrays (the constructor generators use).

    Args:
      obs, next_obs: [N, A, obs_dim]; actions: [N, A, act_dim]; rewards: [N, A];
      dones: [N, A] (true terminations only; cast to bool);
      episode_lengths: [E] ints >= 1 summing to N (trajectories stored contiguously, in order);
      episode_returns: [E] episode scores as the paper defines them for ``env``.
      env: environment name (as for ``dom2_jax.envs.make``); quality: e.g. "expert".
      env_kwargs: overrides the env was made with; generator: free-form provenance
      (command, config, git commit); reference_returns: {"random": float, "expert": float}
      (either optional) for normalised scores; meta: extra meta keys (kept verbatim).
    Returns: a validated ``Dataset`` with ``episode_starts`` computed and a complete ``meta``.
    Raises: ``DatasetError`` naming the first problem found.
    """
    arrays = {
        "obs": np.asarray(obs, np.float32),
        "actions": np.asarray(actions, np.float32),
        "rewards": np.asarray(rewards, np.float32),
        "next_obs": np.asarray(next_obs, np.float32),
        "dones": np.asarray(dones).astype(np.bool_, copy=False),
        "episode_lengths": np.asarray(episode_lengths, np.int64),
        "episode_returns": np.asarray(episode_returns, np.float32),
    }
    lengths = arrays["episode_lengths"]
    if lengths.ndim != 1:
        raise DatasetError(f"episode_lengths must be 1-D, got shape {lengths.shape}")
    arrays["episode_starts"] = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    m = dict(copy.deepcopy(meta) if meta else {})
    m.update(format_version=FORMAT_VERSION, env=str(env), quality=str(quality),
             env_kwargs=dict(env_kwargs or {}), generator=dict(generator or {}),
             reference_returns=_clean_references(reference_returns or {}, where="build_dataset"))
    m.setdefault("created", _now_iso())
    m.pop("sha256", None)
    m = _refresh_meta(m, arrays)
    ds = Dataset(**{k: arrays[k] for k in ARRAY_NAMES}, meta=m)
    return ds.validate()


def _refresh_meta(meta: Mapping, arrays: Mapping[str, np.ndarray]) -> dict:
    """Copy of ``meta`` with the size fields recomputed from the arrays."""
    m = copy.deepcopy(dict(meta))
    obs, act = arrays["obs"], arrays["actions"]
    m["num_transitions"] = int(obs.shape[0]) if obs.ndim >= 1 else 0
    m["num_episodes"] = int(arrays["episode_lengths"].shape[0])
    m["num_agents"] = int(obs.shape[1]) if obs.ndim >= 2 else 0
    m["obs_dim"] = int(obs.shape[2]) if obs.ndim >= 3 else 0
    m["act_dim"] = int(act.shape[2]) if act.ndim >= 3 else 0
    m.setdefault("format_version", FORMAT_VERSION)
    return m


def _clean_references(refs: Mapping, where: str) -> dict:
    if not isinstance(refs, Mapping):
        raise DatasetError(f"{where}: reference_returns must be a dict, got {type(refs).__name__}")
    out = {}
    for k, v in refs.items():
        if k in ("random", "expert"):
            if v is None:
                continue
            try:
                fv = float(v)
            except (TypeError, ValueError):
                raise DatasetError(f"{where}: reference_returns[{k!r}] = {v!r} is not a number")
            if not math.isfinite(fv):
                raise DatasetError(f"{where}: reference_returns[{k!r}] = {v!r} is not finite")
            out[k] = fv
        else:
            out[k] = v
    return out


# ----------------------------------------------------------------------------------------------
# Validation (shared by build/save/load)
# ----------------------------------------------------------------------------------------------


def _fname(name: str, where: str) -> str:
    return f"{where}/{name}.npy" if where != "dataset" else name


def _check_arrays(arrays: Mapping[str, np.ndarray], where: str) -> None:
    """Dtypes, ranks, cross-array shapes, NaN/inf, episode bookkeeping. Raises DatasetError."""
    for name in ARRAY_NAMES:
        a = arrays[name]
        f = _fname(name, where)
        if a.dtype != DTYPES[name]:
            raise DatasetError(f"{f}: dtype {a.dtype}, expected {DTYPES[name]}")
        if a.ndim != NDIMS[name]:
            raise DatasetError(f"{f}: shape {a.shape} has {a.ndim} dims, expected "
                               f"{NDIMS[name]} ({_expected_layout(name)})")
    obs = arrays["obs"]
    n, na, od = obs.shape
    ad = arrays["actions"].shape[2]
    expected = {
        "actions": (n, na, ad), "rewards": (n, na), "next_obs": (n, na, od), "dones": (n, na),
    }
    for name, shape in expected.items():
        if arrays[name].shape != shape:
            raise DatasetError(
                f"{_fname(name, where)}: shape {arrays[name].shape} is inconsistent with "
                f"obs {obs.shape}; expected {shape} ({_expected_layout(name)})")
    if na < 1 or od < 1 or ad < 1:
        raise DatasetError(f"{where}: empty agent/feature axis (obs {obs.shape}, "
                           f"actions {arrays['actions'].shape})")
    for name in _FLOAT_KEYS:
        _check_finite(arrays[name], _fname(name, where))
    _check_episodes(arrays, where)


def _expected_layout(name: str) -> str:
    return {
        "obs": "[N, A, obs_dim]", "actions": "[N, A, act_dim]", "rewards": "[N, A]",
        "next_obs": "[N, A, obs_dim]", "dones": "[N, A]", "episode_starts": "[E]",
        "episode_lengths": "[E]", "episode_returns": "[E]",
    }[name]


def _check_finite(a: np.ndarray, f: str) -> None:
    """Chunked NaN/inf scan (bounded temporaries even on a memory map)."""
    bad_total, first = 0, None
    for s in range(0, max(a.shape[0], 1), _FINITE_CHUNK):
        chunk = np.asarray(a[s:s + _FINITE_CHUNK])
        bad = ~np.isfinite(chunk)
        nb = int(bad.sum())
        if nb and first is None:
            first = np.unravel_index(int(np.argmax(bad.reshape(-1))), chunk.shape)
            first = (first[0] + s,) + tuple(int(i) for i in first[1:])
        bad_total += nb
    if bad_total:
        idx = tuple(int(i) for i in first)
        raise DatasetError(f"{f}: {bad_total} non-finite value(s) (NaN/inf); first at index "
                           f"{idx} (value {a[idx]})")


def _check_episodes(arrays: Mapping[str, np.ndarray], where: str) -> None:
    n = arrays["obs"].shape[0]
    starts, lengths = arrays["episode_starts"], arrays["episode_lengths"]
    rets = arrays["episode_returns"]
    e = lengths.shape[0]
    fs, fl, fr = (_fname(k, where) for k in EPISODE_KEYS)
    if starts.shape[0] != e:
        raise DatasetError(f"{fs}: {starts.shape[0]} entries but {fl} has {e}; "
                           f"expected one start per episode")
    if rets.shape[0] != e:
        raise DatasetError(f"{fr}: {rets.shape[0]} entries but {fl} has {e}; "
                           f"expected one return per episode")
    if e == 0:
        if n != 0:
            raise DatasetError(f"{fl}: no episodes but {n} transitions; episodes must tile N")
        return
    if lengths.min() < 1:
        i = int(np.argmax(lengths < 1))
        raise DatasetError(f"{fl}: episode {i} has length {int(lengths[i])}; expected >= 1")
    total = int(lengths.sum())
    if total != n:
        raise DatasetError(f"{fl}: lengths sum to {total} but there are {n} transitions; "
                           f"episodes must tile N exactly")
    expect_starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    if not np.array_equal(starts, expect_starts):
        i = int(np.argmax(starts != expect_starts))
        raise DatasetError(f"{fs}: episode {i} starts at {int(starts[i])}, expected "
                           f"{int(expect_starts[i])} (trajectories must be contiguous and in "
                           f"order: starts[0] = 0, starts[i+1] = starts[i] + lengths[i])")
    # A done (true termination) ends its trajectory: only allowed on the last transition.
    dones_any = np.asarray(arrays["dones"]).any(axis=1)
    if dones_any.any():
        last = np.zeros(n, bool)
        last[starts + lengths - 1] = True
        early = dones_any & ~last
        if early.any():
            t = int(np.argmax(early))
            ep = int(np.searchsorted(starts, t, side="right") - 1)
            raise DatasetError(f"{_fname('dones', where)}: done at transition {t}, before the end "
                               f"of episode {ep} (transitions {int(starts[ep])}.."
                               f"{int(starts[ep] + lengths[ep] - 1)}); a true termination must "
                               f"be its trajectory's last transition")


def _check_meta_counts(meta: Mapping, arrays: Mapping[str, np.ndarray], where: str) -> None:
    actual = _refresh_meta({}, arrays)
    for k in _COUNT_META:
        if k in meta and meta[k] != actual[k]:
            raise DatasetError(f"{where}: {k} = {meta[k]!r} but the arrays have {actual[k]} "
                               f"(obs {arrays['obs'].shape}, actions {arrays['actions'].shape}, "
                               f"{actual['num_episodes']} episodes)")


def check_compatible(dataset: Dataset, expected_env: Optional[str] = None,
                     expected_shapes: Optional[Mapping[str, int]] = None,
                     where: Optional[str] = None) -> None:
    """Raises ``DatasetError`` if ``dataset`` was not made for ``expected_env`` or its
    ``num_agents`` / ``obs_dim`` / ``act_dim`` differ from ``expected_shapes``."""
    where = where or "dataset"
    if expected_env is not None and dataset.env != expected_env:
        raise DatasetError(f"{where} was made for env {dataset.env!r}, but this run uses "
                           f"{expected_env!r}")
    for k, v in (expected_shapes or {}).items():
        if k not in ("num_agents", "obs_dim", "act_dim"):
            raise ValueError(f"expected_shapes: unknown key {k!r} "
                             f"(use num_agents, obs_dim, act_dim)")
        if v is not None and getattr(dataset, k) != int(v):
            raise DatasetError(f"{where}: {k} is {getattr(dataset, k)} but the environment "
                               f"needs {int(v)}")


# ----------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------


class _HashingWriter:
    """File-like wrapper: hashes every byte written (so np.save's bytes are hashed as written)."""

    def __init__(self, f):
        self._f = f
        self.sha = hashlib.sha256()

    def write(self, b) -> int:
        self.sha.update(b)
        return self._f.write(b)

    def flush(self):
        self._f.flush()


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"object of type {type(o).__name__} is not JSON serialisable")


def _write_npy(path: str, a: np.ndarray) -> str:
    with open(path, "wb") as f:
        w = _HashingWriter(f)
        np.save(w, np.ascontiguousarray(a), allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())
    return w.sha.hexdigest()


def save(dataset: Dataset, path, *, overwrite: bool = False) -> str:
    """Writes ``dataset`` to directory ``path`` atomically; returns the path.

    Everything is written into a sibling ``path + ".tmp-<random>"``, fsynced, then renamed onto
    ``path``; a crash leaves at most a stray ``*.tmp-*`` sibling (safe to delete), never a
    half-written dataset at ``path``. If ``path`` exists, raises ``FileExistsError`` unless
    ``overwrite=True``, in which case the old directory is renamed aside
    (``path + ".old-<random>"``), the new one renamed in, and the old one deleted.
    ``meta.json`` gets fresh sizes, ``sha256`` of every ``.npy`` file and ``created`` if unset.
    The dataset is validated first (``DatasetError`` if invalid).
    """
    path = os.path.abspath(os.fspath(path))
    if os.path.lexists(path) and not overwrite:
        raise FileExistsError(f"dataset path {path} already exists (pass overwrite=True to "
                              f"replace it)")
    dataset.validate()
    arrays = dataset.arrays()
    meta = _refresh_meta(dataset.meta, arrays)
    meta["format_version"] = FORMAT_VERSION
    meta.setdefault("created", _now_iso())
    for k, default in (("env_kwargs", {}), ("generator", {}), ("reference_returns", {})):
        if meta.get(k) is None:
            meta[k] = default
    for k in ("env", "quality"):
        if not isinstance(meta.get(k), str):
            raise DatasetError(f"cannot save: meta[{k!r}] must be a string, got {meta.get(k)!r}")
    meta["reference_returns"] = _clean_references(meta["reference_returns"], where="save")

    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = f"{path}.tmp-{secrets.token_hex(6)}"
    os.mkdir(tmp)
    try:
        digests = {}
        for name in ARRAY_NAMES:
            digests[name] = _write_npy(os.path.join(tmp, f"{name}.npy"), arrays[name])
        meta["sha256"] = digests
        try:
            text = json.dumps(meta, indent=2, sort_keys=True, default=_json_default,
                              allow_nan=False)
        except (TypeError, ValueError) as e:
            raise DatasetError(f"cannot save: meta is not JSON-serialisable ({e})") from None
        with open(os.path.join(tmp, META_FILE), "w") as f:
            f.write(text + "\n")
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(tmp)
        _install(tmp, path, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(parent)
    return path


def _install(tmp: str, path: str, overwrite: bool) -> None:
    """Renames the finished ``tmp`` dir onto ``path`` (old one renamed aside, then removed)."""
    if os.path.lexists(path):
        if not overwrite:
            raise FileExistsError(f"dataset path {path} appeared while writing; not replaced")
        old = f"{path}.old-{secrets.token_hex(6)}"
        os.rename(path, old)
        try:
            os.rename(tmp, path)
        except BaseException:
            os.rename(old, path)  # put the old dataset back
            raise
        _fsync_dir(os.path.dirname(path))
        if os.path.isdir(old) and not os.path.islink(old):
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.remove(old)
    else:
        os.rename(tmp, path)


# ----------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------


def _read_npy_header(fpath: str):
    """Returns (shape, dtype, data_offset); raises DatasetError on a bad/truncated header."""
    try:
        with open(fpath, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version in ((2, 0), (3, 0)):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy version {version}")
            offset = f.tell()
    except (ValueError, OSError, EOFError) as e:
        raise DatasetError(f"{fpath}: not a readable .npy file (truncated or corrupt header: "
                           f"{e})") from None
    if dtype.hasobject:
        raise DatasetError(f"{fpath}: holds Python objects (dtype {dtype}); pickled data is "
                           f"never loaded")
    if fortran and len(shape) > 1:
        raise DatasetError(f"{fpath}: Fortran-ordered array; expected C order as np.save writes")
    return tuple(int(s) for s in shape), dtype, offset


def _sha256_file(fpath: str) -> str:
    h = hashlib.sha256()
    with open(fpath, "rb") as f:
        while True:
            b = f.read(_HASH_CHUNK)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def _read_meta(path: str) -> dict:
    mpath = os.path.join(path, META_FILE)
    if not os.path.isfile(mpath):
        raise DatasetError(f"{mpath}: missing (every dataset directory has a meta.json)")
    try:
        with open(mpath) as f:
            meta = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(f"{mpath}: not valid JSON ({e}); the file is truncated or "
                           f"corrupt") from None
    if not isinstance(meta, dict):
        raise DatasetError(f"{mpath}: expected a JSON object, got {type(meta).__name__}")
    if "format_version" not in meta:
        raise DatasetError(f"{mpath}: no format_version field; not a dom2_jax dataset")
    if meta["format_version"] != FORMAT_VERSION:
        raise DatasetError(f"{mpath}: unknown format_version {meta['format_version']!r}; this "
                           f"code reads version {FORMAT_VERSION}")
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise DatasetError(f"{mpath}: missing required field(s) {missing}")
    for k, typ in (("env", str), ("quality", str), ("env_kwargs", dict), ("generator", dict),
                   ("reference_returns", dict), ("sha256", dict), ("created", str)):
        if not isinstance(meta[k], typ):
            raise DatasetError(f"{mpath}: field {k!r} should be a {typ.__name__}, got "
                               f"{type(meta[k]).__name__}")
    for k in _COUNT_META:
        if not isinstance(meta[k], int) or isinstance(meta[k], bool) or meta[k] < 0:
            raise DatasetError(f"{mpath}: field {k!r} should be a non-negative int, got "
                               f"{meta[k]!r}")
    meta["reference_returns"] = _clean_references(meta["reference_returns"], where=mpath)
    return meta


def load(path, expected_env: Optional[str] = None,
         expected_shapes: Optional[Mapping[str, int]] = None, verify_checksums: bool = True,
         mmap: bool = False) -> Dataset:
    """Reads and validates the dataset in directory ``path``.

    Args:
      path: dataset directory (as written by ``save``).
      expected_env: if given, the env name this run uses; a dataset made for another env fails.
      expected_shapes: optional {"num_agents", "obs_dim", "act_dim"} the run's env needs.
      verify_checksums: compare each ``.npy`` file's sha256 with ``meta.json`` (reads every byte).
      mmap: memory-map the arrays read-only instead of reading them into memory.
    Returns: a ``Dataset`` (arrays [N, A, ...] as stored; see the module docstring).
    Raises: ``DatasetError`` (a ``ValueError``) with one message naming the file and the problem:
      missing directory/file, truncated or corrupt ``.npy``, checksum mismatch, wrong env,
      shapes inconsistent between arrays or with meta or with ``expected_shapes``, NaN/inf,
      unknown format_version, inconsistent episode bookkeeping.
    """
    path = os.path.abspath(os.fspath(path))
    if not os.path.exists(path):
        hint = ""
        parent, base = os.path.split(path)
        if os.path.isdir(parent):
            leftovers = [d for d in os.listdir(parent) if d.startswith(base + ".tmp-")]
            if leftovers:
                hint = (f" (an unfinished write left {os.path.join(parent, leftovers[0])}; "
                        f"regenerate the dataset)")
        raise DatasetError(f"dataset directory not found: {path}{hint}")
    if not os.path.isdir(path):
        raise DatasetError(f"dataset path {path} is not a directory")

    meta = _read_meta(path)
    mpath = os.path.join(path, META_FILE)
    if expected_env is not None and meta["env"] != expected_env:
        raise DatasetError(f"{path}: dataset was made for env {meta['env']!r}, but this run "
                           f"uses {expected_env!r}")

    arrays = {}
    for name in ARRAY_NAMES:
        fpath = os.path.join(path, f"{name}.npy")
        if not os.path.isfile(fpath):
            raise DatasetError(f"{fpath}: missing (a dataset has {', '.join(ARRAY_NAMES)} "
                               f"and meta.json)")
        shape, dtype, offset = _read_npy_header(fpath)
        expected_bytes = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        actual_bytes = os.path.getsize(fpath)
        if actual_bytes < expected_bytes:
            raise DatasetError(f"{fpath}: truncated: {actual_bytes} bytes, but its header "
                               f"promises shape {shape} {dtype} = {expected_bytes} bytes")
        if actual_bytes > expected_bytes:
            raise DatasetError(f"{fpath}: corrupt: {actual_bytes} bytes, but its header "
                               f"promises shape {shape} {dtype} = {expected_bytes} bytes")
        if dtype != DTYPES[name]:
            raise DatasetError(f"{fpath}: dtype {dtype}, expected {DTYPES[name]}")
        if verify_checksums:
            want = meta["sha256"].get(name)
            if not isinstance(want, str):
                raise DatasetError(f"{mpath}: no sha256 recorded for {name}.npy (pass "
                                   f"verify_checksums=False to skip the check)")
            got = _sha256_file(fpath)
            if got != want.lower():
                raise DatasetError(f"{fpath}: checksum mismatch: sha256 {got}, meta.json "
                                   f"records {want}; the file is corrupt or was modified")
        try:
            a = np.load(fpath, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise DatasetError(f"{fpath}: cannot be read ({e})") from None
        arrays[name] = a

    _check_arrays(arrays, where=path)
    _check_meta_counts(meta, arrays, where=mpath)
    ds = Dataset(**arrays, meta=meta)
    check_compatible(ds, None, expected_shapes, where=path)
    return ds
