"""Offline datasets: on-disk format, checked loading, Alg. 1 augmentation, subsampling, batches.

Format: a directory of ``.npy`` files (obs, actions, rewards, next_obs, dones [N, A, ...];
episode_starts/lengths/returns [E]) plus ``meta.json``; see ``dom2_jax.data.format``.

    ds = load(path, expected_env="mpe_spread")        # raises DatasetError on any problem
    ds = augment(ds, default_thresholds(ds))           # Alg. 1
    arrays = to_device(ds)                             # jnp, [N, A, ...]
    batch = sample_batch(arrays, key, 256)             # jnp, [A, B, ...]
"""
from dom2_jax.data.format import (
    ARRAY_NAMES, FORMAT_VERSION, TRANSITION_KEYS, Dataset, DatasetError, build_dataset,
    check_compatible, load, save)
from dom2_jax.data.ogmarl import import_vault  # OG-MARL flashbax vaults
from dom2_jax.data.transforms import (
    DEFAULT_QUANTILES, augment, augmentation_counts, concatenate, default_thresholds,
    normalized_score, sample_batch, subsample, to_device)


__all__ = [
    "ARRAY_NAMES", "DEFAULT_QUANTILES", "FORMAT_VERSION", "TRANSITION_KEYS", "Dataset",
    "DatasetError", "augment", "augmentation_counts", "build_dataset", "check_compatible",
    "concatenate", "default_thresholds", "import_vault", "load", "normalized_score",
    "sample_batch", "save", "subsample", "to_device",
]
