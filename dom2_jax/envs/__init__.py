"""Environments: pure-JAX MPE (spread, tag, world) and MJX MAMuJoCo HalfCheetah 2x3.

Use ``make(name, **overrides)``; see ``dom2_jax.envs.api`` for the interface.
"""
from __future__ import annotations

import importlib

import jax

from dom2_jax import registry
from dom2_jax.envs.api import Env

# Task names and their factories live in dom2_jax.registry; factories are imported lazily so
# that importing dom2_jax.envs does not pull in MuJoCo for MPE users and vice versa.
ENV_NAMES = registry.TASKS


def make(name: str, **overrides) -> Env:
    """Builds the environment ``name`` with keyword ``overrides`` (e.g. ``shift="speed"``)."""
    return registry.task_factory(name)(**overrides)


BACKENDS = ("auto", "jax", "cpu")


def resolve_backend(env, backend: str = "auto", what: str = "rollout") -> str:
    """Where episodes of ``env`` run (the one rule for rollouts, dataset generation and
    evaluation): "jax" (the env's jitted, vmapped ``rollout``: MJX for HalfCheetah) or "cpu"
    (HalfCheetah on C MuJoCo, ``mamujoco.cpu.rollout_batch``: ~3x faster than MJX on a CPU,
    and the simulator the original MaMuJoCo uses). "auto" = "cpu" for MAMuJoCo envs when JAX
    runs on CPU, else "jax". ``what`` names the caller's flag in error messages."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown {what} backend {backend!r}; expected one of {BACKENDS}")
    is_mujoco = env.name.startswith("mamujoco")
    if backend == "auto":
        return "cpu" if is_mujoco and jax.default_backend() == "cpu" else "jax"
    if backend == "cpu" and not is_mujoco:
        raise ValueError(f"{what} backend 'cpu' (C MuJoCo) exists only for MAMuJoCo envs, "
                         f"not {env.name!r}; use 'jax'")
    return backend


def __getattr__(attr):  # lazy re-export of rollout utilities (no JAX import at package import)
    if attr in ("rollout", "make_rollout"):
        module = importlib.import_module("dom2_jax.envs.rollout")
        return module if attr == "rollout" else getattr(module, attr)
    raise AttributeError(f"module 'dom2_jax.envs' has no attribute {attr!r}")


__all__ = ["BACKENDS", "Env", "ENV_NAMES", "make", "resolve_backend", "rollout", "make_rollout"]
