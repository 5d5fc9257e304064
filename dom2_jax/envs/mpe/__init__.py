"""Pure-JAX multi-agent particle environments: spread, tag, world (see notes/mpe.md).

Build them with ``dom2_jax.envs.make("mpe_spread" | "mpe_tag" | "mpe_world", **kwargs)``.
"""
from dom2_jax.envs.mpe.base import MPEEnv, MPEState
from dom2_jax.envs.mpe.prey import init_prey_params, prey_policy_apply, scripted_prey_action
from dom2_jax.envs.mpe.scenarios import make_spread, make_tag, make_world

__all__ = ["MPEEnv", "MPEState", "make_spread", "make_tag", "make_world",
           "prey_policy_apply", "init_prey_params", "scripted_prey_action"]
