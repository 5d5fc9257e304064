"""Independent TD3 (Fujimoto et al. 2018) for the behaviour policies of the offline datasets.

One decentralised actor pi_j(o_j) and twin critics Q_j^{1,2}(o_j, a_j) per agent j, trained on
agent j's own reward r_j (independent learners; the paper: "independent TD3 with decentralized
actors and critics"). All agents' parameters are stacked on axis 0 and every network call /
update is ``vmap``ped over that axis.

The whole online loop is one jitted program, ``train_chunk(state) -> (state, metrics)``: a
``lax.scan`` over ``iters_per_chunk`` iterations, each of which

  1. steps ``num_envs`` environments (vmapped) with exploration actions
     ``clip(pi(o) + N(0, expl_noise^2), -1, 1)`` (uniform actions for the first ``start_steps``
     transitions), resetting the environments whose episode ended;
  2. writes the ``num_envs`` transitions into a device ring buffer (fixed-size arrays
     ``[buffer_size, num_agents, ...]``);
  3. runs ``updates_per_iter`` TD3 updates (once ``learning_starts`` transitions are stored):
     critic: y = r + gamma (1 - done) min_k Qbar_k(o', clip(pibar(o') + clip(N(0, s^2), -c, c),
     -1, 1)); actor (every ``policy_delay`` updates): maximise Q_1(o, pi(o)); targets soft-updated
     with rate ``tau`` at actor updates.

Our environments never terminate (the episode end is a time-limit truncation), so every stored
``done`` is False and TD3 always bootstraps; ``done`` from ``env.step`` only triggers the reset.

The networks are ``flax`` TrainStates and the pieces of the update are the offline learners'
(``dom2_jax.algos``): ``td3_family.target_actions`` (target smoothing), ``losses.td_target`` and
``losses.td_critic_loss``, ``common.apply_loss``, ``common.make_optimizer`` and
``optax.incremental_update``; this class adds the environment loop, the replay buffer and the
MATD3-style central critics.

Usage::

    td3 = TD3(env, default_config(env.name))
    state = td3.init(jax.random.PRNGKey(0))
    for _ in range(n):
        state, metrics = td3.train_chunk(state)         # jitted, donates the state
        scores = td3.evaluate(state.actor.params, key)  # [eval_episodes] env scores

``policy_fn`` / ``policy_params`` give the behaviour policy shared by evaluation and dataset
generation (deterministic, Gaussian-noised or uniform, chosen by traced values: one compiled
rollout program serves all of them).
"""
from __future__ import annotations

import functools
from typing import Any, Dict, Optional, Tuple

import distrax
import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax.training.train_state import TrainState

from dom2_jax.algos.common import apply_loss, make_optimizer
from dom2_jax.algos.losses import td_critic_loss, td_target
from dom2_jax.algos.td3_family import target_actions
from dom2_jax.envs.api import Env
from dom2_jax.envs.rollout import rollout
from dom2_jax.networks import DeterministicActor, DoubleCritic

Array = jax.Array


# ----------------------------------------------------------------------------- config
def default_config(env_name: str = "mpe_spread") -> ml_collections.ConfigDict:
    """TD3 hyper-parameters per environment family.

    MPE: OMAR's MPE settings (hidden 64, tau 0.01, gamma 0.95, batch 1024) and gradient-norm
    clipping 0.5 (MADDPG's MPE code), but Adam lr 1e-3 instead of OMAR's 0.01: at 0.01 the
    independent learners on spread fell into a local optimum (all agents piling onto one
    landmark, score ~63 < random ~160) and stayed there for 200k transitions, while 1e-3
    left it after ~150k and reached the expert level (see notes/datasets.md).
    HalfCheetah: OMAR/TD3 MuJoCo settings (hidden 256, lr 3e-4, batch 256, gamma 0.99,
    tau 0.005, one update per environment transition) with centralised critics
    Q_j(s, a_1, a_2) on the global state (MATD3-style; actors stay decentralised).
    """
    c = ml_collections.ConfigDict()
    c.hidden_dims = (64, 64)
    c.actor_lr = 1e-3           # OMAR: 0.01 (see the docstring)
    c.critic_lr = 1e-3
    c.tau = 0.01
    c.gamma = 0.95
    c.batch_size = 1024
    c.grad_clip = 0.5            # global-norm clip per agent and network; 0 disables
    c.buffer_size = 1_000_000    # transitions (ring buffer); multiple of num_envs
    c.num_envs = 32              # parallel environments stepped per iteration
    c.updates_per_iter = 1       # TD3 updates per iteration (per num_envs transitions)
    c.iters_per_chunk = 500      # iterations per jitted train_chunk call
    c.expl_noise = 0.1           # std of the Gaussian exploration noise
    c.policy_noise = 0.2         # target policy smoothing std
    c.noise_clip = 0.5
    c.policy_delay = 2           # actor/target update every policy_delay critic updates
    c.start_steps = 25_000       # transitions with uniform random actions at the start
    c.learning_starts = 25_000   # transitions stored before the first update
    c.eval_episodes = 100
    c.central_critic = False     # True: MATD3-style critics Q_j(s, a_1..a_A), s = global state
    if env_name.startswith("mamujoco"):
        c.hidden_dims = (256, 256)
        c.actor_lr = 3e-4
        c.critic_lr = 3e-4
        c.tau = 0.005
        c.gamma = 0.99
        c.batch_size = 256
        c.grad_clip = 0.0
        c.num_envs = 8
        c.updates_per_iter = 8
        c.iters_per_chunk = 125       # 1000 transitions per chunk
        c.start_steps = 10_000
        c.learning_starts = 10_000
        c.eval_episodes = 10
        # Independent critics Q_j(o_j, a_j) stalled near 0 (standing still) for 90k
        # transitions: the reward is the body's forward velocity, which no obsk-0 agent
        # observes. Central critics on the global state (CTDE, MATD3) see it.
        c.central_critic = True
    return c


def config_to_dict(config: ml_collections.ConfigDict) -> dict:
    d = config.to_dict()
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


# fields added after policies were shipped, with the value those runs used
_LATER_FIELDS = {"central_critic": False}


def config_from_dict(d: dict) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict({**_LATER_FIELDS, **dict(d)})
    c.hidden_dims = tuple(c.hidden_dims)
    return c


def same_config(a: dict, b: dict) -> bool:
    """Config dicts equal once fields added later are filled with their old defaults."""
    return {**_LATER_FIELDS, **a} == {**_LATER_FIELDS, **b}


# ----------------------------------------------------------------------------- state
@flax.struct.dataclass
class TD3State:
    actor: TrainState        # stacked [A, ...]
    critic: TrainState
    actor_target: Any        # parameters
    critic_target: Any
    buffer: Dict[str, Array]  # obs/next_obs [cap, A, obs_dim], actions [cap, A, act],
    #                           rewards [cap, A]
    buf_ptr: Array            # next write index (int32)
    buf_size: Array           # stored transitions (int32)
    env_state: Any            # [E, ...]
    obs: Array                # [E, A, obs_dim]
    ep_score: Array           # [E] running score of the current episodes
    last_score: Array         # [] mean score of the last finished batch of training episodes
    env_steps: Array          # [] transitions collected so far (int32)
    num_updates: Array        # [] critic updates so far (int32)
    key: Array


def _agents_first(x):
    """[..., A, d] -> [A, ..., d]."""
    return jnp.moveaxis(x, -2, 0)


def _agents_last(x):
    """[A, ..., d] -> [..., A, d]."""
    return jnp.moveaxis(x, 0, -2)


def _joint(x):
    """[A, B, d] -> [B, A * d] (the joint action / observation of a central critic)."""
    return _agents_last(x).reshape(x.shape[1], -1)


def flatten_params(params) -> Dict[str, np.ndarray]:
    """Pytree of arrays -> {"a/b/c": np.ndarray} (the .npz layout of shipped policies)."""
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(params), sep="/")
    return {k: np.asarray(v) for k, v in flat.items()}


def unflatten_params(flat: Dict[str, Any]):
    return flax.traverse_util.unflatten_dict({k: jnp.asarray(v) for k, v in flat.items()},
                                             sep="/")


class TD3:
    """Independent TD3 on one ``dom2_jax.envs.api.Env``; see the module docstring."""

    def __init__(self, env: Env, config: ml_collections.ConfigDict):
        self.env = env
        self.config = config
        c = config
        if c.buffer_size % c.num_envs:
            raise ValueError(f"buffer_size {c.buffer_size} must be a multiple of num_envs "
                             f"{c.num_envs}")
        if c.iters_per_chunk * c.num_envs > c.buffer_size:
            raise ValueError("one chunk must fit in the replay buffer")
        self.num_agents, self.obs_dim, self.act_dim = env.num_agents, env.obs_dim, env.act_dim
        self.central = bool(c.get("central_critic", False))
        if self.central:
            o, st = jax.eval_shape(env.reset, jax.random.PRNGKey(0))
            self.state_dim = int(jax.eval_shape(env.global_state, st, o).shape[-1])
        self.actor_net = DeterministicActor(self.act_dim, tuple(c.hidden_dims))
        self.critic_net = DoubleCritic(tuple(c.hidden_dims))
        self.critic_module = self.critic_net  # what losses.td_critic_loss reads from its hp
        self.actor_tx = make_optimizer(float(c.actor_lr), float(c.grad_clip or 0.0))
        self.critic_tx = make_optimizer(float(c.critic_lr), float(c.grad_clip or 0.0))
        self.train_chunk = jax.jit(self._train_chunk, donate_argnums=0)
        self.init = jax.jit(self._init)
        self._eval_fn = None

    # ------------------------------------------------------------------ networks
    def init_actor(self, key: Array):
        """Stacked actor params [A, ...] (also used for shape templates)."""
        keys = jax.random.split(key, self.num_agents)
        dummy = jnp.zeros((self.obs_dim,), jnp.float32)
        return jax.vmap(lambda k: self.actor_net.init(k, dummy))(keys)

    def actor_apply(self, actor_params, obs):
        """obs [..., A, obs_dim] -> actions [..., A, act_dim] (deterministic)."""
        out = jax.vmap(self.actor_net.apply)(actor_params, _agents_first(obs))
        return _agents_last(out)

    # ------------------------------------------------------------------ init
    def _init(self, key: Array) -> TD3State:
        c, env = self.config, self.env
        k_actor, k_critic, k_env, key = jax.random.split(key, 4)
        actor = self.init_actor(k_actor)
        dummy_o = jnp.zeros((self.obs_dim,), jnp.float32)
        dummy_a = jnp.zeros((self.act_dim,), jnp.float32)
        if self.central:
            dummy_o = jnp.zeros((self.state_dim,), jnp.float32)
            dummy_a = jnp.zeros((self.num_agents * self.act_dim,), jnp.float32)
        critic = jax.vmap(lambda k: self.critic_net.init(k, dummy_o, dummy_a))(
            jax.random.split(k_critic, self.num_agents))
        obs, env_state = jax.vmap(env.reset)(jax.random.split(k_env, c.num_envs))
        cap, na = c.buffer_size, self.num_agents
        buffer = {
            "obs": jnp.zeros((cap, na, self.obs_dim), jnp.float32),
            "actions": jnp.zeros((cap, na, self.act_dim), jnp.float32),
            "rewards": jnp.zeros((cap, na), jnp.float32),
            "next_obs": jnp.zeros((cap, na, self.obs_dim), jnp.float32),
        }
        if self.central:  # global state features of the central critics
            buffer["state"] = jnp.zeros((cap, self.state_dim), jnp.float32)
            buffer["next_state"] = jnp.zeros((cap, self.state_dim), jnp.float32)
        zero_i = jnp.zeros((), jnp.int32)
        return TD3State(
            actor=jax.vmap(lambda p: TrainState.create(apply_fn=self.actor_net.apply, params=p,
                                                       tx=self.actor_tx))(actor),
            critic=jax.vmap(lambda p: TrainState.create(apply_fn=self.critic_net.apply, params=p,
                                                        tx=self.critic_tx))(critic),
            actor_target=actor, critic_target=critic,
            buffer=buffer, buf_ptr=zero_i, buf_size=zero_i, env_state=env_state, obs=obs,
            ep_score=jnp.zeros((c.num_envs,), jnp.float32),
            last_score=jnp.full((), jnp.nan, jnp.float32), env_steps=zero_i,
            num_updates=zero_i, key=key)

    # ------------------------------------------------------------------ update
    def _critic_regression(self, critic: TrainState, o, a, r, o2, a2, critic_target):
        """One step of the twin critics on sum_k E (Q_k(o, a) - y)^2, y = r + gamma
        min_k Qbar_k(o2, a2) (never a true terminal: see the module docstring)."""
        y = td_target(self.critic_net, critic_target,
                      {"next_obs": o2, "rewards": r, "dones": jnp.zeros_like(r)}, a2,
                      self.config.gamma)
        critic, loss, aux, _ = apply_loss(critic, lambda p: td_critic_loss(
            self, None, p, {"obs": o, "actions": a}, y))
        return critic, loss, aux["q_data"]

    def _agent_critic_step(self, critic, actor_target, critic_target, batch, key):
        c = self.config
        a2 = target_actions(self.actor_net.apply, actor_target, batch["next_obs"], key,
                            c.policy_noise, c.noise_clip)
        return self._critic_regression(critic, batch["obs"], batch["actions"], batch["rewards"],
                                       batch["next_obs"], a2, critic_target)

    def _agent_actor_step(self, actor: TrainState, critic_params, obs):
        actor, loss, _, _ = apply_loss(actor, lambda p: (-self.critic_net.apply(
            critic_params, obs, self.actor_net.apply(p, obs))[0].mean(), None))
        return actor, loss

    def _central_actor_step(self, actor: TrainState, critic_params, obs_j, o, a, j):
        """Agent j's actor step: Q_j^1(s, a with agent j's slot replaced by pi_j(o_j))."""
        B = o.shape[0]

        def loss_fn(p):
            a_j = self.actor_net.apply(p, obs_j)
            joint = a.reshape(B, self.num_agents, self.act_dim).at[:, j].set(a_j)
            return -self.critic_net.apply(critic_params, o, joint.reshape(B, -1))[0].mean(), None

        actor, loss, _, _ = apply_loss(actor, loss_fn)
        return actor, loss

    def _critic_steps(self, state: TD3State, batch, key):
        """All agents' critic steps: independent (Q_j(o_j, a_j)) or central (MATD3)."""
        c, A = self.config, self.num_agents
        if not self.central:
            return jax.vmap(self._agent_critic_step)(
                state.critic, state.actor_target, state.critic_target, batch,
                jax.random.split(key, A))
        a2 = target_actions(jax.vmap(self.actor_net.apply), state.actor_target,
                            batch["next_obs"], key, c.policy_noise, c.noise_clip)
        return jax.vmap(self._critic_regression, in_axes=(0, None, None, 0, None, None, 0))(
            state.critic, batch["state"], _joint(batch["actions"]), batch["rewards"],
            batch["next_state"], _joint(a2), state.critic_target)

    def _actor_steps(self, state: TD3State, critic_params, batch):
        if not self.central:
            return jax.vmap(self._agent_actor_step)(state.actor, critic_params, batch["obs"])
        return jax.vmap(self._central_actor_step, in_axes=(0, 0, 0, None, None, 0))(
            state.actor, critic_params, batch["obs"], batch["state"],
            _joint(batch["actions"]), jnp.arange(self.num_agents))

    def update(self, state: TD3State, key: Array) -> Tuple[TD3State, Dict[str, Array]]:
        """One TD3 update of every agent from a uniform batch of the replay buffer."""
        c = self.config
        k_idx, k_noise = jax.random.split(key)
        idx = jax.random.randint(k_idx, (c.batch_size,), 0, jnp.maximum(state.buf_size, 1))
        batch = {k: v[idx] if k in ("state", "next_state")          # [B, state_dim]
                 else _agents_first(v[idx]) if v.ndim == 3 else v[idx].T   # [A, B, ...]
                 for k, v in state.buffer.items()}
        critic, c_loss, q_mean = self._critic_steps(state, batch, k_noise)
        num_updates = state.num_updates + 1

        def actor_and_targets(_):
            actor, a_loss = self._actor_steps(state, critic.params, batch)
            return (actor, optax.incremental_update(actor.params, state.actor_target, c.tau),
                    optax.incremental_update(critic.params, state.critic_target, c.tau),
                    a_loss.mean())

        def skip(_):
            return (state.actor, state.actor_target, state.critic_target,
                    jnp.full((), jnp.nan, jnp.float32))

        actor, actor_target, critic_target, a_loss = jax.lax.cond(
            num_updates % c.policy_delay == 0, actor_and_targets, skip, None)
        state = state.replace(actor=actor, critic=critic, actor_target=actor_target,
                              critic_target=critic_target, num_updates=num_updates)
        return state, {"critic_loss": c_loss.mean(), "q": q_mean.mean(), "actor_loss": a_loss}

    # ------------------------------------------------------------------ online loop
    def _iteration(self, state: TD3State, _):
        c, env, E = self.config, self.env, self.config.num_envs
        key, k_act, k_env, k_reset, k_upd = jax.random.split(state.key, 5)
        # 1. act and step
        k_noise, k_unif = jax.random.split(k_act)
        a = self.actor_apply(state.actor.params, state.obs)
        a = jnp.clip(distrax.Normal(a, c.expl_noise).sample(seed=k_noise), -1.0, 1.0)
        a_rand = jax.random.uniform(k_unif, a.shape, jnp.float32, -1.0, 1.0)
        a = jnp.where(state.env_steps < c.start_steps, a_rand, a)
        next_obs, env_state, reward, done, _ = jax.vmap(env.step)(
            jax.random.split(k_env, E), state.env_state, a)
        # 2. store (ring buffer; buffer_size is a multiple of E so a write never wraps)
        new = {"obs": state.obs, "actions": a, "rewards": reward, "next_obs": next_obs}
        if self.central:
            new["state"] = jax.vmap(env.global_state)(state.env_state, state.obs)
            new["next_state"] = jax.vmap(env.global_state)(env_state, next_obs)
        buffer = {k: jax.lax.dynamic_update_slice_in_dim(state.buffer[k], new[k], state.buf_ptr,
                                                         axis=0) for k in new}
        buf_ptr = (state.buf_ptr + E) % c.buffer_size
        buf_size = jnp.minimum(state.buf_size + E, c.buffer_size)
        ep_score = state.ep_score + env.score(reward)
        n_done = done.sum()
        last_score = jnp.where(n_done > 0, jnp.where(done, ep_score, 0.0).sum()
                               / jnp.maximum(n_done, 1), state.last_score)
        ep_score = jnp.where(done, 0.0, ep_score)

        # reset the finished environments (a cond: MJX resets are not free)
        def do_reset(args):
            obs, es = args
            r_obs, r_state = jax.vmap(env.reset)(jax.random.split(k_reset, E))
            sel = lambda x, y: jnp.where(done.reshape(done.shape + (1,) * (x.ndim - 1)), x, y)
            return jax.tree.map(sel, r_obs, obs), jax.tree.map(sel, r_state, es)

        obs, env_state = jax.lax.cond(jnp.any(done), do_reset, lambda args: args,
                                      (next_obs, env_state))
        state = state.replace(buffer=buffer, buf_ptr=buf_ptr, buf_size=buf_size,
                              env_state=env_state, obs=obs, ep_score=ep_score,
                              last_score=last_score, env_steps=state.env_steps + E, key=key)

        # 3. updates
        def do_updates(s):
            s, m = jax.lax.scan(lambda s_, k: self.update(s_, k), s,
                                jax.random.split(k_upd, c.updates_per_iter))
            return s, jax.tree.map(lambda x: jnp.nanmean(x), m)

        def no_updates(s):
            nan = jnp.full((), jnp.nan, jnp.float32)
            return s, {"critic_loss": nan, "q": nan, "actor_loss": nan}

        return jax.lax.cond(state.buf_size >= c.learning_starts, do_updates, no_updates, state)

    def _train_chunk(self, state: TD3State):
        state, m = jax.lax.scan(self._iteration, state, None, length=self.config.iters_per_chunk)
        metrics = jax.tree.map(jnp.nanmean, m)
        metrics["train_score"] = state.last_score
        return state, metrics

    # ------------------------------------------------------------------ behaviour policy
    def policy_params(self, actor_params=None, sigma: float = 0.0, uniform: bool = False):
        """Params of ``policy_fn``: the actor (zeros if None, for the uniform policy), the
        Gaussian noise std and the uniform flag (traced, so all variants share one program)."""
        if actor_params is None:
            actor_params = jax.tree.map(jnp.zeros_like, jax.eval_shape(
                self.init_actor, jax.random.PRNGKey(0)))
        return {"actor": actor_params, "sigma": jnp.asarray(sigma, jnp.float32),
                "uniform": jnp.asarray(uniform, jnp.bool_)}

    @functools.cached_property
    def policy_fn(self):
        def policy(params, obs, key):
            k_n, k_u = jax.random.split(key)
            a = self.actor_apply(params["actor"], obs)
            a = jnp.clip(distrax.Normal(a, params["sigma"]).sample(seed=k_n), -1.0, 1.0)
            u = jax.random.uniform(k_u, a.shape, jnp.float32, -1.0, 1.0)
            return jnp.where(params["uniform"], u, a)
        return policy

    def evaluate(self, actor_params, key, num_episodes: Optional[int] = None, sigma=0.0,
                 uniform=False) -> np.ndarray:
        """Episode scores [num_episodes] of the (deterministic by default) policy."""
        n = int(num_episodes or self.config.eval_episodes)
        out = rollout(self.env, self.policy_fn, self.policy_params(actor_params, sigma, uniform),
                      key, n)
        return np.asarray(out["score"])


def buffer_slice(state: TD3State, start: int, count: int) -> Dict[str, np.ndarray]:
    """Host copy of ``count`` transitions written from ring index ``start`` on (wraps)."""
    cap = state.buffer["obs"].shape[0]
    idx = (np.arange(count) + start) % cap
    return {k: np.asarray(v[idx]) for k, v in state.buffer.items()}
