"""MA-TD3+BC: independent TD3+BC learners (Fujimoto & Gu 2021), one per agent.

Per agent j:
  critic: y = r + gamma (1 - d) min_k Qbar_k(o', clip(pibar(o') + clip(N(0, 0.2^2), -0.5, 0.5)))
          L(phi) = sum_k E (y - Q_k(o, a))^2           (no CQL term: ``losses.td_critic_loss``)
  actor (every ``policy_delay`` = 2 updates, with the soft target updates):
          lambda = alpha / sg(E |Q_1(o, pi(o))|),  alpha = 2.5
          L(theta) = -lambda E Q_1(o, pi(o)) + E mean_d (pi(o) - a)^2
TD3+BC's observation standardisation is the trainer's ``normalize_obs`` (dataset statistics),
a per-task choice made for every algorithm alike (on for HalfCheetah, off for MPE).
"""
from __future__ import annotations

import dataclasses
from typing import Dict

import jax
import jax.numpy as jnp

from dom2_jax.algos import td3_family
from dom2_jax.algos.common import make_coef  # noqa: F401  (make_coef(hp, **overrides))
from dom2_jax.algos.td3_family import ActorCriticState

Array = jax.Array
State = ActorCriticState


@dataclasses.dataclass(frozen=True)
class Hparams(td3_family.ActorCriticHparams):
    """TD3+BC's published hyper-parameters (D4RL MuJoCo): the TD3 family's defaults (target
    smoothing 0.2 clipped at 0.5, policy delay 2, tau 0.005, Adam 3e-4, batch 256, no
    gradient clip) plus alpha."""

    NAME = "MA-TD3+BC"
    COEF_NAMES = ("alpha", "rho", "gamma")

    alpha: float = 2.5                   # BC trade-off: lambda = alpha / mean|Q|

    def checks(self):
        return super().checks() + [(self.alpha >= 0, f"alpha must be >= 0, got {self.alpha}")]


def default_config():
    """The fields of ``Hparams`` with their defaults, as a ConfigDict."""
    return Hparams.default_config()


def actor_loss(hp: Hparams, coef, actor_params, critic_params, batch, key: Array):
    """-lambda E Q_1(o, pi(o)) + E mean_d (pi(o) - a)^2, lambda = alpha / sg(E|Q_1|)."""
    del key
    pi = hp.actor_module.apply(actor_params, batch["obs"])
    q = td3_family.q1_of(hp, critic_params, batch["obs"], pi)
    lmbda = coef["alpha"] / jax.lax.stop_gradient(jnp.mean(jnp.abs(q)) + 1e-6)
    bc = jnp.mean(jnp.square(pi - batch["actions"]))
    return -lmbda * jnp.mean(q) + bc, {"actor_q": jnp.mean(q), "actor_bc": bc,
                                       "actor_lambda": lmbda}


def init(key: Array, config, num_agents: int, obs_dim: int, act_dim: int) -> State:
    """Training state (agents on axis 0) from a config or an ``Hparams``."""
    return td3_family.init(key, Hparams.resolve(config, num_agents, obs_dim, act_dim))


def update(state: State, batch: Dict[str, Array], key: Array):
    """One update of all agents (TD3 family, this module's actor loss); batch [A, B, ...]."""
    return td3_family.update(state, batch, key, actor_loss)


def act(state: State, obs: Array, key: Array = None) -> Array:
    """a = pi_j(o_j): [..., A, obs_dim] -> [..., A, act_dim]."""
    return td3_family.act(state, obs, key)
