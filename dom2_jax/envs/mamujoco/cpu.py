"""Batched HalfCheetah 2x3 with numpy in/out: C MuJoCo (fast on CPU) or MJX (fast on GPU).

    env = make_batch_env(num_envs=64, backend="auto", obsk=0, shift=None)
    obs = env.reset(jax.random.PRNGKey(0))            # [B, 2, obs_dim] float32
    obs, reward, done, info = env.step(actions)         # actions [B, 2, 3]; reward [B, 2]

``HalfCheetahCPU`` steps B independent C MuJoCo models (one ``mj_step(m, d, frame_skip)`` call
per env and step; each env has its own ``MjModel`` so shifted envs coexist). It reuses the MJX
env's reset sampling, observation layout and reward (``common``), so the same key gives the same
initial states and shift factors on both backends; the physics agrees to float32 tolerance (see
tests/test_mamujoco.py). Use it for data generation / evaluation on CPU, where MJX is ~10x slower.
``HalfCheetahMJXBatch`` offers the same numpy interface over ``jit(vmap(HalfCheetah2x3.step))``.
"""
from __future__ import annotations

import functools
from typing import Dict, Tuple

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from dom2_jax.envs import portable
from dom2_jax.envs.mamujoco import common
from dom2_jax.envs.mamujoco.halfcheetah import HalfCheetah2x3

BACKENDS = ("auto", "mjx", "cpu")


@functools.lru_cache(maxsize=8)
def _batched_initial(reset_noise_scale: float, shift):
    # keyed on what sampling depends on, so configs differing elsewhere share one compile
    config = common.HalfCheetahConfig(reset_noise_scale=reset_noise_scale, shift=shift)
    return jax.jit(jax.vmap(lambda k: common.sample_initial(k, config)))


def sample_initial_batch(key, num_envs: int, config: common.HalfCheetahConfig):
    """(qpos [B, 9], qvel [B, 9], scalings [B, 3]) as numpy, exactly the values that
    ``jax.vmap(HalfCheetah2x3(...).reset)(jax.random.split(key, B))`` starts from."""
    keys = jax.random.split(key, num_envs)
    fn = _batched_initial(float(config.reset_noise_scale), config.shift)
    return tuple(np.array(x) for x in fn(keys))


class HalfCheetahCPU:
    """B HalfCheetah 2x3 envs on C MuJoCo (float64 physics, float32 obs/reward).

    Args:
      num_envs: batch size B.
      **config: as ``make("mamujoco_halfcheetah_2x3", ...)`` (obsk, shift, episode_length, ...).
    Attributes: ``num_agents`` 2, ``obs_dim``, ``act_dim`` 3, ``episode_length``, ``t`` [B],
    ``scalings`` [B, 3], ``qpos`` / ``qvel`` [B, 9] (float64 copies).
    """

    backend = "cpu"

    def __init__(self, num_envs: int, **config):
        self._mujoco = mujoco
        if int(num_envs) < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.num_envs = int(num_envs)
        self.config = common.HalfCheetahConfig(**config)
        self.num_agents, self.act_dim = len(common.PARTITION_2X3), 3
        self.agent_names = common.AGENT_NAMES
        self.episode_length = int(self.config.episode_length)
        self.obs_index = common.observation_index(self.config.obsk,
                                                  self.config.global_categories)
        self.obs_dim = int(self.obs_index.shape[1])
        self.models = [common.load_model() for _ in range(self.num_envs)]
        self.datas = [mujoco.MjData(m) for m in self.models]
        self._base = {f: getattr(self.models[0], f).copy() for f in common.SCALED_FIELDS}
        self.scalings = np.ones((self.num_envs, 3), np.float32)
        self.t = np.zeros((self.num_envs,), np.int32)

    @property
    def qpos(self) -> np.ndarray:
        return np.stack([d.qpos for d in self.datas])

    @property
    def qvel(self) -> np.ndarray:
        return np.stack([d.qvel for d in self.datas])

    def observe(self) -> np.ndarray:
        """[B, num_agents, obs_dim] float32."""
        return common.observe(self.qpos, self.qvel, self.obs_index, np).astype(np.float32)

    def _apply_scalings(self, i: int, scalings: np.ndarray):
        fields = common.scaled_model_fields(self._base, np.asarray(scalings, np.float64), np)
        for name, value in fields.items():
            getattr(self.models[i], name)[:] = value

    def set_state(self, qpos, qvel, scalings=None, t=0) -> np.ndarray:
        """Sets every env to qpos, qvel [B, 9] with factors scalings [B, 3] (ones if None), as
        gymnasium's ``set_state`` (mj_resetData, then qpos/qvel, then mj_forward).
        Returns obs [B, num_agents, obs_dim]."""
        qpos = np.asarray(qpos, np.float64).reshape(self.num_envs, common.NQ)
        qvel = np.asarray(qvel, np.float64).reshape(self.num_envs, common.NV)
        scalings = (np.ones((self.num_envs, 3)) if scalings is None
                    else np.asarray(scalings).reshape(self.num_envs, 3))
        mj = self._mujoco
        for i, (m, d) in enumerate(zip(self.models, self.datas)):
            self._apply_scalings(i, scalings[i])
            mj.mj_resetData(m, d)
            d.qpos[:] = qpos[i]
            d.qvel[:] = qvel[i]
            mj.mj_forward(m, d)
        self.scalings = scalings.astype(np.float32)
        self.t = np.broadcast_to(np.asarray(t, np.int32), (self.num_envs,)).copy()
        return self.observe()

    def reset(self, key) -> np.ndarray:
        """New episodes from a JAX key (same initial states / shifts as the MJX env's
        ``vmap(reset)`` over ``jax.random.split(key, B)``). Returns obs [B, 2, obs_dim]."""
        qpos, qvel, scalings = sample_initial_batch(key, self.num_envs, self.config)
        return self.set_state(qpos, qvel, scalings)

    def step(self, actions) -> Tuple[np.ndarray, np.ndarray, np.ndarray, Dict[str, np.ndarray]]:
        """actions [B, 2, 3] -> (obs [B, 2, obs_dim], reward [B, 2], done [B], info of [B])."""
        actions = np.asarray(actions, np.float32)
        common.check_actions_shape(actions.shape, (self.num_envs,))
        clipped = np.clip(actions, -1.0, 1.0)
        ctrl = common.actions_to_ctrl(clipped, np).astype(np.float64)
        x_before = np.empty(self.num_envs)
        x_after = np.empty(self.num_envs)
        mj, nstep = self._mujoco, self.config.frame_skip
        for i, (m, d) in enumerate(zip(self.models, self.datas)):
            x_before[i] = d.qpos[0]
            d.ctrl[:] = ctrl[i]
            mj.mj_step(m, d, nstep)
            x_after[i] = d.qpos[0]
        reward, x_velocity, forward, ctrl_cost = common.reward_terms(
            x_before, x_after, clipped.astype(np.float64), self.config, np)
        self.t += 1
        reward = np.repeat(reward[:, None], self.num_agents, 1).astype(np.float32)
        info = {"x_position": x_after, "x_velocity": x_velocity, "reward_forward": forward,
                "reward_ctrl": -ctrl_cost}
        return self.observe(), reward, self.t >= self.episode_length, info


class HalfCheetahMJXBatch:
    """The ``HalfCheetahCPU`` interface over ``jit(vmap(HalfCheetah2x3.step))`` (for GPUs)."""

    backend = "mjx"

    def __init__(self, num_envs: int, **config):
        if int(num_envs) < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.num_envs = int(num_envs)
        self.env = HalfCheetah2x3(**config)
        self.config = self.env.config
        self.num_agents, self.act_dim = self.env.num_agents, self.env.act_dim
        self.agent_names, self.obs_dim = self.env.agent_names, self.env.obs_dim
        self.episode_length = self.env.episode_length
        self._reset = jax.jit(jax.vmap(self.env.reset))
        self._step = jax.jit(jax.vmap(self.env.step))
        self._from_arrays = jax.jit(jax.vmap(self.env.state_from_qpos))
        self.state = None

    qpos = property(lambda self: np.asarray(self.state.qpos, np.float64))
    qvel = property(lambda self: np.asarray(self.state.qvel, np.float64))
    scalings = property(lambda self: np.asarray(self.state.scalings))
    t = property(lambda self: np.asarray(self.state.t))

    def observe(self) -> np.ndarray:
        return np.asarray(self.env.observe(self.state))

    def set_state(self, qpos, qvel, scalings=None, t=0) -> np.ndarray:
        scalings = np.ones((self.num_envs, 3), np.float32) if scalings is None else scalings
        t = np.broadcast_to(np.asarray(t, np.int32), (self.num_envs,))
        self.state = self._from_arrays(jnp.asarray(qpos, jnp.float32),
                                       jnp.asarray(qvel, jnp.float32),
                                       jnp.asarray(scalings, jnp.float32), jnp.asarray(t))
        return self.observe()

    def reset(self, key) -> np.ndarray:
        obs, self.state = self._reset(jax.random.split(key, self.num_envs))
        return np.asarray(obs)

    def step(self, actions):
        actions = jnp.asarray(actions, jnp.float32)
        common.check_actions_shape(actions.shape, (self.num_envs,))
        keys = jnp.zeros((self.num_envs, 2), jnp.uint32)  # unused by the env
        obs, self.state, reward, done, info = self._step(keys, self.state, actions)
        return (np.asarray(obs), np.asarray(reward), np.asarray(done),
                {k: np.asarray(v) for k, v in info.items()})


def select_backend(backend: str = "auto") -> str:
    """"auto" -> "cpu" (C MuJoCo) when JAX runs on CPU, else "mjx"."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    if backend == "auto":
        return "cpu" if jax.default_backend() == "cpu" else "mjx"
    return backend


def make_batch_env(num_envs: int, backend: str = "auto", **config):
    """``HalfCheetahCPU`` or ``HalfCheetahMJXBatch`` (see ``select_backend``)."""
    cls = HalfCheetahCPU if select_backend(backend) == "cpu" else HalfCheetahMJXBatch
    return cls(num_envs, **config)


@functools.lru_cache(maxsize=16)
def _batched_policy(policy_fn):
    return jax.jit(jax.vmap(policy_fn, in_axes=(None, 0, 0)))


# Portable rollouts (dataset generation, ``dom2_jax.envs.portable``): initial states drawn in
# float64 and rounded to STATE_GRID, actions from the float64 policy rounded to ACTION_GRID.
# HalfCheetah is chaotic, so one last-bit difference would change every later step; C MuJoCo
# itself is one binary computing in float64, so the episodes are the same bits on every CPU.
STATE_GRID = 2.0 ** -30
ACTION_GRID = portable.ACTION_GRID


@functools.lru_cache(maxsize=8)
def _portable_initial(reset_noise_scale: float, shift):
    config = common.HalfCheetahConfig(reset_noise_scale=reset_noise_scale, shift=shift)

    def sample(key):  # traced under x64
        qpos, qvel, scalings = common.sample_initial(key, config, jnp.float64)
        return (portable.round_to_grid(qpos, STATE_GRID),
                portable.round_to_grid(qvel, STATE_GRID), scalings)
    return jax.jit(jax.vmap(sample))


def portable_initial_batch(key, num_envs: int, config: common.HalfCheetahConfig):
    """(qpos [B, 9], qvel [B, 9], scalings [B, 3]) from the reset distribution of
    ``sample_initial_batch``, drawn in float64 and rounded to ``STATE_GRID``: the same values
    on every CPU (``sample_initial_batch``'s float32 draws differ in the last bit)."""
    with jax.enable_x64(True):
        out = _portable_initial(float(config.reset_noise_scale), config.shift)(
            jax.random.split(key, num_envs))
        return tuple(np.asarray(x) for x in out)


@functools.lru_cache(maxsize=16)
def _portable_policy(policy_fn):
    return jax.jit(jax.vmap(portable.portable_policy(policy_fn), in_axes=(None, 0, 0)))


def portable_actions(policy_fn, params, obs, keys) -> np.ndarray:
    """``vmap(policy_fn)`` evaluated in float64 and rounded to ``ACTION_GRID`` (float32, exact)."""
    with jax.enable_x64(True):
        a = np.asarray(_portable_policy(policy_fn)(params, obs, keys), np.float64)
    return a.astype(np.float32)


def rollout_batch(batch_env, policy_fn, params, key, num_episodes: int, *,
                  return_trajectory: bool = False,
                  portable: bool = False) -> Dict[str, np.ndarray]:
    """``dom2_jax.envs.rollout`` for a numpy batch env (``HalfCheetahCPU``, ...): the same
    output layout as numpy arrays (``score`` [n], ``returns`` [n, A], and with
    ``return_trajectory`` ``obs``/``actions``/``rewards``/``next_obs``/``dones`` [n, T, ...]).

    ``policy_fn(params, obs [A, obs_dim], key) -> actions [A, act_dim]`` as for ``rollout``;
    it runs jitted and vmapped over the batch. Episodes run ``batch_env.num_envs`` at a time
    (the last block may be partly discarded). Block i resets from ``fold_in(key, i)`` and
    its policy keys are ``split(fold_in(fold_in(key, i), 1), T * B)`` ([T, B] row-major).
    The keys differ from the jitted ``rollout``'s, so the episodes do too (the dynamics agree
    to float32 tolerance; tests/test_mamujoco.py).

    ``portable=True`` (dataset generation): initial states from ``portable_initial_batch`` and
    actions from ``portable_actions`` (float64, rounded to fixed grids), so the episodes are
    the same bits on any x86 CPU (C MuJoCo itself is one binary, run in float64); they differ
    from the default path's, whose float32 XLA programs round per CPU.
    """
    num_episodes = int(num_episodes)
    if num_episodes < 1:
        raise ValueError(f"num_episodes must be >= 1, got {num_episodes}")
    act = _batched_policy(policy_fn)
    B, T = batch_env.num_envs, batch_env.episode_length
    blocks = []
    for i in range(-(-num_episodes // B)):
        k_block = jax.random.fold_in(key, i)
        if portable:
            obs = batch_env.set_state(*portable_initial_batch(k_block, B, batch_env.config))
        else:
            obs = batch_env.reset(k_block)
        step_keys = np.asarray(jax.random.split(jax.random.fold_in(k_block, 1), T * B))
        step_keys = step_keys.reshape((T, B) + step_keys.shape[1:])
        traj = {k: [] for k in ("obs", "actions", "rewards", "next_obs", "dones")}
        for t in range(T):
            actions = (portable_actions(policy_fn, params, obs, step_keys[t]) if portable
                       else np.asarray(act(params, obs, step_keys[t])))
            next_obs, reward, done, _ = batch_env.step(actions)
            for k, v in zip(traj, (obs, actions, reward, next_obs, done)):
                traj[k].append(v)
            obs = next_obs
        blocks.append({k: np.stack(v, 1) for k, v in traj.items()})  # [B, T, ...]
    out = {k: np.concatenate([b[k] for b in blocks], 0)[:num_episodes] for k in blocks[0]}
    result = {"score": out["rewards"][..., 0].sum(1), "returns": out["rewards"].sum(1)}
    if return_trajectory:
        result.update(out)
    return result
