"""Factories registered in ``dom2_jax.envs.make``: mpe_spread, mpe_tag, mpe_world.

Common keyword arguments: ``shift=None | "speed"`` (per-episode speed factor of every
learning agent ~ U[v_min, 1]), ``v_min`` (defaults 0.3 spread, 0.4 tag, 0.5 world),
``integration="original" | "mpe2"``, ``force_model="original" | "omar"`` (OMAR's copy of
the MPE applies ``a * accel**2`` in tag/world, see ``core.py``), ``episode_length=25``.
"""
from __future__ import annotations

from typing import Any, Optional

from dom2_jax.envs.mpe.spread import SpreadEnv
from dom2_jax.envs.mpe.tag import TagEnv
from dom2_jax.envs.mpe.world import WorldEnv


def make_spread(**kwargs) -> SpreadEnv:
    """OMAR's cooperative navigation (3 agents, obs 18). Extra kwarg: ``num_agents``."""
    return SpreadEnv(**kwargs)


def make_tag(prey_params: Optional[Any] = None, **kwargs) -> TagEnv:
    """Predator-prey: 3 learning predators (obs 16), 1 prey driven by ``prey_params`` (MLP
    pytree, see ``dom2_jax.envs.mpe.prey``) or, if None, the scripted flee rule.
    Extra kwarg: ``reward_shaping=True`` (OMAR; False = original MPE / mpe2)."""
    return TagEnv(prey_params=prey_params, **kwargs)


def make_world(prey_params: Optional[Any] = None, variant: str = "omar", **kwargs) -> WorldEnv:
    """World: ``variant="omar"`` (3 predators, obs 24, 1 prey; OMAR's code, default) or
    ``"comm"`` (simple_world_comm: 4 predators incl. a leader, obs 34, 2 prey)."""
    return WorldEnv(variant=variant, prey_params=prey_params, **kwargs)
