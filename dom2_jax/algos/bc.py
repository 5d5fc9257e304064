"""BC: per-agent deterministic behaviour cloning, pi_j = tanh(MLP(o_j)) regressed on a_j (MSE).

Minimises E mean_d (pi(o) - a)^2, whose minimiser is the behaviour policy's mean action
E[a | o] (inside the tanh range). Same state layout and API as the other algorithms.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Tuple

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from dom2_jax.algos import common
from dom2_jax.networks import DeterministicActor

Array = jax.Array


def default_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.actor_hidden = (256, 256)
    c.batch_size = 256
    c.actor_lr = 3e-4
    c.grad_clip = 0.0
    c.gamma = 0.99               # unused; present so the shared task defaults apply
    return c


@dataclasses.dataclass(frozen=True)
class Hparams(common.HparamsBase):
    NAME = "BC"
    COEF_NAMES = ()

    actor_hidden: Tuple[int, ...]
    batch_size: int
    actor_lr: float
    grad_clip: float
    gamma: float

    @property
    def actor_module(self):
        return DeterministicActor(self.act_dim, self.actor_hidden)


@flax.struct.dataclass
class BCState:
    actor: Any
    actor_opt: Any
    step: Array
    coef: Dict[str, Array]   # empty: BC has no dynamic coefficients
    hp: Hparams = flax.struct.field(pytree_node=False)


State = BCState


def make_coef(hp: Hparams, **overrides) -> Dict[str, Array]:
    return common.make_coef(hp, **overrides)


def init(key: Array, config, num_agents: int, obs_dim: int, act_dim: int) -> BCState:
    hp = config if isinstance(config, Hparams) else Hparams.from_config(
        config, num_agents, obs_dim, act_dim)
    o0 = jnp.zeros((1, obs_dim))

    def init_agent(k):
        p = hp.actor_module.init(k, o0)
        return p, hp.optimizer(hp.actor_lr).init(p)

    actor, opt = jax.vmap(init_agent)(jax.random.split(key, num_agents))
    return BCState(actor=actor, actor_opt=opt, step=jnp.zeros((), jnp.int32),
                   coef=make_coef(hp), hp=hp)


def actor_loss(hp: Hparams, actor_params, batch):
    pi = hp.actor_module.apply(actor_params, batch["obs"])
    return jnp.mean(jnp.square(pi - batch["actions"]))


def agent_update(hp, coef, params, batch, key, step):
    del coef, key, step
    loss, grads = jax.value_and_grad(actor_loss, argnums=1)(hp, params["actor"], batch)
    upd, opt = hp.optimizer(hp.actor_lr).update(grads, params["actor_opt"], params["actor"])
    return (dict(actor=optax.apply_updates(params["actor"], upd), actor_opt=opt),
            {"actor_loss": loss, "actor_grad_norm": optax.tree.norm(grads)})


def update(state: BCState, batch: Dict[str, Array], key: Array):
    """One update of all agents (vmap of ``agent_update``); batch arrays [A, B, ...]."""
    return common.update_agents(state, batch, key, agent_update, ("actor", "actor_opt"))


def act(state: BCState, obs: Array, key: Array = None) -> Array:
    """obs [..., A, obs_dim] -> actions [..., A, act_dim] in [-1, 1]."""
    return common.deterministic_act(state, obs, key)

