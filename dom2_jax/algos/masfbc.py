"""MA-SfBC: per-agent SfBC (Chen et al. 2022): a diffusion behaviour model plus a critic that
selects among sampled actions.

Per agent j (independent learners, like DOM2):
  behaviour: the DOM2 noise network (``dom2_jax.diffusion``: residual U-Net, VP SDE) trained
             with the eps loss only (Eq. 3, no Q term: that is the difference from DOM2).
  critic:    in-sample (IQL-style expectile) value learning, so no action outside the dataset
             is ever evaluated during training and no diffusion sampling is needed in the update:
               V(o)   <- expectile_tau of min_k Qbar_k(o, a) over dataset actions (tau = 0.7)
               L(phi) = sum_k E (r + gamma (1 - d) V(o') - Q_k(o, a))^2
             (SfBC itself learns Q by iterated "in-support" softmax planning over behaviour
             samples; the expectile critic is the cheaper in-support estimator used by IDQL
             with the same diffusion-behaviour + selection scheme. See notes/baselines.md.)
  act:       K candidates a_1..a_K ~ behaviour(. | o) (DPM-Solver, clipped), scored by
             min_k Q_k(o, a_i); ``selection="softmax"`` samples i with probability
             softmax(z_i / temperature), z = Q standardised over the K candidates (so the
             temperature is free of the task's reward scale; SfBC's exp(alpha Q) selection);
             ``selection="argmax"`` takes the best candidate.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Tuple

import flax
import jax
import jax.numpy as jnp
import optax
from flax.training.train_state import TrainState

from dom2_jax import diffusion
from dom2_jax.algos import common
from dom2_jax.algos.common import make_coef  # noqa: F401  (make_coef(hp, **overrides))
from dom2_jax.algos.common import SELECTIONS, select, select_candidates  # noqa: F401  (masfbc.*)
from dom2_jax.algos.losses import expectile_loss, td_critic_loss
from dom2_jax.networks import MLP

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Hparams(common.HparamsBase, common.DiffusionActorModules):
    NAME = "MA-SfBC"
    COEF_NAMES = ("rho", "gamma", "expectile", "temperature")

    rho: float = 0.005                   # critic target rate
    gamma: float = 0.99                  # discount; the MPE configs use 0.95
    expectile: float = 0.7               # IQL's locomotion value
    # Behaviour model: the same fields and defaults as DOM2's diffusion policy.
    num_solver_steps: int = 5
    solver_order: int = 1
    solver_grid: str = "logsnr"
    t_end: float = 1e-3
    beta_min: float = 0.1
    beta_max: float = 20.0
    noise_net: str = "residual"
    noise_hidden: Tuple[int, ...] = (512, 256, 128)
    # Critic and selection.
    critic_hidden: Tuple[int, ...] = (256, 256, 256)
    value_hidden: Tuple[int, ...] = (256, 256, 256)
    num_candidates: int = 32             # SfBC samples 32 actions per state at evaluation
    selection: str = "softmax"           # or "argmax"
    temperature: float = 0.2             # on Q standardised over the candidates (module doc)
    # Optimisation.
    batch_size: int = 256
    behavior_lr: float = 3e-4
    critic_lr: float = 3e-4
    value_lr: float = 3e-4
    grad_clip: float = 1.0

    def checks(self):
        return super().checks() + [
            (0.0 < self.expectile < 1.0, f"expectile must be in (0, 1), got {self.expectile}"),
            (self.num_candidates >= 1, "num_candidates must be >= 1"),
            (self.selection in SELECTIONS, f"selection must be one of {SELECTIONS}"),
            (self.temperature > 0, f"temperature must be > 0, got {self.temperature}"),
            (self.behavior_lr > 0, "behavior_lr must be > 0"),
        ] + self.diffusion_checks()

    @property
    def value_module(self):
        return common.module(MLP, tuple(self.value_hidden) + (1,))


def default_config():
    """The fields of ``Hparams`` with their defaults, as a ConfigDict."""
    return Hparams.default_config()


@flax.struct.dataclass
class SfBCState:
    """Array leaves are [num_agents, ...]."""

    behavior: TrainState
    critic: TrainState
    critic_target: Any       # parameters
    value: TrainState
    step: Array
    coef: Dict[str, Array]
    hp: Hparams = flax.struct.field(pytree_node=False)


State = SfBCState
_FIELDS = ("behavior", "critic", "critic_target", "value")


def init(key: Array, config, num_agents: int, obs_dim: int, act_dim: int) -> SfBCState:
    hp = Hparams.resolve(config, num_agents, obs_dim, act_dim)
    a0, o0, t0 = jnp.zeros((1, act_dim)), jnp.zeros((1, obs_dim)), jnp.zeros((1,))
    net, critic, value = hp.noise_net_module, hp.critic_module, hp.value_module

    def init_agent(k):
        kb, kc, kv = jax.random.split(k, 3)
        return (hp.train_state(net, net.init(kb, a0, o0, t0), hp.behavior_lr),
                hp.train_state(critic, critic.init(kc, o0, a0), hp.critic_lr),
                hp.train_state(value, value.init(kv, o0), hp.value_lr))

    beh, crit, val = jax.vmap(init_agent)(jax.random.split(key, num_agents))
    return SfBCState(behavior=beh, critic=crit, critic_target=crit.params, value=val,
                     step=jnp.zeros((), jnp.int32), coef=make_coef(hp), hp=hp)


# ----------------------------------------------------------------------------- sampling
def sample_candidates(hp: Hparams, behavior_params, obs: Array, key: Array, num: int) -> Array:
    """``num`` behaviour samples per observation: obs [..., obs_dim] -> [..., num, act_dim]."""
    obs_k = jnp.broadcast_to(obs[..., None, :], obs.shape[:-1] + (num, obs.shape[-1]))
    x_T = jax.random.normal(key, obs_k.shape[:-1] + (hp.act_dim,), obs.dtype)
    eps_fn = lambda x, t: hp.noise_net_module.apply(behavior_params, x, obs_k, t)
    a = diffusion.dpm_solver_sample(eps_fn, x_T, hp.schedule, hp.num_solver_steps,
                                    order=hp.solver_order, t_end=hp.t_end, grid=hp.solver_grid)
    return jnp.clip(a, -1.0, 1.0)


def agent_act(hp: Hparams, coef, behavior_params, critic_params, obs: Array, key: Array):
    """One agent: obs [M, obs_dim] -> [M, act_dim], critic-weighted choice among K samples."""
    k_s, k_c = jax.random.split(key)
    cand = sample_candidates(hp, behavior_params, obs, k_s, hp.num_candidates)  # [M, K, d]
    obs_k = jnp.broadcast_to(obs[:, None], cand.shape[:-1] + obs.shape[-1:])
    q = jnp.min(hp.critic_module.apply(critic_params, obs_k, cand), axis=0)      # [M, K]
    return select_candidates(cand, q, k_c, hp.selection, coef["temperature"])


def act(state: SfBCState, obs: Array, key: Array) -> Array:
    """obs [..., A, obs_dim] -> actions [..., A, act_dim] in [-1, 1]. Jittable."""
    hp = state.hp
    return common.act_per_agent(
        hp, lambda p, o, k: agent_act(hp, state.coef, p[0], p[1], o, k),
        (state.behavior.params, state.critic.params), obs, key)


# ----------------------------------------------------------------------------- update
def agent_update(hp: Hparams, coef, params, batch, key, step):
    del step
    obs, actions = batch["obs"], batch["actions"]
    # Behaviour model: eps loss only.
    net = hp.noise_net_module
    behavior, b_loss, _, b_grads = common.apply_loss(params["behavior"], lambda p: (
        diffusion.eps_loss(lambda x, t: net.apply(p, x, obs, t), actions, key, hp.schedule,
                           t_end=hp.t_end), None))
    # Value: expectile of the target critics' min over dataset actions.
    q_t = jax.lax.stop_gradient(jnp.min(
        hp.critic_module.apply(params["critic_target"], obs, actions), axis=0))
    vmod = hp.value_module
    value, v_loss, _, _ = common.apply_loss(params["value"], lambda p: (
        expectile_loss(q_t - vmod.apply(p, obs)[..., 0], coef["expectile"]), None))
    # Critics: TD toward r + gamma (1 - d) V(o').
    target_q = jax.lax.stop_gradient(
        batch["rewards"] + coef["gamma"] * (1.0 - batch["dones"])
        * vmod.apply(value.params, batch["next_obs"])[..., 0])
    critic, c_loss, c_aux, c_grads = common.apply_loss(
        params["critic"], lambda p: td_critic_loss(hp, coef, p, batch, target_q))
    new = dict(behavior=behavior, value=value, critic=critic,
               critic_target=optax.incremental_update(critic.params, params["critic_target"],
                                                      coef["rho"]))
    metrics = {"behavior_loss": b_loss, "value_loss": v_loss, "critic_loss": c_loss,
               "behavior_grad_norm": optax.tree.norm(b_grads),
               "critic_grad_norm": optax.tree.norm(c_grads), **c_aux}
    return new, metrics


def update(state: SfBCState, batch: Dict[str, Array], key: Array):
    """One update of all agents (vmap of ``agent_update``); batch arrays [A, B, ...]."""
    return common.update_agents(state, batch, key, agent_update, _FIELDS)
