"""Importer for OG-MARL datasets stored as flashbax ``Vault``s (e.g. the OMAR MPE/MaMuJoCo copies).

On-disk layout (flashbax 0.1.x ``flashbax/vault/vault.py``, vault version 1.x), for a vault at
``<vault_dir>/<vault_name>/<uid>/``:

* ``metadata.json``: ``{"version": 1.2, "structure_shape": tree of "(B, T, ...)" strings,
  "structure_dtype": tree of dtype names, ...user metadata}``;
* one zarr array per leaf of the experience tree inside an OCDBT key-value store rooted at the
  uid directory (``manifest.ocdbt`` + ``d/``); the array of leaf ``infos -> state`` is stored
  under key ``"infos.state."`` (each path component followed by a dot). Arrays have shape
  ``[B, 10**13, ...]`` (the time axis is an upper bound);
* ``vault_index``: an int32 zarr array of shape (1,) holding how many time steps were written.

OG-MARL experience is per TIME STEP, ``[B, T, A, ...]`` (B is 1 for OG-MARL's datasets):
``observations`` o_t [.., A, obs_dim], ``actions`` a_t [.., A, act_dim], ``rewards`` r_t [.., A],
``terminals`` / ``truncations`` [.., A] (set on the step that ends the episode),
``infos`` {``state`` [.., S], ``legals`` ...} (ignored here: DOM2 is decentralised).

We read the arrays with tensorstore directly (the same specs flashbax uses), so flashbax itself
is not needed at import time. Conversion to transitions, per episode of steps t = 0..L-1:
``(o_t, a_t, r_t, o_{t+1}, done=False)`` for t < L-1. The last step has no stored next
observation: if it is a TRUE termination it is kept with ``done=True`` and ``next_obs = o_t``
(a placeholder never bootstrapped from); if the episode was truncated (time limit) it is
dropped, because its bootstrap target is unknown. Episode scores are computed from ALL L
rewards (before dropping). A trailing episode without an end flag is incomplete and dropped.
"""
from __future__ import annotations

import json
import os
from ast import literal_eval
from typing import Any, Optional, Union

import numpy as np

from dom2_jax.data.format import Dataset, DatasetError, build_dataset

VAULT_METADATA = "metadata.json"
_REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals", "truncations")
#: Env-name prefixes of our environments, which never terminate (only time limits).
_NEVER_TERMINATE = ("mpe_", "mamujoco_halfcheetah")


def _leaf_specs(tree: Any, prefix: str = "") -> dict:
    """{datastore name: leaf} for a metadata structure tree (dicts only, as OG-MARL writes)."""
    out = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            out.update(_leaf_specs(v, f"{prefix}{k}."))
    else:
        out[prefix] = tree
    return out


def _store_spec(base: str, name: str) -> dict:
    return {"driver": "zarr",
            "kvstore": {"driver": "ocdbt", "base": f"file://{base}", "path": name}}


def read_vault(vault_dir: str, vault_name: str, uid: str) -> tuple[dict, dict]:
    """Reads a flashbax vault without flashbax.

    Returns ``(experience, metadata)``: ``experience`` maps datastore names (``"observations."``,
    ``"infos.state."``, ...) to numpy arrays ``[B, T, ...]`` of the written time steps;
    ``metadata`` is the vault's ``metadata.json`` minus the structure trees.
    """
    base = os.path.abspath(os.path.join(os.fspath(vault_dir), vault_name, uid))
    if not os.path.isdir(base) and not vault_name.endswith(".vlt"):
        alt = os.path.abspath(os.path.join(os.fspath(vault_dir), vault_name + ".vlt", uid))
        if os.path.isdir(alt):
            base = alt
    if not os.path.isdir(base):
        parent = os.path.dirname(base)
        have = sorted(os.listdir(parent)) if os.path.isdir(parent) else []
        raise DatasetError(f"vault not found: {base}" + (f" (uids there: {have})" if have else ""))
    mpath = os.path.join(base, VAULT_METADATA)
    if not os.path.isfile(mpath):
        raise DatasetError(f"{mpath}: missing; {base} is not a flashbax vault")
    try:
        with open(mpath) as f:
            meta = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise DatasetError(f"{mpath}: not valid JSON ({e})") from None
    version = meta.get("version")
    if not isinstance(version, (int, float)) or int(version // 1) != 1:
        raise DatasetError(f"{mpath}: vault version {version!r}; this importer reads version 1.x")
    if "structure_shape" not in meta or "structure_dtype" not in meta:
        raise DatasetError(f"{mpath}: no structure_shape/structure_dtype; not a flashbax vault")

    try:
        import tensorstore as ts  # (a) not in install_requires (orbax brings it); vaults only
    except ImportError as e:  # pragma: no cover - tensorstore comes with orbax
        raise ImportError("reading flashbax vaults needs tensorstore (pip install tensorstore)") \
            from e

    try:
        index_store = ts.open(_store_spec(base, "vault_index"), open=True).result()
        n_steps = int(np.asarray(index_store.read().result()).reshape(-1)[0])
    except Exception as e:  # noqa: BLE001 - tensorstore raises ValueError/RuntimeError variants
        raise DatasetError(f"{base}: cannot read vault_index ({e})") from None

    experience = {}
    shapes = _leaf_specs(meta["structure_shape"])
    for name, shape_str in shapes.items():
        try:
            store = ts.open(_store_spec(base, name), open=True).result()
            experience[name] = np.asarray(store[:, :n_steps].read().result())
        except Exception as e:  # noqa: BLE001
            raise DatasetError(f"{base}: cannot read vault array {name!r} (declared "
                               f"{shape_str}): {e}") from None
        declared = literal_eval(shape_str) if isinstance(shape_str, str) else None
        if declared is not None and tuple(experience[name].shape[2:]) != tuple(declared[2:]):
            raise DatasetError(f"{base}: vault array {name!r} has shape "
                               f"{experience[name].shape}, metadata declares {shape_str}")
    extra = {k: v for k, v in meta.items() if k not in ("structure_shape", "structure_dtype")}
    return experience, extra


def _episode_scores(rewards: np.ndarray, ends: np.ndarray, score: Union[str, int]) -> np.ndarray:
    """Scores of the complete episodes: rewards [T, A], ends = indices of last steps."""
    per_agent = np.add.reduceat(rewards.astype(np.float64), np.r_[0, ends[:-1] + 1], axis=0)
    if score == "mean":
        return per_agent.mean(axis=1)
    if score == "sum":
        return per_agent.sum(axis=1)
    if isinstance(score, (int, np.integer)) and not isinstance(score, bool):
        return per_agent[:, int(score)]
    raise ValueError(f"score must be 'mean', 'sum' or an agent index, got {score!r}")


def import_vault(vault_dir: str, vault_name: str, uid: str, env: str, *,
                 quality: Optional[str] = None, env_kwargs: Optional[dict] = None,
                 terminations: str = "auto", score: Union[str, int] = "mean",
                 reference_returns: Optional[dict] = None) -> Dataset:
    """Converts the OG-MARL vault ``<vault_dir>/<vault_name>/<uid>`` into a ``Dataset``.

    Args:
      vault_dir: directory holding vaults (OG-MARL's ``rel_dir``, e.g. "vaults/omar/mpe").
      vault_name: e.g. "simple_spread.vlt" (the ".vlt" suffix may be left out).
      uid: dataset inside the vault, e.g. "Medium", "Expert".
      env: our env name the data is for (e.g. "mpe_spread"); stored in meta.
      quality: quality label; default ``uid.lower()``.
      env_kwargs: stored in meta (the env overrides the data corresponds to).
      terminations: how to read the vault's ``terminals`` flags at an episode's last step:
        "keep" (true terminations: transition kept with done=True), "ignore" (every episode end
        is a time-limit truncation: last transition dropped, all dones False), or "auto"
        (= "ignore" for our MPE and HalfCheetah envs, which never terminate, and whose OG-MARL
        copies mark the time limit as a terminal; "keep" otherwise).
      score: episode score from per-agent summed rewards: "mean" over agents (spread,
        HalfCheetah), "sum", or an agent index (tag: 0 = predator 0).
      reference_returns: {"random", "expert"} for normalised scores, stored in meta.
    Returns: a validated ``Dataset``; ``meta["generator"]`` records the source vault and the
      conversion choices (including how many steps were dropped).
    Raises: ``DatasetError`` for a missing/invalid vault or unsupported contents (discrete
      actions, missing keys).
    """
    if terminations not in ("auto", "keep", "ignore"):
        raise ValueError(f"terminations must be 'auto', 'keep' or 'ignore', got {terminations!r}")
    if terminations == "auto":
        terminations = "ignore" if env.startswith(_NEVER_TERMINATE) else "keep"
    exp, vmeta = read_vault(vault_dir, vault_name, uid)
    where = os.path.join(os.fspath(vault_dir), vault_name, uid)
    missing = [k for k in _REQUIRED_KEYS if k + "." not in exp]
    if missing:
        raise DatasetError(f"{where}: vault lacks {missing}; has "
                           f"{sorted(k.rstrip('.') for k in exp)}")
    obs_all, act_all = exp["observations."], exp["actions."]
    rew_all, term_all, trunc_all = exp["rewards."], exp["terminals."], exp["truncations."]
    if obs_all.ndim != 4:
        raise DatasetError(f"{where}: observations have shape {obs_all.shape}, expected "
                           f"[B, T, A, obs_dim]")
    if act_all.ndim == 3 or not np.issubdtype(act_all.dtype, np.floating):
        raise DatasetError(f"{where}: actions have shape {act_all.shape} dtype {act_all.dtype}; "
                           f"only continuous actions [B, T, A, act_dim] are supported")
    b, _, a, _ = obs_all.shape
    for name, arr in (("rewards", rew_all), ("terminals", term_all), ("truncations", trunc_all)):
        if arr.shape[:3] != obs_all.shape[:3] or arr.ndim != 3:
            raise DatasetError(f"{where}: {name} have shape {arr.shape}, expected "
                               f"{obs_all.shape[:3]} ([B, T, A])")

    parts = {k: [] for k in ("obs", "actions", "rewards", "next_obs", "dones")}
    lengths, scores = [], []
    dropped_tail = dropped_truncated = dropped_empty = 0
    for row in range(b):
        obs, act, rew = obs_all[row], act_all[row], rew_all[row]
        term = np.asarray(term_all[row]).astype(bool)
        trunc = np.asarray(trunc_all[row]).astype(bool)
        t_total = obs.shape[0]
        ends = np.nonzero((term | trunc).all(axis=1))[0]
        last_end = int(ends[-1]) if ends.size else -1
        dropped_tail += t_total - 1 - last_end
        if ends.size == 0:
            continue
        ep_scores = _episode_scores(rew[:last_end + 1], ends, score)
        starts = np.r_[0, ends[:-1] + 1]
        for s, e, sc in zip(starts, ends, ep_scores):
            s, e = int(s), int(e)
            terminal = terminations == "keep" and bool(term[e].any())
            keep_end = e + 1 if terminal else e  # exclusive end of kept steps
            if keep_end <= s:
                dropped_empty += 1
                dropped_truncated += 1
                continue
            if not terminal:
                dropped_truncated += 1
            n = keep_end - s
            nxt = np.empty_like(obs[s:keep_end])
            nxt[: e - s] = obs[s + 1:e + 1]
            if terminal:
                nxt[-1] = obs[e]  # placeholder: masked by done=True
            done = np.zeros((n, a), bool)
            if terminal:
                done[-1] = True  # joint termination: every agent stops bootstrapping
            parts["obs"].append(obs[s:keep_end])
            parts["actions"].append(act[s:keep_end])
            parts["rewards"].append(rew[s:keep_end])
            parts["next_obs"].append(nxt)
            parts["dones"].append(done)
            lengths.append(n)
            scores.append(float(sc))
    if not lengths:
        raise DatasetError(f"{where}: no complete episode with at least one usable transition "
                           f"(is any step flagged terminal/truncated?)")
    arrays = {k: np.concatenate(v, axis=0) for k, v in parts.items()}
    generator = {
        "importer": "dom2_jax.data.ogmarl.import_vault",
        "vault": os.path.abspath(where), "uid": uid, "vault_metadata": vmeta,
        "terminations": terminations, "score": score,
        "dropped_incomplete_tail_steps": int(dropped_tail),
        "dropped_truncated_last_steps": int(dropped_truncated),
        "dropped_empty_episodes": int(dropped_empty),
    }
    return build_dataset(**arrays, episode_lengths=np.asarray(lengths, np.int64),
                         episode_returns=np.asarray(scores, np.float32), env=env,
                         quality=quality or uid.lower(), env_kwargs=env_kwargs,
                         generator=generator, reference_returns=reference_returns)
