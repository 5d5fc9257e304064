"""Shipped behaviour policies: ``dom2_jax/assets/<env>_<quality>.npz`` + ``behaviour_returns.json``.

A policy file is an ``.npz`` (no pickle) holding the stacked TD3 actor parameters (leading
agent axis) under their pytree paths (``params/MLP_0/Dense_0/kernel``, ...) and one entry
``__meta__``: a 0-d unicode array with a JSON dict (env, env_kwargs, quality, hidden_dims,
num_agents, obs_dim, act_dim, env_steps, seed, eval score, TD3 config).

``behaviour_returns.json`` maps env name -> {"random": {...}, "medium": {...}, "expert": {...},
"training": {...}}: measured mean/std episode scores, the transitions each policy was trained
for, the exact command, and what ``medium-replay`` regeneration needs (seed, config, chunk).
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from dom2_jax import fileio

ASSETS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets")
RETURNS_FILE = "behaviour_returns.json"
META_KEY = "__meta__"


class MissingPolicyError(FileNotFoundError):
    """A shipped behaviour policy needed for a dataset quality does not exist."""


def train_command(env_name: str, out_dir: Optional[str] = None) -> str:
    """The ``experiments.train_behaviour`` command that made the shipped policies of
    ``env_name`` (writing into ``out_dir`` when given; the launcher's default is
    ``runs/behaviour/<env>``)."""
    if env_name.startswith("mamujoco"):  # the shipped HalfCheetah policies: 200k transitions
        cmd = (f"python -m experiments.train_behaviour --env={env_name} --steps=200000 "
               f"--seed=0 --eval_every=10 --snapshot_dir=runs/behaviour_{env_name}")
    else:
        cmd = f"python -m experiments.train_behaviour --env={env_name} --steps=2000000 --seed=0"
    return cmd + (f" --out={out_dir}" if out_dir else "")


def shipped_files_replaced(env_name: str, out_dir: str) -> List[str]:
    """The shipped files that writing ``env_name``'s behaviour policies into ``out_dir`` would
    replace: ``<env>_expert.npz`` / ``<env>_medium.npz`` where they exist, and
    ``behaviour_returns.json`` where it holds an ``env_name`` entry. Empty unless ``out_dir``
    is the shipped assets directory (``ASSETS_DIR``)."""
    if os.path.realpath(out_dir) != os.path.realpath(ASSETS_DIR):
        return []
    files = [policy_path(env_name, q, out_dir) for q in ("expert", "medium")]
    files = [f for f in files if os.path.exists(f)]
    if env_name in read_returns(out_dir):
        files.append(os.path.join(out_dir, RETURNS_FILE))
    return files


def policy_path(env_name: str, quality: str, assets_dir: Optional[str] = None) -> str:
    return os.path.join(assets_dir or ASSETS_DIR, f"{env_name}_{quality}.npz")


def _atomic_write(path: str, write_fn) -> None:
    fileio.atomic_write(path, write_fn, binary=True)


def save_policy(path: str, flat_params: Dict[str, np.ndarray], meta: Dict[str, Any]) -> None:
    """Writes ``flat_params`` ({pytree path: array}) and ``meta`` (JSON) atomically."""
    if META_KEY in flat_params:
        raise ValueError(f"{META_KEY} is reserved")
    arrays = {k: np.asarray(v, np.float32) for k, v in flat_params.items()}
    arrays[META_KEY] = np.asarray(json.dumps(meta, sort_keys=True))
    _atomic_write(path, lambda f: np.savez(f, **arrays))


def load_policy(path: str) -> Tuple[Dict[str, np.ndarray], Dict[str, Any]]:
    """-> (flat params {path: float32 array}, meta dict). Raises MissingPolicyError."""
    if not os.path.exists(path):
        raise MissingPolicyError(f"behaviour policy {path} does not exist")
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z[META_KEY]))
        flat = {k: np.asarray(z[k]) for k in z.files if k != META_KEY}
    return flat, meta


def require_policy(env_name: str, quality: str, assets_dir: Optional[str] = None):
    """``load_policy`` of the shipped policy, or a MissingPolicyError naming the command."""
    path = policy_path(env_name, quality, assets_dir)
    if not os.path.exists(path):
        where = os.path.dirname(path)
        raise MissingPolicyError(
            f"no shipped {quality!r} behaviour policy for {env_name!r} (expected {path}). "
            f"Train it with:\n    {train_command(env_name, where)}\n"
            f"(writes {env_name}_medium.npz, {env_name}_expert.npz and "
            f"{RETURNS_FILE} into {where}"
            + ("; replacing the shipped ones there also needs --overwrite_shipped"
               if shipped_files_replaced(env_name, where) else "") + ")")
    return load_policy(path)


def read_returns(assets_dir: Optional[str] = None) -> Dict[str, Any]:
    path = os.path.join(assets_dir or ASSETS_DIR, RETURNS_FILE)
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def update_returns(env_name: str, entry: Dict[str, Any], assets_dir: Optional[str] = None) -> str:
    """Replaces ``env_name``'s entry of ``behaviour_returns.json`` (others are kept)."""
    path = os.path.join(assets_dir or ASSETS_DIR, RETURNS_FILE)
    data = read_returns(assets_dir)
    data[env_name] = entry
    write_json(path, data)
    return path


def write_json(path: str, obj: Any) -> None:
    """JSON file written atomically."""
    text = json.dumps(obj, indent=1, sort_keys=True) + "\n"
    _atomic_write(path, lambda f: f.write(text.encode()))


def params_digest(flat: Dict[str, np.ndarray]) -> str:
    """sha256 over the sorted (path, float32 bytes) pairs: identifies a policy bit-exactly."""
    h = hashlib.sha256()
    for k in sorted(flat):
        h.update(k.encode())
        h.update(np.ascontiguousarray(np.asarray(flat[k], np.float32)).tobytes())
    return h.hexdigest()
