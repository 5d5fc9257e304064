"""MA-CQL: independent TD3-style learners with CQL(H) critics (the OMAR paper's MA-CQL baseline).

Per agent j, as in OMAR's public code (``ling-pan/OMAR``, ``algorithms/maddpg.py`` with
``--cql 1 --omar 0``):

  critic: y = r + gamma (1 - d) min_k Qbar_k(o', pibar(o'))
          L(phi) = sum_k E (y - Q_k(o, a))^2
                   + zeta sum_k E[logsumexp_m (Q_k(o, a~_m) - log 0.5^d) - log M - Q_k(o, a)],
          a~_m ~ U[-1, 1]^d, M = 10  (``common.critic_loss``, the same function DOM2 uses);
          on HalfCheetah (``cql_policy_noise = 0.2``) also 10 actions pi(o) + N(0, 0.2^2) and
          10 pi(o') + N(0, 0.2^2) with their log densities, as OMAR's MuJoCo code does
  actor:  L(theta) = -E Q_1(o, pi(o)) + act_reg E ||pi(o)||^2 / d,  pi = tanh(MLP(o))
  targets: soft updates with rate rho.

zeta is OMAR's tuned ``cql_alpha`` per task and dataset quality (experiments/configs/macql.py).
The state is ``common.ActorCriticState``; ``update`` is ``vmap`` of the per-agent update.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Dict

import jax
import jax.numpy as jnp
import ml_collections

from dom2_jax.algos import common
from dom2_jax.algos.common import ActorCriticState, critic_loss  # noqa: F401

Array = jax.Array
State = ActorCriticState


def default_config() -> ml_collections.ConfigDict:
    """MA-CQL hyper-parameters (OMAR code's MuJoCo values; MPE values in the config file)."""
    c = ml_collections.ConfigDict()
    c.zeta = 1.0                 # CQL weight (OMAR's cql_alpha; tuned per task/quality)
    c.rho = 0.005                # target rate (OMAR: 0.01 MPE, 0.005 MuJoCo)
    c.gamma = 0.99               # MPE config: 0.95
    c.actor_hidden = (256, 256)  # OMAR: 2 hidden layers of 64 (MPE) / 256 (MuJoCo)
    c.critic_hidden = (256, 256)
    c.num_cql_actions = 10       # M uniform actions in the logsumexp
    c.cql_density_correction = True  # subtract log(0.5^d) (OMAR code) and log M (constant)
    c.cql_policy_noise = 0.0     # > 0: also noisy pi(o), pi(o') in the logsumexp (OMAR MuJoCo: 0.2)
    c.act_reg = 1e-3             # OMAR code: pol_loss += 1e-3 * mean(pi(o)^2)
    c.policy_noise = 0.0         # OMAR's TD3 uses no target policy smoothing ...
    c.noise_clip = 0.5
    c.policy_delay = 1           # ... and updates the actor every step
    c.batch_size = 256           # OMAR: 1024 MPE, 256 MuJoCo
    c.actor_lr = 3e-4            # OMAR: 0.01 MPE, 3e-4 MuJoCo
    c.critic_lr = 3e-4
    c.grad_clip = 0.5            # OMAR clips both networks' gradient norms at 0.5
    return c


@dataclasses.dataclass(frozen=True)
class Hparams(common.CQLHparams):
    NAME = "MA-CQL"
    COEF_NAMES = ("zeta", "rho", "gamma")




def actor_loss(hp: Hparams, coef, actor_params, critic_params, batch, key: Array):
    """-E Q_1(o, pi(o)) + act_reg E mean_d pi(o)^2 for one agent."""
    del coef, key
    pi = hp.actor_module.apply(actor_params, batch["obs"])
    q = common.q1_of(hp, critic_params, batch["obs"], pi)
    loss = -jnp.mean(q) + hp.act_reg * jnp.mean(jnp.square(pi))
    return loss, {"actor_q": jnp.mean(q)}


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
