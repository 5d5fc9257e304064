"""Offline datasets made with the shipped behaviour policies (OMAR / D4RL recipe).

``generate(env_name, quality, num_samples, seed, env_kwargs=None, ...) -> Dataset``; the
qualities, sizes, keys and metadata are described in ``experiments/generate_dataset.py`` (its
command-line front end) and notes/datasets.md.
"""
from __future__ import annotations

import functools
import json
import math
import os
import subprocess
import time
from typing import Any, Callable, Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np

from dom2_jax import data
from dom2_jax.envs import portable
from dom2_jax.online import behaviour, policies
from dom2_jax.online import td3 as td3_lib
from dom2_jax.registry import QUALITIES
from dom2_jax.training import reporting

DEFAULT_SIGMA = 0.1           # Gaussian noise std of medium/expert behaviour (TD3's expl. noise)
REFERENCE_SEED = 20231126     # fixed key of the reference-return rollouts
MIN_REFERENCE_EPISODES = 100


def _git_commit() -> Optional[str]:
    try:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None
    except Exception:  # noqa: BLE001 - provenance only
        return None


def _block_episodes(episode_length: int, num_episodes: Optional[int] = None) -> int:
    """Episodes per rollout call: 1000 for MPE (cheap; one program for every size), 100 for
    long episodes (HalfCheetah), fewer if fewer are needed (tiny HC datasets; one more
    compile instead of up to 99 wasted 1000-step episodes)."""
    if episode_length <= 100:
        return 1000
    return 100 if num_episodes is None else max(1, min(100, int(num_episodes)))


@functools.lru_cache(maxsize=16)
def _td3(env_name: str, env_kwargs_json: str, hidden_dims: tuple):
    """Cached TD3 object (env + actor + policy_fn): repeated calls reuse compiled rollouts."""
    config = td3_lib.default_config(env_name)
    config.hidden_dims = tuple(hidden_dims)
    return behaviour.make_td3(env_name, config, json.loads(env_kwargs_json))


def _policy(env_name, quality, assets_dir):
    flat, meta = policies.require_policy(env_name, quality, assets_dir)
    return td3_lib.unflatten_params(flat), meta, policies.params_digest(flat)


def _portable(td3, backend: str) -> bool:
    """Whether generation's rollouts are portable (the same bits on every x86 CPU,
    ``dom2_jax.envs.portable``): C MuJoCo's HalfCheetah and the MPE envs are; MJX is not."""
    return backend == "cpu" or portable.supports(td3.env)


def _rollout_episodes(td3, params, key, num_episodes: int, block: int,
                      backend: str = "jax") -> Dict[str, np.ndarray]:
    """num_episodes episodes as host arrays [n, T, ...] plus score [n], portable where
    ``_portable`` says so."""
    return behaviour.rollout_policy(td3, params, key, num_episodes, block=block,
                                    backend=backend, return_trajectory=True,
                                    portable=_portable(td3, backend))


@functools.lru_cache(maxsize=32)
def _reference(env_name: str, env_kwargs_json: str, hidden_dims: tuple, kind: str,
               digest: Optional[str], assets_dir: Optional[str], backend: str = "jax") -> float:
    td3 = _td3(env_name, env_kwargs_json, hidden_dims)
    block = _block_episodes(td3.env.episode_length)
    n = max(MIN_REFERENCE_EPISODES, block)
    key = jax.random.PRNGKey(REFERENCE_SEED)
    if kind == "random":
        params = td3.policy_params(None, uniform=True)
    else:
        actor, _, _ = _policy(env_name, "expert", assets_dir)
        params = td3.policy_params(actor, 0.0)
    return float(_rollout_episodes(td3, params, key, n, block, backend)["score"].mean())


def _to_dataset_arrays(ep: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    n, t = ep["obs"].shape[:2]
    flat = {k: ep[k].reshape((n * t,) + ep[k].shape[2:]) for k in
            ("obs", "actions", "rewards", "next_obs")}
    flat["dones"] = np.zeros(flat["rewards"].shape, np.bool_)
    flat["episode_lengths"] = np.full((n,), t, np.int64)
    flat["episode_returns"] = ep["score"].astype(np.float32)
    return flat


def _medium_replay(env_name, env_kwargs, num_episodes, assets_dir, log, replay_dir=None):
    info = policies.read_returns(assets_dir).get(env_name)
    _, med_meta = policies.require_policy(env_name, "medium", assets_dir)
    if not info or "training" not in info:
        raise policies.MissingPolicyError(
            f"{policies.RETURNS_FILE} has no training record for {env_name!r}; medium-replay "
            f"needs it. Train with:\n    "
            f"{policies.train_command(env_name, assets_dir or policies.ASSETS_DIR)}")
    tr = info["training"]
    if dict(tr.get("env_kwargs") or {}) != dict(env_kwargs):
        raise ValueError(f"medium-replay of {env_name} was collected with env_kwargs "
                         f"{tr.get('env_kwargs')}, not {env_kwargs}: it cannot be regenerated "
                         "for other env settings")
    config = td3_lib.config_from_dict(tr["td3_config"])
    chunks = int(info["medium"]["chunk"])
    if replay_dir:
        with open(os.path.join(replay_dir, "run.json")) as f:
            run = json.load(f)
        why = behaviour.run_mismatch(run, seed=tr["seed"], td3_config=tr["td3_config"],
                                     env_kwargs=env_kwargs)
        if why:
            raise ValueError(f"--replay_dir {replay_dir} is not the run that trained the shipped "
                             f"{env_name} policies: it has {why}")
        log(f"medium-replay: reading {chunks} saved chunks from {replay_dir}")
        trans = behaviour.load_replay(replay_dir, chunks)
        snap = os.path.join(replay_dir, f"chunk_{chunks:06d}.npz")
        flat = policies.load_policy(snap)[0]
        td3 = behaviour.make_td3(env_name, config, env_kwargs)
    else:
        log(f"medium-replay: re-running TD3 (seed {tr['seed']}) for {chunks} chunks "
            f"({chunks * behaviour.chunk_transitions(config)} transitions)")
        td3, trans, flat = behaviour.replay_until(env_name, env_kwargs, config, int(tr["seed"]),
                                                  chunks, log=log)
    digest = policies.params_digest(flat)
    verified = digest == med_meta.get("params_sha256")
    if not verified:
        log("WARNING: the regenerated run does not reproduce the shipped medium policy "
            "bit-for-bit (different XLA/CPU?); the buffer is still a medium-replay buffer of "
            "the same recipe, recorded as unverified in meta")
    eps = behaviour.episodes_from_parallel(trans, td3.env.episode_length)
    n_avail = eps["obs"].shape[0]
    if num_episodes < n_avail:
        eps = {k: v[n_avail - num_episodes:] for k, v in eps.items()}
    eps["score"] = np.asarray(td3.env.score(jnp.asarray(eps["rewards"]))).sum(1)
    extra = dict(replay_seed=int(tr["seed"]), replay_chunks=chunks,
                 replay_source="saved chunks" if replay_dir else "re-run",
                 replay_episodes_available=int(n_avail), replay_verified=bool(verified),
                 replay_actor_sha256=digest)
    return eps, extra


def generate(env_name: str, quality: str, num_samples: int, seed: int,
             env_kwargs: Optional[dict] = None, *, sigma: float = DEFAULT_SIGMA,
             assets_dir: Optional[str] = None, command: Optional[str] = None,
             backend: str = "auto", replay_dir: Optional[str] = None,
             log: Callable[[str], None] = print):
    """Builds the ``quality`` dataset of ``env_name`` (see the module docstring) -> Dataset.

    Raises ``dom2_jax.online.policies.MissingPolicyError`` (naming the training command) if a
    needed shipped policy is absent.
    """
    if quality not in QUALITIES:
        raise ValueError(f"unknown quality {quality!r}; expected one of {QUALITIES}")
    if int(num_samples) < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    env_kwargs = dict(env_kwargs or {})
    kw_json = json.dumps(env_kwargs, sort_keys=True)
    t_start = time.time()
    needs = {"random": [], "medium": ["medium"], "expert": ["expert"],
             "medium-expert": ["medium", "expert"], "random-medium": ["medium"],
             "medium-replay": ["medium"]}[quality]
    pol = {q: _policy(env_name, q, assets_dir) for q in needs}  # fails early, clear message
    expert_path = policies.policy_path(env_name, "expert", assets_dir)
    have_expert = os.path.exists(expert_path)
    if "expert" in pol:
        hidden = tuple(pol["expert"][1]["hidden_dims"])
    elif have_expert:
        hidden = tuple(policies.load_policy(expert_path)[1]["hidden_dims"])
    elif pol:
        hidden = tuple(next(iter(pol.values()))[1]["hidden_dims"])
    else:
        hidden = tuple(td3_lib.default_config(env_name).hidden_dims)
    for q, (_, meta, _) in pol.items():
        if tuple(meta["hidden_dims"]) != hidden:
            raise ValueError(f"{q} policy hidden dims {meta['hidden_dims']} differ from {hidden}")
        if dict(meta.get("env_kwargs") or {}) != env_kwargs:
            log(f"note: the {q} policy was trained with env_kwargs {meta.get('env_kwargs')}, "
                f"generating with {env_kwargs}")
    td3 = _td3(env_name, kw_json, hidden)
    if backend == "auto" and td3.env.name.startswith("mamujoco"):
        # C MuJoCo with portable rollouts on every machine (GPU hosts too): the same seed gives
        # the same data everywhere, so runs made on different machines share their dataset.
        backend = "cpu"
    backend = behaviour.resolve_backend(td3.env, backend)
    T = td3.env.episode_length
    n_eps = max(1, math.ceil(int(num_samples) / T))
    base = jax.random.PRNGKey(int(seed))

    parts = {"random": [("random", n_eps)], "medium": [("medium", n_eps)],
             "expert": [("expert", n_eps)],
             "medium-expert": [("medium", n_eps // 2), ("expert", n_eps - n_eps // 2)],
             "random-medium": [("random", n_eps // 2), ("medium", n_eps - n_eps // 2)],
             "medium-replay": [("medium-replay", n_eps)]}[quality]
    extra: Dict[str, Any] = {}
    episodes = []
    for p, (src, n) in enumerate(parts):
        if n == 0:
            continue
        t0 = time.time()
        if src == "medium-replay":
            ep, extra = _medium_replay(env_name, env_kwargs, n, assets_dir, log, replay_dir)
        else:
            params = (td3.policy_params(None, uniform=True) if src == "random"
                      else td3.policy_params(pol[src][0], sigma))
            ep = _rollout_episodes(td3, params, jax.random.fold_in(base, p), n,
                                   _block_episodes(T, n), backend)
        log(f"{src}: {ep['obs'].shape[0]} episodes, score {ep['score'].mean():.2f} "
            f"+- {ep['score'].std():.2f} ({time.time() - t0:.1f} s)")
        episodes.append(ep)
    ep = {k: np.concatenate([e[k] for e in episodes], 0) for k in episodes[0]}

    refs = {"random": _reference(env_name, kw_json, hidden, "random", None, assets_dir,
                                 backend)}
    if have_expert:
        digest = policies.params_digest(policies.load_policy(expert_path)[0])
        refs["expert"] = _reference(env_name, kw_json, hidden, "expert", digest, assets_dir,
                                    backend)
    else:
        log(f"note: no shipped expert policy for {env_name}; reference_returns has no 'expert'")
    generator = dict(
        name="experiments.generate_dataset",
        command=command or (f"generate({env_name!r}, {quality!r}, {int(num_samples)}, "
                            f"{int(seed)}, env_kwargs={env_kwargs!r}, sigma={sigma})"),
        config=dict(num_samples_requested=int(num_samples), seed=int(seed), sigma=float(sigma),
                    parts=[[s, int(n)] for s, n in parts],
                    block_episodes=[_block_episodes(T, n) for _, n in parts],
                    reference_episodes=max(MIN_REFERENCE_EPISODES, _block_episodes(T)),
                    reference_seed=REFERENCE_SEED, hidden_dims=list(hidden),
                    rollout_backend=backend, portable_rollouts=_portable(td3, backend),
                    **extra),
        policies={q: dict(file=os.path.basename(policies.policy_path(env_name, q, assets_dir)),
                          params_sha256=d, env_steps=m.get("env_steps"),
                          score=m.get("score"), seed=m.get("seed"))
                  for q, (_, m, d) in pol.items()},
        git_commit=_git_commit(), jax_version=jax.__version__, system=reporting.system_info(),
        wall_s=round(time.time() - t_start, 2))
    arrays = _to_dataset_arrays(ep)
    return data.build_dataset(**arrays, env=env_name, quality=quality, env_kwargs=env_kwargs,
                              generator=generator, reference_returns=refs)
