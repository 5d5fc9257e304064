"""Periodic evaluation outside the jitted chunk: HalfCheetah on C MuJoCo when JAX runs on a CPU.

The trainer normally evaluates inside its jitted chunk on the vmapped JAX environment (MJX for
HalfCheetah), which is what a GPU wants. On a CPU host MJX is the slow way to step MuJoCo: 100
HalfCheetah episodes take ~60-90 s on 2 cores, against a few seconds on C MuJoCo, so for
MLP actors the evaluations dominate a quick run. ``--eval_backend=auto`` (the launcher's default)
therefore evaluates HalfCheetah with ``mamujoco.cpu.rollout_batch`` when JAX's backend is the
CPU, and on MJX otherwise. The policy is the algorithm's jitted ``act`` either way; the two
backends simulate the same model (their dynamics agree to float32 tolerance,
tests/test_mamujoco.py) but draw different initial states, so their scores agree in
distribution, not episode by episode.
"""
from __future__ import annotations

from typing import Callable, Dict

import jax
import numpy as np

from dom2_jax import envs
from dom2_jax.online.behaviour import cpu_batch_env

EVAL_BACKENDS = envs.BACKENDS


def resolve_eval_backend(env, backend: str = "auto") -> str:
    """"jax" (evaluate inside the jitted chunk) or "cpu" (C MuJoCo, HalfCheetah only); "auto"
    is "cpu" for MAMuJoCo envs when JAX runs on CPU, else "jax"."""
    return envs.resolve_backend(env, backend, what="eval")


def make_cpu_evaluate(act: Callable, env, shift_env, num_episodes: int, block: int = 100
                      ) -> Callable:
    """``evaluate(states, keys) -> {"score_mean", "score_std"[, "shift_score_*"]}`` (numpy [S])
    for S seeds: ``states`` carries a leading seed axis, ``keys`` is [S] (the chunk's eval keys;
    each is split into (env key, shift-env key) as ``Trainer.evaluate`` does).

    ``act(state, obs [..., A, obs_dim], key)`` is the algorithm's action function; episodes run
    ``min(block, num_episodes)`` at a time on C MuJoCo (``mamujoco.cpu.rollout_batch``).
    """
    from dom2_jax.envs.mamujoco.cpu import rollout_batch  # (a) HalfCheetah only: MPE skips mujoco
    n = int(num_episodes)
    width = max(1, min(int(block), n))
    cpu_env = cpu_batch_env(env.config, width)
    cpu_shift = cpu_batch_env(shift_env.config, width) if shift_env is not None else None
    policy = lambda state, obs, key: act(state, obs, key)  # one object: one compiled policy

    def evaluate(states, keys) -> Dict[str, np.ndarray]:
        keys = np.asarray(keys)
        out = {}
        for i in range(keys.shape[0]):
            state = jax.tree.map(lambda x: x[i], states)
            k1, k2 = jax.random.split(keys[i])
            runs = [("score", cpu_env, k1)] + ([("shift_score", cpu_shift, k2)]
                                                if cpu_shift is not None else [])
            for name, batch_env, k in runs:
                score = rollout_batch(batch_env, policy, state, k, n)["score"]
                out.setdefault(f"{name}_mean", []).append(float(np.mean(score)))
                out.setdefault(f"{name}_std", []).append(float(np.std(score)))
        return {k: np.asarray(v, np.float32) for k, v in out.items()}

    return evaluate
