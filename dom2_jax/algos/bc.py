"""BC: per-agent deterministic behaviour cloning, pi_j = tanh(MLP(o_j)) regressed on a_j (MSE).

Minimises E mean_d (pi(o) - a)^2, whose minimiser is the behaviour policy's mean action
E[a | o] (inside the tanh range). Same state layout and API as the other algorithms.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, Tuple

import flax
import jax
import jax.numpy as jnp
import optax
from flax.training.train_state import TrainState

from dom2_jax.algos import common
from dom2_jax.algos.common import make_coef  # noqa: F401  (make_coef(hp, **overrides))
from dom2_jax.networks import DeterministicActor

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Hparams(common.HparamsBase):
    NAME = "BC"
    COEF_NAMES = ()

    actor_hidden: Tuple[int, ...] = (256, 256)  # as the TD3-family actors
    batch_size: int = 256
    actor_lr: float = 3e-4
    grad_clip: float = 0.0
    gamma: float = 0.99                  # unused; present so the shared task defaults apply

    @property
    def actor_module(self):
        return common.module(DeterministicActor, self.act_dim, self.actor_hidden)


def default_config():
    """The fields of ``Hparams`` with their defaults, as a ConfigDict."""
    return Hparams.default_config()


@flax.struct.dataclass
class BCState:
    actor: TrainState
    step: Array
    coef: Dict[str, Array]   # empty: BC has no dynamic coefficients
    hp: Hparams = flax.struct.field(pytree_node=False)


State = BCState


def init(key: Array, config, num_agents: int, obs_dim: int, act_dim: int) -> BCState:
    hp = Hparams.resolve(config, num_agents, obs_dim, act_dim)
    o0 = jnp.zeros((1, obs_dim))
    actor = jax.vmap(lambda k: hp.train_state(hp.actor_module, hp.actor_module.init(k, o0),
                                              hp.actor_lr))(jax.random.split(key, num_agents))
    return BCState(actor=actor, step=jnp.zeros((), jnp.int32), coef=make_coef(hp), hp=hp)


def actor_loss(hp: Hparams, actor_params, batch):
    pi = hp.actor_module.apply(actor_params, batch["obs"])
    return jnp.mean(jnp.square(pi - batch["actions"]))


def agent_update(hp, coef, params, batch, key, step):
    del coef, key, step
    actor, loss, _, grads = common.apply_loss(
        params["actor"], lambda p: (actor_loss(hp, p, batch), None))
    return dict(actor=actor), {"actor_loss": loss, "actor_grad_norm": optax.tree.norm(grads)}


def update(state: BCState, batch: Dict[str, Array], key: Array):
    """One update of all agents (vmap of ``agent_update``); batch arrays [A, B, ...]."""
    return common.update_agents(state, batch, key, agent_update, ("actor",))


def act(state: BCState, obs: Array, key: Array = None) -> Array:
    """obs [..., A, obs_dim] -> actions [..., A, act_dim] in [-1, 1]."""
    key = jax.random.PRNGKey(0) if key is None else key
    actor = state.hp.actor_module
    return common.act_per_agent(state.hp, lambda p, o, k: jnp.clip(actor.apply(p, o), -1.0, 1.0),
                                state.actor.params, obs, key)
