"""MA-TD3+BC: independent TD3+BC learners (Fujimoto & Gu 2021), one per agent.

Per agent j:
  critic: y = r + gamma (1 - d) min_k Qbar_k(o', clip(pibar(o') + clip(N(0, 0.2^2), -0.5, 0.5)))
          L(phi) = sum_k E (y - Q_k(o, a))^2           (no CQL term: ``common.td_critic_loss``)
  actor (every ``policy_delay`` = 2 updates, with the soft target updates):
          lambda = alpha / sg(E |Q_1(o, pi(o))|),  alpha = 2.5
          L(theta) = -lambda E Q_1(o, pi(o)) + E mean_d (pi(o) - a)^2
Deviation: TD3+BC standardises observations with dataset statistics; ``init`` does not see
the dataset, so observations are used as they are (MPE and HalfCheetah features are O(1)-O(10)).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Dict

import jax
import jax.numpy as jnp
import ml_collections

from dom2_jax.algos import common
from dom2_jax.algos.common import ActorCriticState

Array = jax.Array
State = ActorCriticState


def default_config() -> ml_collections.ConfigDict:
    """TD3+BC's published hyper-parameters (D4RL MuJoCo)."""
    c = ml_collections.ConfigDict()
    c.alpha = 2.5                # BC trade-off: lambda = alpha / mean|Q|
    c.rho = 0.005
    c.gamma = 0.99
    c.actor_hidden = (256, 256)
    c.critic_hidden = (256, 256)
    c.policy_noise = 0.2         # target policy smoothing
    c.noise_clip = 0.5
    c.policy_delay = 2           # delayed actor and target updates
    c.batch_size = 256
    c.actor_lr = 3e-4
    c.critic_lr = 3e-4
    c.grad_clip = 0.0            # TD3+BC does not clip gradients
    return c


@dataclasses.dataclass(frozen=True)
class Hparams(common.ActorCriticHparams):
    NAME = "MA-TD3+BC"
    COEF_NAMES = ("alpha", "rho", "gamma")

    alpha: float

    def checks(self):
        return super().checks() + [(self.alpha >= 0, f"alpha must be >= 0, got {self.alpha}")]




def actor_loss(hp: Hparams, coef, actor_params, critic_params, batch, key: Array):
    """-lambda E Q_1(o, pi(o)) + E mean_d (pi(o) - a)^2, lambda = alpha / sg(E|Q_1|)."""
    del key
    pi = hp.actor_module.apply(actor_params, batch["obs"])
    q = common.q1_of(hp, critic_params, batch["obs"], pi)
    lmbda = coef["alpha"] / jax.lax.stop_gradient(jnp.mean(jnp.abs(q)) + 1e-6)
    bc = jnp.mean(jnp.square(pi - batch["actions"]))
    return -lmbda * jnp.mean(q) + bc, {"actor_q": jnp.mean(q), "actor_bc": bc,
                                       "actor_lambda": lmbda}


# ----------------------------------------------------------------------------- learner API
# The shared TD3-style learner (dom2_jax.algos.common) with this module's Hparams and actor loss.
make_coef = common.make_coef
act = common.deterministic_act  # a = pi_j(o_j): [..., A, obs_dim] -> [..., A, act_dim]
agent_update = functools.partial(common.actor_critic_agent_update, actor_loss_fn=actor_loss)


def init(key: Array, config, num_agents: int, obs_dim: int, act_dim: int) -> State:
    """Training state (agents on axis 0) from a config or an ``Hparams``."""
    return common.init_actor_critic(key, Hparams.resolve(config, num_agents, obs_dim, act_dim))


def update(state: State, batch: Dict[str, Array], key: Array):
    """One update of all agents (vmap of ``agent_update``); batch arrays [A, B, ...]."""
    return common.update_agents(state, batch, key, agent_update, common.AC_FIELDS)
