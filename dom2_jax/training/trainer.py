"""``make_train(config, dataset, env)`` in the PureJaxRL style, for DOM2 and every baseline.

    trainer = make_train(config, dataset, env)
    out = jax.jit(jax.vmap(trainer.train))(jax.random.split(key, num_seeds))   # whole run

``trainer.train(rng)`` is pure: init, then a ``lax.scan`` over chunks, each chunk being a
``lax.scan`` over ``config.eval_every`` updates (minibatches sampled on device from the
device-resident dataset) followed by an evaluation of ``config.eval_episodes`` episodes in the
vmapped JAX environment (and the shifted environment when ``config.shift`` is set).

The launcher (``experiments/train.py``) uses the same pieces one chunk at a time
(``trainer.init`` / ``trainer.chunk``, jitted and vmapped over seeds) so that it can write
checkpoints, logs and a progress bar between chunks; the numbers are identical because the
carry (state and PRNG key) is the same pytree.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, NamedTuple

import flax
import jax
import jax.numpy as jnp

from dom2_jax import registry
from dom2_jax.data.transforms import sample_batch
from dom2_jax.envs.rollout import make_rollout

ALGOS = registry.ALGOS
algo_module = registry.algo_module


@flax.struct.dataclass
class TrainCarry:
    state: Any            # the algorithm's state (agents stacked on axis 0)
    key: jax.Array
    chunk: jax.Array      # number of chunks done


class Trainer(NamedTuple):
    init: Callable        # rng -> TrainCarry
    chunk: Callable       # TrainCarry -> (TrainCarry, metrics (chunk means), eval dict)
    train: Callable       # rng -> (TrainCarry, metrics [C], eval [C])
    evaluate: Callable    # (state, key) -> eval dict
    num_chunks: int
    act: Callable = None  # (state, raw obs [..., A, obs_dim], key) -> actions (normalises obs)
    obs_stats: Any = None  # {"mean", "std"} [A, obs_dim] when config.normalize_obs, else None
    # ``chunk`` with the dataset as an argument: (TrainCarry, data) -> as ``chunk``. Jit this
    # one with ``data`` passed in (vmap in_axes=(0, None)): a closed-over dataset becomes a
    # constant of the compiled program, copied into every program compiled (planning compiles
    # several) and folded at compile time (BC quick on 1e6 transitions: 13.8 s instead of 8.1
    # s to compile, +0.7 GiB; 64 paper-size DOM2 seeds ran out of memory while compiling).
    chunk_on: Callable = None
    data: Dict[str, jax.Array] = None  # the (standardised) dataset arrays ``chunk`` trains on


def scan_updates(update: Callable, state, arrays: Dict[str, jax.Array], key: jax.Array,
                 num_updates: int, sample_fn: Callable = sample_batch):
    """``num_updates`` calls of ``update(state, batch, key)`` as one ``lax.scan``, each on a
    minibatch of ``state.hp.batch_size`` drawn on device by ``sample_fn(arrays, key, size)``
    from ``arrays`` ([N, A, ...]). Returns (state, metrics [num_updates, A] per term). The
    only loop over updates: ``make_train``'s chunks, tests and benchmarks all run it."""

    def body(st, k):
        k_b, k_u = jax.random.split(k)
        return update(st, sample_fn(arrays, k_b, st.hp.batch_size), k_u)

    return jax.lax.scan(body, state, jax.random.split(key, num_updates))


def obs_statistics(dataset_arrays) -> Dict[str, jax.Array]:
    """Per-agent, per-feature mean and std (+ 1e-3, as TD3+BC) of the dataset's observations."""
    obs = dataset_arrays["obs"]
    return {"mean": jnp.mean(obs, axis=0), "std": jnp.std(obs, axis=0) + 1e-3}


def make_policy(algo, stats=None) -> Callable:
    """``act(state, raw obs [..., A, obs_dim], key)``: the algorithm's action, on observations
    standardised with ``stats`` ({"mean", "std"}, as ``obs_statistics``) when given."""
    if stats is None:
        return lambda state, obs, key: algo.act(state, obs, key)
    mean, std = jnp.asarray(stats["mean"]), jnp.asarray(stats["std"])
    return lambda state, obs, key: algo.act(state, (obs - mean) / std, key)


def make_evaluate(env, shift_env, policy: Callable, num_episodes: int) -> Callable:
    """``evaluate(state, key) -> {"score_mean", "score_std"[, "shift_score_*"]}``: key ->
    (standard env key, shifted env key), ``num_episodes`` vmapped episodes in each."""
    rollout = make_rollout(env, policy, int(num_episodes))
    shift_rollout = (make_rollout(shift_env, policy, int(num_episodes))
                     if shift_env is not None else None)

    def evaluate(state, key):
        k1, k2 = jax.random.split(key)
        out = rollout(state, k1)
        res = {"score_mean": out["score"].mean(), "score_std": out["score"].std()}
        if shift_rollout is not None:
            sh = shift_rollout(state, k2)
            res.update(shift_score_mean=sh["score"].mean(), shift_score_std=sh["score"].std())
        return res

    return evaluate


def init_carry(algo, agent_config, env, rng) -> "TrainCarry":
    """One seed's initial TrainCarry: ``algo.init`` with one half of ``rng``, the other half
    the key the training chunks go on with."""
    k_init, k_run = jax.random.split(rng)
    state = algo.init(k_init, agent_config, env.num_agents, env.obs_dim, env.act_dim)
    return TrainCarry(state=state, key=k_run, chunk=jnp.zeros((), jnp.int32))


def carry_template(algo, agent_config, env, num_seeds: int) -> "TrainCarry":
    """Shapes and dtypes (``jax.eval_shape``) of ``num_seeds`` vmapped TrainCarry's: the
    target a checkpoint of an ``experiments.train`` run restores into."""
    return jax.eval_shape(jax.vmap(lambda k: init_carry(algo, agent_config, env, k)),
                          jax.random.split(jax.random.PRNGKey(0), num_seeds))


def make_train(config, dataset_arrays: Dict[str, jax.Array], env, shift_env=None,
               evaluate_in_chunk: bool = True) -> Trainer:
    """Builds the pure training functions.

    Args:
      config: ConfigDict with ``algo`` (name), ``agent`` (the algorithm's config),
        ``num_updates``, ``eval_every``, ``eval_episodes``.
      dataset_arrays: ``dom2_jax.data.to_device(dataset)`` ([N, A, ...] device arrays).
      env: the evaluation environment; ``shift_env`` optionally a shifted copy.
      Observations are standardised with ``obs_statistics(dataset_arrays)`` for training and
      acting when ``config.normalize_obs`` (``Trainer.act`` takes raw observations).
      evaluate_in_chunk: False leaves the evaluation to the caller: ``chunk`` then returns
        ``{"eval_key": key}`` (the key ``evaluate`` would have used) in place of the scores
        (the launcher's C MuJoCo evaluation, ``dom2_jax.training.host_eval``).
    """
    algo = algo_module(config.algo)
    n_chunks = int(config.num_updates) // int(config.eval_every)
    if n_chunks < 1 or int(config.num_updates) % int(config.eval_every):
        raise ValueError(f"num_updates ({config.num_updates}) must be a positive multiple of "
                         f"eval_every ({config.eval_every})")
    k_updates = int(config.eval_every)
    stats = None
    if bool(config.get("normalize_obs", False)):
        stats = obs_statistics(dataset_arrays)
        norm = lambda o: (o - stats["mean"]) / stats["std"]
        dataset_arrays = dict(dataset_arrays, obs=norm(dataset_arrays["obs"]),
                              next_obs=norm(dataset_arrays["next_obs"]))
    policy = make_policy(algo, stats)
    evaluate = make_evaluate(env, shift_env, policy, int(config.eval_episodes))

    def init(rng) -> TrainCarry:
        return init_carry(algo, config.agent, env, rng)

    def chunk_on(carry: TrainCarry, data: Dict[str, jax.Array]):
        key, k_upd, k_eval = jax.random.split(carry.key, 3)
        state, metrics = scan_updates(algo.update, carry.state, data, k_upd, k_updates)
        # Chunk summaries: mean over updates and agents, plus per term the count of non-finite
        # values and the first update (0-based in the chunk; k_updates if none) that had one,
        # so a NaN anywhere in the chunk is reported where it began.
        summary = {}
        for name, v in metrics.items():
            bad = ~jnp.isfinite(v).reshape(k_updates, -1).all(axis=-1)
            summary[name] = jnp.mean(v)
            summary[name + "/nonfinite"] = jnp.sum(~jnp.isfinite(v))
            summary[name + "/first_nonfinite"] = jnp.where(jnp.any(bad), jnp.argmax(bad),
                                                           k_updates)
        ev = evaluate(state, k_eval) if evaluate_in_chunk else {"eval_key": k_eval}
        return TrainCarry(state=state, key=key, chunk=carry.chunk + 1), summary, ev

    def chunk(carry: TrainCarry):
        return chunk_on(carry, dataset_arrays)

    def train(rng):
        carry = init(rng)

        def outer(c, _):
            c, m, e = chunk(c)
            return c, (m, e)

        carry, (metrics, evals) = jax.lax.scan(outer, carry, None, length=n_chunks)
        return carry, metrics, evals

    return Trainer(init=init, chunk=chunk, train=train, evaluate=evaluate, num_chunks=n_chunks,
                   act=policy, obs_stats=stats, chunk_on=chunk_on, data=dataset_arrays)


def first_nonfinite(summary_np: Dict[str, Any]):
    """``(metric, update index in the chunk)`` of the earliest non-finite value of a chunk
    summary (host side; any seed; ties go to the alphabetically first metric), or None."""
    hits = []
    for name, v in summary_np.items():
        if name.endswith("/nonfinite") and float(jnp.sum(v)) > 0:
            metric = name[: -len("/nonfinite")]
            hits.append((int(jnp.min(summary_np[metric + "/first_nonfinite"])), metric))
    if not hits:
        return None
    step, metric = min(hits)
    return metric, step
