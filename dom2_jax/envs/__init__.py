"""Environments: pure-JAX MPE (spread, tag, world) and MJX MAMuJoCo HalfCheetah 2x3.

Use ``make(name, **overrides)``; see ``dom2_jax.envs.api`` for the interface.
"""
from __future__ import annotations

import importlib

from dom2_jax.envs.api import Env

# name -> "module:factory". Factories are imported lazily so that importing dom2_jax.envs
# does not pull in MuJoCo for MPE users and vice versa.
_REGISTRY = {
    "mpe_spread": "dom2_jax.envs.mpe.scenarios:make_spread",
    "mpe_tag": "dom2_jax.envs.mpe.scenarios:make_tag",
    "mpe_world": "dom2_jax.envs.mpe.scenarios:make_world",
    "mamujoco_halfcheetah_2x3": "dom2_jax.envs.mamujoco.halfcheetah:make_halfcheetah_2x3",
}

ENV_NAMES = tuple(_REGISTRY)


def make(name: str, **overrides) -> Env:
    """Builds the environment ``name`` with keyword ``overrides`` (e.g. ``shift="speed"``)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown environment {name!r}; expected one of {sorted(_REGISTRY)}")
    module_name, factory_name = _REGISTRY[name].split(":")
    factory = getattr(importlib.import_module(module_name), factory_name)
    return factory(**overrides)


def __getattr__(attr):  # lazy re-export of rollout utilities (no JAX import at package import)
    if attr in ("rollout", "make_rollout"):
        module = importlib.import_module("dom2_jax.envs.rollout")
        return module if attr == "rollout" else getattr(module, attr)
    raise AttributeError(f"module 'dom2_jax.envs' has no attribute {attr!r}")


__all__ = ["Env", "ENV_NAMES", "make", "rollout", "make_rollout"]
