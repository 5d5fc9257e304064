"""Environments: pure-JAX MPE (spread, tag, world) and MJX MAMuJoCo HalfCheetah 2x3.

Use ``make(name, **overrides)``; see ``dom2_jax.envs.api`` for the interface.
"""
from __future__ import annotations

import importlib

from dom2_jax import registry
from dom2_jax.envs.api import Env

# Task names and their factories live in dom2_jax.registry; factories are imported lazily so
# that importing dom2_jax.envs does not pull in MuJoCo for MPE users and vice versa.
ENV_NAMES = registry.TASKS


def make(name: str, **overrides) -> Env:
    """Builds the environment ``name`` with keyword ``overrides`` (e.g. ``shift="speed"``)."""
    return registry.task_factory(name)(**overrides)


def __getattr__(attr):  # lazy re-export of rollout utilities (no JAX import at package import)
    if attr in ("rollout", "make_rollout"):
        module = importlib.import_module("dom2_jax.envs.rollout")
        return module if attr == "rollout" else getattr(module, attr)
    raise AttributeError(f"module 'dom2_jax.envs' has no attribute {attr!r}")


__all__ = ["Env", "ENV_NAMES", "make", "rollout", "make_rollout"]
