"""MA-CQL: independent TD3-style learners with CQL(H) critics (the OMAR paper's MA-CQL baseline).

Per agent j, as in OMAR's public code (``ling-pan/OMAR``, ``algorithms/maddpg.py`` with
``--cql 1 --omar 0``):

  critic: y = r + gamma (1 - d) min_k Qbar_k(o', pibar(o'))
          L(phi) = sum_k E (y - Q_k(o, a))^2
                   + zeta sum_k E[logsumexp_m (Q_k(o, a~_m) - log 0.5^d) - log M - Q_k(o, a)],
          a~_m ~ U[-1, 1]^d, M = 10  (``losses.critic_loss``, the same function DOM2 uses);
          on HalfCheetah (``cql_policy_noise = 0.2``) also 10 actions pi(o) + N(0, 0.2^2) and
          10 pi(o') + N(0, 0.2^2) with their log densities, as OMAR's MuJoCo code does
  actor:  L(theta) = -E Q_1(o, pi(o)) + act_reg E ||pi(o)||^2 / d,  pi = tanh(MLP(o))
  targets: soft updates with rate rho.

zeta is OMAR's tuned ``cql_alpha`` per task and dataset quality (experiments/configs/macql.py).
The learner is ``dom2_jax.algos.td3_family`` with ``CQLHparams`` (whose defaults are OMAR's
MuJoCo code's: this module adds only its actor loss).
"""
from __future__ import annotations

import dataclasses
from typing import Dict

import jax
import jax.numpy as jnp

from dom2_jax.algos import td3_family
from dom2_jax.algos.common import make_coef  # noqa: F401  (make_coef(hp, **overrides))
from dom2_jax.algos.losses import critic_loss  # noqa: F401  (macql.critic_loss)
from dom2_jax.algos.td3_family import ActorCriticState

Array = jax.Array
State = ActorCriticState


@dataclasses.dataclass(frozen=True)
class Hparams(td3_family.CQLHparams):
    """MA-CQL: the CQL family's fields and defaults (OMAR code's MuJoCo values; the MPE values
    and the per-task zeta are in experiments/configs/macql.py)."""

    NAME = "MA-CQL"
    COEF_NAMES = ("zeta", "rho", "gamma")


def default_config():
    """The fields of ``Hparams`` with their defaults, as a ConfigDict."""
    return Hparams.default_config()


def actor_loss(hp: Hparams, coef, actor_params, critic_params, batch, key: Array):
    """-E Q_1(o, pi(o)) + act_reg E mean_d pi(o)^2 for one agent."""
    del coef, key
    pi = hp.actor_module.apply(actor_params, batch["obs"])
    q = td3_family.q1_of(hp, critic_params, batch["obs"], pi)
    loss = -jnp.mean(q) + hp.act_reg * jnp.mean(jnp.square(pi))
    return loss, {"actor_q": jnp.mean(q)}


def init(key: Array, config, num_agents: int, obs_dim: int, act_dim: int) -> State:
    """Training state (agents on axis 0) from a config or an ``Hparams``."""
    return td3_family.init(key, Hparams.resolve(config, num_agents, obs_dim, act_dim))


def update(state: State, batch: Dict[str, Array], key: Array):
    """One update of all agents (TD3 family, this module's actor loss); batch [A, B, ...]."""
    return td3_family.update(state, batch, key, actor_loss)


def act(state: State, obs: Array, key: Array = None) -> Array:
    """a = pi_j(o_j): [..., A, obs_dim] -> [..., A, act_dim]."""
    return td3_family.act(state, obs, key)
