"""Training loop of the behaviour policies (TD3) with snapshots, and medium-replay replay.

``run_training`` drives ``TD3.train_chunk`` chunk by chunk; after every ``eval_every`` chunks it
evaluates the deterministic actor (``eval_episodes`` episodes, an evaluation key independent
of the training key) and keeps a host copy of the actor params (a "snapshot"). The training
key stream never depends on the evaluation, so re-running the same (env, env_kwargs, config,
seed) reproduces the same training trajectory chunk for chunk; ``replay_until`` uses that to
regenerate the medium-replay buffer (every transition collected up to the medium snapshot).

``select_policies`` picks the expert (best snapshot) and the medium snapshot (closest to
``random + medium_fraction * (expert - random)`` before the expert), re-evaluating the
candidates over ``final_eval_episodes``.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from typing import Any, Callable, Dict, List, Optional

import jax
import numpy as np

from dom2_jax import envs
from dom2_jax.envs import portable as portable_lib
from dom2_jax.envs.rollout import rollout
from dom2_jax.online import policies
from dom2_jax.online import td3 as td3_lib

EVAL_KEY_SALT = 0x5EED  # evaluation keys: fold_in(PRNGKey(seed), EVAL_KEY_SALT) -> fold_in(chunk)


def chunk_transitions(config) -> int:
    return int(config.iters_per_chunk) * int(config.num_envs)


def make_td3(env_name: str, config, env_kwargs: Optional[dict] = None):
    env = envs.make(env_name, **dict(env_kwargs or {}))
    return td3_lib.TD3(env, config)


def run_training(td3: td3_lib.TD3, seed: int, num_chunks: int, *, eval_every: int = 1,
                 eval_episodes: Optional[int] = None,
                 on_chunk: Optional[Callable[[int, Any, Dict], None]] = None,
                 on_snapshot: Optional[Callable[[Dict[str, Any]], None]] = None,
                 log: Callable[[str], None] = print) -> List[Dict[str, Any]]:
    """Runs ``num_chunks`` chunks; returns the snapshots [{chunk, env_steps, score, score_std,
    flat_params, metrics}]. ``on_chunk(chunk_index, state, metrics)`` is called after each
    chunk (before the state is donated to the next one); ``on_snapshot(snap)`` after each
    evaluation (e.g. ``save_snapshot``, so a long run that dies keeps its snapshots)."""
    key = jax.random.PRNGKey(seed)
    eval_key = jax.random.fold_in(key, EVAL_KEY_SALT)
    state = td3.init(key)
    snaps = []
    t0 = time.time()
    for i in range(num_chunks):
        state, metrics = td3.train_chunk(state)
        metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
        if on_chunk is not None:
            on_chunk(i, state, metrics)
        if (i + 1) % eval_every == 0 or i + 1 == num_chunks:
            scores = td3.evaluate(state.actor.params, jax.random.fold_in(eval_key, i), eval_episodes)
            flat = td3_lib.flatten_params(jax.device_get(state.actor.params))
            steps = (i + 1) * chunk_transitions(td3.config)
            snaps.append(dict(chunk=i + 1, env_steps=steps, score=float(scores.mean()),
                              score_std=float(scores.std()), flat_params=flat, metrics=metrics,
                              wall_s=round(time.time() - t0, 1)))
            if on_snapshot is not None:
                on_snapshot(snaps[-1])
            log(f"chunk {i + 1}/{num_chunks} steps {steps} eval {scores.mean():.2f} "
                f"+- {scores.std():.2f} train {metrics['train_score']:.2f} "
                f"critic_loss {metrics['critic_loss']:.3f} q {metrics['q']:.2f} "
                f"({time.time() - t0:.0f} s)")
    return snaps


def save_snapshot(directory: str, snap: Dict[str, Any]) -> str:
    """Writes one snapshot as ``<directory>/chunk_<chunk>.npz`` (atomic; params + JSON meta)."""
    meta = {k: v for k, v in snap.items() if k != "flat_params"}
    path = os.path.join(directory, f"chunk_{int(snap['chunk']):06d}.npz")
    policies.save_policy(path, snap["flat_params"], meta)
    return path


REPLAY_SUBDIR = "replay"


def chunk_transitions_of(state, chunk: int, config) -> Dict[str, np.ndarray]:
    """Host copy of the transitions chunk ``chunk`` (1-based) collected, in collection order
    [iters_per_chunk, num_envs, ...] (read from the ring buffer right after that chunk)."""
    E, I = int(config.num_envs), int(config.iters_per_chunk)
    start = ((chunk - 1) * I * E) % int(config.buffer_size)
    sl = td3_lib.buffer_slice(state, start, I * E)
    return {k: v.reshape((I, E) + v.shape[1:]) for k, v in sl.items()}


def run_mismatch(run: Dict[str, Any], *, seed: int, td3_config: dict,
                 env_kwargs: Optional[dict], env: Optional[str] = None) -> Optional[str]:
    """The first field in which a training record (``run.json`` / the returns file's
    ``training``) differs from the given run identity, or None if it is the same run."""
    if env is not None and run.get("env") != env:
        return f"env {run.get('env')!r}, not {env!r}"
    if int(run["seed"]) != int(seed):
        return f"seed {run['seed']}, not {seed}"
    if dict(run.get("env_kwargs") or {}) != dict(env_kwargs or {}):
        return f"env_kwargs {run.get('env_kwargs')}, not {env_kwargs}"
    if not td3_lib.same_config(run["td3_config"], td3_config):
        return "a different TD3 config"
    return None


def save_replay_chunk(directory: str, chunk: int, state, config) -> str:
    """Writes ``chunk_transitions_of(state, chunk, config)`` to
    ``<directory>/replay/chunk_<chunk>.npz`` (atomic), so medium-replay needs no re-run of the
    training (``load_replay``)."""
    arrays = chunk_transitions_of(state, chunk, config)
    path = os.path.join(directory, REPLAY_SUBDIR, f"chunk_{int(chunk):06d}.npz")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    policies._atomic_write(path, lambda f: np.savez(f, **arrays))
    return path


def load_replay(directory: str, num_chunks: int) -> Dict[str, np.ndarray]:
    """Chunks 1..num_chunks saved by ``save_replay_chunk``, concatenated like ``replay_until``'s
    transitions ([I, E, ...] in collection order)."""
    parts = []
    for c in range(1, int(num_chunks) + 1):
        path = os.path.join(directory, REPLAY_SUBDIR, f"chunk_{c:06d}.npz")
        if not os.path.exists(path):
            raise FileNotFoundError(f"replay chunk {c} of {num_chunks} missing: {path}")
        with np.load(path, allow_pickle=False) as z:
            parts.append({k: np.asarray(z[k]) for k in z.files})
    return {k: np.concatenate([p[k] for p in parts], 0) for k in parts[0]}


def load_snapshots(directory: str) -> List[Dict[str, Any]]:
    """The snapshots ``save_snapshot`` wrote into ``directory``, in chunk order."""
    names = sorted(f for f in os.listdir(directory)
                   if f.startswith("chunk_") and f.endswith(".npz"))
    if not names:
        raise FileNotFoundError(f"no chunk_*.npz snapshots in {directory}")
    snaps = []
    for name in names:
        flat, meta = policies.load_policy(os.path.join(directory, name))
        snaps.append(dict(meta, flat_params=flat))
    return snaps


ROLLOUT_BACKENDS = envs.BACKENDS
resolve_backend = envs.resolve_backend  # the one rule (dom2_jax.envs.resolve_backend)


@functools.lru_cache(maxsize=4)
def cpu_batch_env(config, num_envs: int):
    """A cached ``HalfCheetahCPU`` of ``num_envs`` envs for an env's ``config`` (the C-MuJoCo
    twin of the MJX env; ``rollout_batch`` resets it per block, so sharing it is safe)."""
    from dom2_jax.envs.mamujoco.cpu import HalfCheetahCPU  # (a) HalfCheetah only: MPE skips mujoco
    return HalfCheetahCPU(num_envs, **dataclasses.asdict(config))


def rollout_policy(td3: td3_lib.TD3, params, key, num_episodes: int, *, block: int = 100,
                   backend: str = "auto", return_trajectory: bool = False,
                   portable: bool = False) -> Dict[str, np.ndarray]:
    """``num_episodes`` episodes of ``td3.policy_fn`` with ``params`` (``td3.policy_params``)
    as host arrays (``score`` [n]; with ``return_trajectory`` also ``obs``, ``actions``,
    ``rewards``, ``next_obs`` [n, T, ...]), ``block`` episodes at a time, on ``backend``
    (``resolve_backend``). Block b uses ``fold_in(key, b)``: deterministic for each backend.
    ``portable=True``: the same bits on any x86 CPU, as dataset generation needs
    (``dom2_jax.envs.portable``: C MuJoCo's ``rollout_batch(portable=True)`` for HalfCheetah,
    ``portable.rollout`` for the JAX MPE envs; other JAX envs are refused)."""
    n, block = int(num_episodes), max(1, int(block))
    keys = ("score", "obs", "actions", "rewards", "next_obs") if return_trajectory else ("score",)
    parts = []
    resolved = resolve_backend(td3.env, backend)
    if portable and resolved != "cpu" and not portable_lib.supports(td3.env):
        raise ValueError(f"portable rollouts of {td3.env.name} need the C MuJoCo backend "
                         f"('cpu'), not {resolved!r}")
    if resolved == "cpu":
        from dom2_jax.envs.mamujoco.cpu import rollout_batch  # (a) as cpu_batch_env
        batch_env = cpu_batch_env(td3.env.config, min(block, n))
        out = rollout_batch(batch_env, td3.policy_fn, params, key, n,
                            return_trajectory=return_trajectory, portable=portable)
        return {k: out[k] for k in keys}
    run = portable_lib.rollout if portable else rollout  # the same signature and layout
    for b in range(math.ceil(n / block)):
        out = run(td3.env, td3.policy_fn, params, jax.random.fold_in(key, b), block,
                  return_trajectory=return_trajectory)
        parts.append({k: np.asarray(out[k]) for k in keys})
    return {k: np.concatenate([p[k] for p in parts], 0)[:n] for k in keys}


def policy_scores(td3: td3_lib.TD3, params, key, num_episodes: int,
                  backend: str = "jax") -> np.ndarray:
    """Scores [num_episodes] of ``td3.policy_fn`` with ``params``: on "jax" exactly
    ``td3.evaluate`` (one jitted rollout of all episodes), on "cpu" C MuJoCo blocks."""
    if resolve_backend(td3.env, backend) == "cpu":
        return rollout_policy(td3, params, key, num_episodes, backend="cpu")["score"]
    return np.asarray(rollout(td3.env, td3.policy_fn, params, key, int(num_episodes))["score"])


def evaluate_flat(td3: td3_lib.TD3, flat, key, num_episodes: int, sigma: float = 0.0,
                  backend: str = "jax"):
    """(mean, std) score of the snapshot ``flat`` over ``num_episodes`` episodes."""
    params = td3.policy_params(td3_lib.unflatten_params(flat), sigma)
    scores = policy_scores(td3, params, key, num_episodes, backend)
    return float(scores.mean()), float(scores.std())


def select_policies(td3: td3_lib.TD3, snaps: List[Dict], seed: int, *, medium_fraction: float,
                    final_eval_episodes: int, num_candidates: int = 5,
                    backend: str = "jax",
                    log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Expert = best of the top ``num_candidates`` snapshots re-evaluated over
    ``final_eval_episodes``; medium = snapshot before the expert closest to the target score
    (candidates re-evaluated likewise). Returns {random, expert, medium} dicts."""
    key = jax.random.fold_in(jax.random.PRNGKey(seed), EVAL_KEY_SALT + 1)
    k_rand, k_exp, k_med = jax.random.split(key, 3)
    rand = policy_scores(td3, td3.policy_params(None, uniform=True), k_rand,
                         final_eval_episodes, backend)
    random_entry = dict(score=float(rand.mean()), score_std=float(rand.std()),
                        episodes=final_eval_episodes, backend=resolve_backend(td3.env, backend))

    order = sorted(range(len(snaps)), key=lambda j: -snaps[j]["score"])[:num_candidates]
    best = None
    for j in order:
        m, s = evaluate_flat(td3, snaps[j]["flat_params"], k_exp, final_eval_episodes,
                             backend=backend)
        log(f"expert candidate chunk {snaps[j]['chunk']}: {m:.2f} +- {s:.2f}")
        if best is None or m > best[1]:
            best = (j, m, s)
    je, em, es = best
    expert_entry = dict(score=em, score_std=es, episodes=final_eval_episodes,
                        chunk=snaps[je]["chunk"], env_steps=snaps[je]["env_steps"], index=je)

    target = random_entry["score"] + medium_fraction * (em - random_entry["score"])
    before = [j for j in range(je)] or [je]
    near = sorted(before, key=lambda j: abs(snaps[j]["score"] - target))[:num_candidates]
    bestm = None
    for j in near:
        m, s = evaluate_flat(td3, snaps[j]["flat_params"], k_med, final_eval_episodes,
                             backend=backend)
        log(f"medium candidate chunk {snaps[j]['chunk']}: {m:.2f} +- {s:.2f} (target "
            f"{target:.2f})")
        if bestm is None or abs(m - target) < abs(bestm[1] - target):
            bestm = (j, m, s)
    jm, mm, ms = bestm
    medium_entry = dict(score=mm, score_std=ms, episodes=final_eval_episodes,
                        chunk=snaps[jm]["chunk"], env_steps=snaps[jm]["env_steps"], index=jm,
                        target=target,
                        normalised=100.0 * (mm - random_entry["score"])
                        / (em - random_entry["score"]))
    return {"random": random_entry, "expert": expert_entry, "medium": medium_entry}


def replay_until(env_name: str, env_kwargs: Optional[dict], config, seed: int, num_chunks: int,
                 log: Callable[[str], None] = print):
    """Re-runs TD3 training for ``num_chunks`` chunks and returns (transitions, final actor
    flat params): every transition collected, as host arrays ``obs`` [I, E, A, obs_dim],
    ``actions``, ``rewards`` [I, E, A], ``next_obs`` (I iterations, E parallel envs, in
    collection order)."""
    td3 = make_td3(env_name, config, env_kwargs)
    parts: List[Dict[str, np.ndarray]] = []
    last = {}

    def on_chunk(i, state, metrics):
        parts.append(chunk_transitions_of(state, i + 1, config))
        if i + 1 == num_chunks:
            last["flat"] = td3_lib.flatten_params(jax.device_get(state.actor.params))
        if (i + 1) % 20 == 0 or i + 1 == num_chunks:
            log(f"medium-replay: chunk {i + 1}/{num_chunks}")

    key = jax.random.PRNGKey(seed)
    state = td3.init(key)
    for i in range(num_chunks):
        state, metrics = td3.train_chunk(state)
        on_chunk(i, state, metrics)
    out = {k: np.concatenate([p[k] for p in parts], 0) for k in parts[0]}
    return td3, out, last["flat"]


def episodes_from_parallel(trans: Dict[str, np.ndarray], episode_length: int):
    """[I, E, ...] collection-order transitions of E synchronised envs (all reset together:
    our envs have fixed-length episodes) -> [n_ep, T, A, ...] episodes ordered by collection
    time (the incomplete trailing episode is dropped)."""
    I = trans["obs"].shape[0]
    n_blocks = I // episode_length
    out = {}
    for k, v in trans.items():
        v = v[: n_blocks * episode_length]
        v = v.reshape((n_blocks, episode_length) + v.shape[1:])  # [B, T, E, ...]
        v = np.swapaxes(v, 1, 2)                                 # [B, E, T, ...]
        out[k] = v.reshape((-1, episode_length) + v.shape[3:])
    return out


def num_chunks_for(steps: int, config) -> int:
    return max(1, math.ceil(int(steps) / chunk_transitions(config)))
