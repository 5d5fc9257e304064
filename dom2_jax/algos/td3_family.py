"""The TD3-style deterministic actor-critic learner of MA-CQL, OMAR and MA-TD3+BC.

Per agent j, with a tanh actor pi_j(o_j) and twin critics Q_j^{1,2}(o_j, a_j):

  critic: y = r + gamma (1 - d) min_k Qbar_k(o', a'),  a' = ``target_actions`` (pibar(o') with
          TD3's clipped smoothing noise when ``policy_noise > 0``); the loss is CQL(H)
          (``losses.critic_loss``, with ``noisy_proposals`` around pi(o) and pi(o') when
          ``cql_policy_noise > 0``) for ``CQLHparams``, else the plain TD loss;
  actor:  the algorithm's own loss ``actor_loss_fn(hp, coef, actor_params, critic_params,
          batch, key) -> (loss, aux)`` against the freshly updated critic, applied with the
          soft target updates on steps where ``step % policy_delay == 0``.

Each algorithm module supplies its ``Hparams`` (a subclass of ``ActorCriticHparams`` or
``CQLHparams`` that re-declares the fields whose default differs) and its actor loss;
``dom2_jax.online.td3`` (the behaviour-policy learner) uses ``target_actions`` and ``td_target``.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, ClassVar, Dict, Tuple

import flax
import jax
import jax.numpy as jnp
import optax
from flax.training.train_state import TrainState

from dom2_jax.algos import common
from dom2_jax.algos.losses import critic_loss, noisy_proposals, td_critic_loss, td_target
from dom2_jax.networks import DeterministicActor, DoubleCritic

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class ActorCriticHparams(common.HparamsBase):
    """Fields of the deterministic-actor / double-critic learners; defaults are TD3's (the
    algorithms re-declare the ones they change)."""

    USES_CQL: ClassVar[bool] = False

    rho: float = 0.005                   # target update rate (TD3's tau)
    gamma: float = 0.99                  # discount; the MPE configs use OMAR's 0.95
    actor_hidden: Tuple[int, ...] = (256, 256)
    critic_hidden: Tuple[int, ...] = (256, 256)
    policy_noise: float = 0.2            # TD3 target policy smoothing std (0: none)
    noise_clip: float = 0.5              # clip of that noise
    policy_delay: int = 2                # actor and targets every policy_delay critic updates
    batch_size: int = 256
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    grad_clip: float = 0.0               # global-norm clip per network (<= 0: none)

    def checks(self):
        return super().checks() + [
            (self.policy_delay >= 1, f"policy_delay must be >= 1, got {self.policy_delay}"),
            (self.policy_noise >= 0 and self.noise_clip >= 0,
             "policy_noise and noise_clip must be >= 0"),
        ]

    @property
    def actor_module(self):
        return common.module(DeterministicActor, self.act_dim, self.actor_hidden)

    @property
    def critic_module(self):
        return common.module(DoubleCritic, self.critic_hidden)


@dataclasses.dataclass(frozen=True)
class CQLHparams(ActorCriticHparams):
    """Actor-critic with CQL(H) critics (MA-CQL, OMAR); defaults are OMAR's MuJoCo code's."""

    USES_CQL: ClassVar[bool] = True

    policy_noise: float = 0.0            # OMAR's TD3 has no target smoothing ...
    policy_delay: int = 1                # ... and updates the actor every step
    grad_clip: float = 0.5               # OMAR clips both networks' gradient norms at 0.5
    zeta: float = 1.0                    # CQL weight (OMAR's cql_alpha; tuned per task/quality)
    num_cql_actions: int = 10            # M uniform actions in the logsumexp
    cql_density_correction: bool = True  # subtract log 0.5^d (OMAR code) and log M (constant)
    act_reg: float = 1e-3                # weight of mean(pi(o)^2) in the actor loss (OMAR code)
    # > 0: the logsumexp also takes num_cql_actions actions pi(o) + N(0, s^2) and as many
    # pi(o') + N(0, s^2), clipped to [-1, 1] (OMAR's MuJoCo code, s = 0.2); 0: uniform only.
    cql_policy_noise: float = 0.0

    def checks(self):
        return super().checks() + [
            (self.zeta >= 0, f"zeta must be >= 0, got {self.zeta}"),
            (self.num_cql_actions >= 1, "num_cql_actions must be >= 1"),
            (self.act_reg >= 0, "act_reg must be >= 0"),
            (self.cql_policy_noise >= 0, "cql_policy_noise must be >= 0"),
        ]


@flax.struct.dataclass
class ActorCriticState:
    """Training state of the TD3-style learners; array leaves are [num_agents, ...]."""

    actor: TrainState
    critic: TrainState
    actor_target: Any          # parameters
    critic_target: Any
    step: Array
    coef: Dict[str, Array]
    hp: Any = flax.struct.field(pytree_node=False)


FIELDS = ("actor", "critic", "actor_target", "critic_target")


def init(key: Array, hp: ActorCriticHparams) -> ActorCriticState:
    """Independent per-agent actor and double critic; targets start as copies."""
    actor_mod, critic_mod = hp.actor_module, hp.critic_module
    o0, a0 = jnp.zeros((1, hp.obs_dim)), jnp.zeros((1, hp.act_dim))

    def init_agent(k):
        ka, kc = jax.random.split(k)
        return (hp.train_state(actor_mod, actor_mod.init(ka, o0), hp.actor_lr),
                hp.train_state(critic_mod, critic_mod.init(kc, o0, a0), hp.critic_lr))

    actor, critic = jax.vmap(init_agent)(jax.random.split(key, hp.num_agents))
    return ActorCriticState(actor=actor, critic=critic, actor_target=actor.params,
                            critic_target=critic.params, step=jnp.zeros((), jnp.int32),
                            coef=common.make_coef(hp), hp=hp)


def target_actions(actor_apply: Callable, target_params, next_obs: Array, key: Array,
                   policy_noise: float, noise_clip: float) -> Array:
    """a' = clip(pibar(o') + clip(N(0, s^2), -c, c), -1, 1) (TD3's target smoothing; with
    s = 0 just pibar(o'))."""
    next_a = actor_apply(target_params, next_obs)
    if policy_noise > 0:
        noise = jnp.clip(policy_noise * jax.random.normal(key, next_a.shape), -noise_clip,
                         noise_clip)
        next_a = jnp.clip(next_a + noise, -1.0, 1.0)
    return next_a


def cql_policy_actions(actor_apply: Callable, actor_params, batch, key: Array, m: int,
                       sigma: float):
    """OMAR's MuJoCo CQL samples: m actions pi(o) + N(0, sigma^2) and m actions pi(o') +
    N(0, sigma^2), clipped to [-1, 1], with the log density of their noise. Returns (actions
    [2m, B, d], log_density [2m, B]), without gradient."""
    pi = jnp.stack([actor_apply(actor_params, batch["obs"]),
                    actor_apply(actor_params, batch["next_obs"])])  # [2, B, d]
    return noisy_proposals(pi, key, m, sigma)


def agent_update(hp: ActorCriticHparams, coef, params, batch, key, step,
                 actor_loss_fn: Callable):
    """One TD3-style update of ONE agent (see the module docstring)."""
    k_noise, k_cql, k_actor = jax.random.split(key, 3)
    actor, critic = params["actor"], params["critic"]
    next_a = target_actions(actor.apply_fn, params["actor_target"], batch["next_obs"], k_noise,
                            hp.policy_noise, hp.noise_clip)
    target_q = td_target(hp.critic_module, params["critic_target"], batch, next_a, coef["gamma"])
    if hp.USES_CQL and hp.cql_policy_noise > 0:
        k_cql, k_pi = jax.random.split(k_cql)
        extra = cql_policy_actions(actor.apply_fn, actor.params, batch, k_pi,
                                   hp.num_cql_actions, hp.cql_policy_noise)
        loss_fn = functools.partial(critic_loss, extra_actions=extra)
    else:
        loss_fn = critic_loss if hp.USES_CQL else td_critic_loss
    critic, c_loss, c_aux, c_grads = common.apply_loss(
        critic, lambda p: loss_fn(hp, coef, p, batch, target_q, k_cql))
    new_actor, a_loss, a_aux, a_grads = common.apply_loss(
        actor, lambda p: actor_loss_fn(hp, coef, p, critic.params, batch, k_actor))
    delayed = dict(
        actor=new_actor,
        actor_target=optax.incremental_update(new_actor.params, params["actor_target"],
                                              coef["rho"]),
        critic_target=optax.incremental_update(critic.params, params["critic_target"],
                                               coef["rho"]))
    if hp.policy_delay > 1:
        do = (step % hp.policy_delay) == 0
        delayed = common.tree_select(do, delayed, {k: params[k] for k in delayed})
    metrics = {"critic_loss": c_loss, "actor_loss": a_loss,
               "critic_grad_norm": optax.tree.norm(c_grads),
               "actor_grad_norm": optax.tree.norm(a_grads), **c_aux, **a_aux}
    return dict(critic=critic, **delayed), metrics


def update(state: ActorCriticState, batch: Dict[str, Array], key: Array,
           actor_loss_fn: Callable):
    """One update of all agents (vmap of ``agent_update``); batch arrays [A, B, ...]."""
    return common.update_agents(
        state, batch, key, functools.partial(agent_update, actor_loss_fn=actor_loss_fn), FIELDS)


def act(state: ActorCriticState, obs: Array, key: Array = None) -> Array:
    """a = pi_j(o_j) (tanh actor; no exploration noise): [..., A, obs_dim] -> [..., A, act_dim]."""
    hp = state.hp
    key = jax.random.PRNGKey(0) if key is None else key
    actor = hp.actor_module
    return common.act_per_agent(hp, lambda p, o, k: jnp.clip(actor.apply(p, o), -1.0, 1.0),
                                state.actor.params, obs, key)


def q1_of(hp, critic_params, obs: Array, actions: Array) -> Array:
    """Q_1(o, a) for one agent, broadcasting obs [..., obs_dim] against actions [..., M, d]
    when actions have one more axis than obs."""
    if actions.ndim == obs.ndim + 1:
        obs = jnp.broadcast_to(obs[..., None, :], actions.shape[:-1] + obs.shape[-1:])
    return hp.critic_module.apply(critic_params, obs, actions)[0]
