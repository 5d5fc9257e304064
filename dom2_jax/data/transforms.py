"""Dataset transforms: Alg. 1 augmentation, trajectory subsampling, concatenation, scores, device.

All transforms work on whole trajectories, keep trajectories contiguous, and return a new
validated ``Dataset`` whose ``meta`` records what was done (``sha256`` is dropped: it describes
files, and the derived dataset has none until ``save``).
"""
from __future__ import annotations

import copy
import functools
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

from dom2_jax.data.format import (
    ARRAY_NAMES, TRANSITION_KEYS, Dataset, DatasetError, _clean_references,
    _now_iso, _refresh_meta)

#: Quantiles of the episode returns used by ``default_thresholds`` (see its docstring).
DEFAULT_QUANTILES = (0.5, 0.75, 0.9)


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------


def _gather_episodes(dataset: Dataset, episode_index: np.ndarray) -> dict:
    """Arrays of the trajectories ``episode_index`` (in that order, repeats allowed)."""
    episode_index = np.asarray(episode_index, np.int64)
    lengths = dataset.episode_lengths[episode_index]
    starts = dataset.episode_starts[episode_index]
    total = int(lengths.sum())
    new_starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    # transition index = start of its source episode + offset inside the episode
    idx = np.repeat(starts - new_starts, lengths) + np.arange(total, dtype=np.int64)
    out = {k: np.asarray(getattr(dataset, k))[idx] for k in TRANSITION_KEYS}
    out["episode_starts"] = new_starts
    out["episode_lengths"] = lengths.astype(np.int64)
    out["episode_returns"] = np.asarray(dataset.episode_returns)[episode_index]
    return out


def _derive(meta: Mapping, arrays: Mapping[str, np.ndarray], **updates) -> Dataset:
    m = copy.deepcopy(dict(meta))
    m.pop("sha256", None)
    m.update(updates)
    m["created"] = _now_iso()
    m = _refresh_meta(m, arrays)
    return Dataset(**{k: arrays[k] for k in ARRAY_NAMES}, meta=m).validate()


def _as_thresholds(thresholds) -> list:
    th = [float(t) for t in np.atleast_1d(np.asarray(thresholds, dtype=np.float64))]
    bad = [t for t in th if not np.isfinite(t)]
    if bad:
        raise ValueError(f"augment: thresholds must be finite, got {bad}")
    return th


# ----------------------------------------------------------------------------------------------
# Alg. 1: trajectory-based data augmentation
# ----------------------------------------------------------------------------------------------


def augmentation_counts(dataset: Dataset, thresholds: Sequence[float]) -> np.ndarray:
    """[E] int64: extra copies Alg. 1 adds for each trajectory = #{k : return >= r_th,k}."""
    th = np.asarray(_as_thresholds(thresholds), np.float64)
    r = np.asarray(dataset.episode_returns, np.float64)
    return (r[:, None] >= th[None, :]).sum(axis=1).astype(np.int64)


def augment(dataset: Dataset, thresholds: Sequence[float]) -> Dataset:
    """Alg. 1 of the DOM2 paper: D' = D, then for each r_th in ``thresholds`` (in order)
    D' <- D' + {T_i in D | Return(T_i) >= r_th}.

    A trajectory whose return is >= k of the thresholds appears 1 + k times. Returns are the
    stored episode scores (``episode_returns``). The result keeps D's trajectories first, in
    order, followed by one block per threshold; episode bookkeeping is rebuilt, and
    ``meta["augmentations"]`` (a list, one record per call) records the thresholds and counts.
    An empty ``thresholds`` returns an equal copy with the (empty) record added.

    Args:
      dataset: the source dataset D (E trajectories, N transitions).
      thresholds: the set R = {r_th,1..K} of return thresholds (floats).
    Returns: the augmented ``Dataset`` D' with N + sum_i k_i * len_i transitions.
    """
    th = _as_thresholds(thresholds)
    r = np.asarray(dataset.episode_returns, np.float64)
    blocks = [np.arange(dataset.num_episodes, dtype=np.int64)]
    for t in th:
        blocks.append(np.nonzero(r >= t)[0].astype(np.int64))
    order = np.concatenate(blocks)
    arrays = _gather_episodes(dataset, order)
    record = {
        "thresholds": th,
        "source_num_transitions": dataset.num_transitions,
        "source_num_episodes": dataset.num_episodes,
        "episodes_added_per_threshold": [int(len(b)) for b in blocks[1:]],
    }
    history = list(copy.deepcopy(dataset.meta.get("augmentations", [])))
    return _derive(dataset.meta, arrays, augmentations=history + [record])


def default_thresholds(dataset: Dataset,
                       quantiles: Sequence[float] = DEFAULT_QUANTILES) -> list:
    """Return thresholds for ``augment`` at the given quantiles of the episode returns.

    The paper gives no values. The default quantiles (0.5, 0.75, 0.9) mean: trajectories above
    the median return appear twice, those in the top quarter three times, those in the top
    tenth four times; with distinct returns the dataset grows by about 1.85x. Datasets whose
    returns are all equal get every trajectory copied once per threshold (a harmless uniform
    reweighting).
    """
    q = np.asarray(quantiles, np.float64)
    if q.ndim != 1 or q.size == 0 or np.any((q < 0) | (q > 1)):
        raise ValueError(f"default_thresholds: quantiles must be a non-empty list in [0, 1], "
                         f"got {list(np.atleast_1d(q))}")
    if dataset.num_episodes == 0:
        raise DatasetError("default_thresholds: the dataset has no episodes")
    r = np.asarray(dataset.episode_returns, np.float64)
    return [float(v) for v in np.quantile(r, q)]


# ----------------------------------------------------------------------------------------------
# Subsampling (Fig. 5 data-efficiency study)
# ----------------------------------------------------------------------------------------------


def _rng(key_or_seed) -> np.random.Generator:
    """numpy Generator from an int seed or a JAX PRNG key (typed or raw uint32)."""
    if isinstance(key_or_seed, (int, np.integer)):
        return np.random.default_rng(int(key_or_seed))
    try:
        import jax  # (a) keeps dom2_jax.data free of jax at import
        data = key_or_seed
        if hasattr(data, "dtype") and jax.dtypes.issubdtype(data.dtype, jax.dtypes.prng_key):
            data = jax.random.key_data(data)
        words = np.asarray(data, dtype=np.uint32).ravel()
    except Exception as e:  # noqa: BLE001 - any failure means an unusable key
        raise TypeError(f"subsample: key_or_seed must be an int or a JAX PRNG key, got "
                        f"{type(key_or_seed).__name__} ({e})") from None
    return np.random.default_rng([int(w) for w in words])


def _seed_repr(key_or_seed) -> Any:
    if isinstance(key_or_seed, (int, np.integer)):
        return int(key_or_seed)
    try:
        import jax  # (a) keeps dom2_jax.data free of jax at import
        data = key_or_seed
        if hasattr(data, "dtype") and jax.dtypes.issubdtype(data.dtype, jax.dtypes.prng_key):
            data = jax.random.key_data(data)
        return {"jax_key": [int(w) for w in np.asarray(data, np.uint32).ravel()]}
    except Exception:  # noqa: BLE001
        return repr(key_or_seed)


def subsample(dataset: Dataset, fraction: float, key_or_seed) -> Dataset:
    """Keeps a random subset of WHOLE trajectories holding about ``fraction`` of the transitions.

    Trajectories are visited in a random order (fixed by ``key_or_seed``: an int or a JAX PRNG
    key); the prefix of that order whose transition count is closest to ``fraction * N`` is
    kept (at least one trajectory), and kept trajectories stay in their original order. With
    the same seed, a smaller fraction's subset is contained in a larger one's (one permutation,
    nested prefixes), so a 1%..100% sweep is a nested family.

    Args:
      dataset: source dataset. fraction: in (0, 1]. key_or_seed: int seed or JAX key.
    Returns: the subsampled ``Dataset``; ``meta["subsample"]`` records fraction, seed, sizes.
    """
    fraction = float(fraction)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"subsample: fraction must be in (0, 1], got {fraction}")
    e = dataset.num_episodes
    if e == 0:
        raise DatasetError("subsample: the dataset has no episodes")
    perm = _rng(key_or_seed).permutation(e)
    cum = np.cumsum(dataset.episode_lengths[perm])
    target = fraction * dataset.num_transitions
    k = int(np.argmin(np.abs(cum - target))) + 1  # number of trajectories kept, >= 1
    if fraction == 1.0:
        k = e
    keep = np.sort(perm[:k])
    arrays = _gather_episodes(dataset, keep)
    record = {
        "fraction": fraction, "seed": _seed_repr(key_or_seed),
        "source_num_transitions": dataset.num_transitions,
        "source_num_episodes": dataset.num_episodes,
        "kept_fraction": float(cum[k - 1] / max(dataset.num_transitions, 1)),
    }
    history = copy.deepcopy(dataset.meta.get("subsample"))
    if history is not None:
        record["previous"] = history
    return _derive(dataset.meta, arrays, subsample=record)


# ----------------------------------------------------------------------------------------------
# Concatenation (medium-expert = medium + expert, random-medium, ...)
# ----------------------------------------------------------------------------------------------


def concatenate(datasets: Sequence[Dataset], *, quality: Optional[str] = None,
                reference_returns: Optional[dict] = None) -> Dataset:
    """Concatenates datasets of the same env and shapes, trajectories in the given order.

    Args:
      datasets: one or more datasets with equal ``env``, ``env_kwargs``, ``num_agents``,
        ``obs_dim`` and ``act_dim``.
      quality: quality label of the result; default the sources' labels joined by "-"
        (e.g. "medium" + "expert" -> "medium-expert").
      reference_returns: override; by default the union of the sources' references, which
        must agree where several define the same key.
    Returns: a ``Dataset`` whose ``meta["sources"]`` lists each source's quality, sizes,
      generator and checksums.
    """
    datasets = list(datasets)
    if not datasets:
        raise ValueError("concatenate: no datasets given")
    first = datasets[0]
    for i, d in enumerate(datasets[1:], start=1):
        for attr in ("env", "num_agents", "obs_dim", "act_dim"):
            if getattr(d, attr) != getattr(first, attr):
                raise DatasetError(f"concatenate: dataset {i} has {attr} {getattr(d, attr)!r} "
                                   f"but dataset 0 has {getattr(first, attr)!r}")
        if d.env_kwargs != first.env_kwargs:
            raise DatasetError(f"concatenate: dataset {i} has env_kwargs {d.env_kwargs} but "
                               f"dataset 0 has {first.env_kwargs}")
    if reference_returns is None:
        refs: dict = {}
        for i, d in enumerate(datasets):
            for k, v in d.reference_returns.items():
                if k in refs and refs[k] != v:
                    raise DatasetError(
                        f"concatenate: reference_returns[{k!r}] differ ({refs[k]!r} in an "
                        f"earlier dataset, {v!r} in dataset {i}); pass reference_returns=")
                refs[k] = v
    else:
        refs = _clean_references(reference_returns, where="concatenate")
    arrays = {k: np.concatenate([np.asarray(getattr(d, k)) for d in datasets], axis=0)
              for k in TRANSITION_KEYS + ("episode_lengths", "episode_returns")}
    lengths = arrays["episode_lengths"]
    arrays["episode_starts"] = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    if quality is None:
        quality = "-".join(str(d.quality) for d in datasets)
    sources = [{
        "quality": d.quality, "num_transitions": d.num_transitions,
        "num_episodes": d.num_episodes, "generator": copy.deepcopy(d.meta.get("generator")),
        "sha256": copy.deepcopy(d.meta.get("sha256")),
        **({"sources": copy.deepcopy(d.meta["sources"])} if "sources" in d.meta else {}),
    } for d in datasets]
    meta = copy.deepcopy(first.meta)
    for k in ("augmentations", "subsample"):
        meta.pop(k, None)
    return _derive(meta, arrays, quality=quality, reference_returns=refs, sources=sources,
                   generator={"concatenate": [d.quality for d in datasets]})


# ----------------------------------------------------------------------------------------------
# Scores
# ----------------------------------------------------------------------------------------------


def normalized_score(score, reference_returns: Union[Mapping[str, float], Dataset]):
    """100 * (score - random) / (expert - random); ``score`` may be a float or an array.

    ``reference_returns`` is a dict with ``random`` and ``expert`` (or a ``Dataset``, whose
    ``meta["reference_returns"]`` is used). Raises ``DatasetError`` if either is missing or if
    they are equal.
    """
    refs = (reference_returns.reference_returns if isinstance(reference_returns, Dataset)
            else reference_returns)
    if refs is None:
        refs = {}
    missing = [k for k in ("random", "expert") if refs.get(k) is None]
    if missing:
        raise DatasetError(f"normalized_score: reference_returns lacks {missing} (has "
                           f"{dict(refs)}); the normalised score needs both the random and "
                           f"the expert reference return")
    lo, hi = float(refs["random"]), float(refs["expert"])
    if hi == lo:
        raise DatasetError(f"normalized_score: expert and random references are equal ({lo})")
    out = 100.0 * (np.asarray(score, np.float64) - lo) / (hi - lo)
    return float(out) if np.ndim(out) == 0 else out


# ----------------------------------------------------------------------------------------------
# Device side
# ----------------------------------------------------------------------------------------------


def to_device(dataset: Dataset, device=None) -> dict:
    """Copies the transition arrays to the accelerator.

    Returns a dict of ``jnp`` arrays with the agent axis SECOND, as stored:
    ``obs`` [N, A, obs_dim], ``actions`` [N, A, act_dim], ``rewards`` [N, A],
    ``next_obs`` [N, A, obs_dim], ``dones`` [N, A] (float32 0/1).
    """
    import jax  # (a) keeps dom2_jax.data free of jax at import (notes/data.md)
    import jax.numpy as jnp

    out = {}
    for k in TRANSITION_KEYS:
        a = np.asarray(getattr(dataset, k))
        if k == "dones":
            a = a.astype(np.float32)
        out[k] = jax.device_put(jnp.asarray(a), device) if device is not None else jnp.asarray(a)
    return out


@functools.lru_cache(maxsize=None)
def _jitted_sample():
    import jax  # (a) keeps dom2_jax.data free of jax at import (notes/data.md)
    import jax.numpy as jnp

    def sample(arrays, key, batch_size):
        n = arrays["obs"].shape[0]
        idx = jax.random.randint(key, (batch_size,), 0, n)
        out = {}
        for k in TRANSITION_KEYS:
            x = jnp.take(arrays[k], idx, axis=0)            # [B, A, ...]
            x = jnp.swapaxes(x, 0, 1)                       # [A, B, ...]
            out[k] = x.astype(jnp.float32) if k == "dones" else x
        return out

    return jax.jit(sample, static_argnames=("batch_size",))


def sample_batch(arrays: Mapping[str, Any], key, batch_size: int) -> dict:
    """Uniform minibatch of joint transitions, agent axis FIRST (jitted; usable inside jit).

    Args:
      arrays: dict from ``to_device`` ([N, A, ...]). key: JAX PRNG key.
      batch_size: B (static).
    Returns: ``obs`` [A, B, obs_dim], ``actions`` [A, B, act_dim], ``rewards`` [A, B],
      ``next_obs`` [A, B, obs_dim], ``dones`` [A, B] float32. Indices are drawn uniformly with
      replacement and shared by all agents (transitions are joint).
    """
    return _jitted_sample()(dict(arrays), key, batch_size=int(batch_size))
