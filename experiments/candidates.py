"""How a trained run acts by selection: the spread of its K samples per state and what its
critic's choice among them gains (DOM2 and MA-SfBC; issue #26's diagnosis).

    python -m experiments.candidates --workdir=W [--num_states=1000] [--candidates=32]

On ``num_states`` observations drawn from the run's dataset (standardised as the run does),
each agent draws K actions per observation with the policy the run acts with (DOM2: the EMA
actor, else the online one; MA-SfBC: its diffusion behaviour model) and scores them with the
critic its selection uses (DOM2: the target critics, MA-SfBC: the online ones; min over the
pair). Reported per agent and averaged over agents:

* ``sample_std``: standard deviation over the K samples, averaged over action dimensions and
  states: how much there is to choose from;
* ``saturation``: fraction of sampled coordinates at +-1;
* ``q_spread``: standard deviation over the K samples of min-Q, averaged over states;
* ``q_gain``: mean over states of max_k Q - mean_k Q: what an argmax choice gains in the
  critic's own estimate;
* ``q_data``: mean min-Q of the dataset's action at the same states, for scale.

Writes ``W/diagnostics/candidates-u<updates>-K<K>-n<num_states>.json`` (archived with the run
by ``experiments.archive_runs``, as ``experiments.actor_stats``' files) and prints a line.
"""
from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from dom2_jax import data
from dom2_jax.training.reporting import write_json

from experiments.evaluate import load_run


def _define_flags():
    from absl import flags
    flags.DEFINE_string("workdir", None, "A trained DOM2 or MA-SfBC run (experiments.train).")
    flags.DEFINE_integer("num_states", 1000, "Dataset observations to sample from.")
    flags.DEFINE_integer("candidates", 32, "Samples per observation (K).")
    flags.DEFINE_integer("seed", 0, "Key of the state draw and the samples.")
    flags.DEFINE_integer("chunk", None, "Checkpoint chunk (default: the newest).")
    flags.mark_flag_as_required("workdir")


def sampler_and_critic(algo_name: str, state):
    """(sample(params_j, obs [M, d_o], key, K) -> [M, K, d_a], q(critic_j, obs_k, a) -> [2, ...],
    (policy params, critic params) with a leading agent axis) for one restored seed."""
    hp = state.hp
    if algo_name == "dom2":
        from dom2_jax.algos import dom2
        params = state.actor_ema if hp.ema_decay > 0 else state.actor.params
        return (functools.partial(dom2.sample_candidates, hp), hp.critic_module.apply,
                (params, state.critic_target))
    if algo_name == "masfbc":
        from dom2_jax.algos import masfbc
        return (functools.partial(masfbc.sample_candidates, hp), hp.critic_module.apply,
                (state.behavior.params, state.critic.params))
    raise SystemExit(f"error: candidates are defined for dom2 and masfbc, not {algo_name}")


def candidate_stats(algo_name: str, state, obs, actions, key, num_candidates: int):
    """The module docstring's statistics for ``state`` (one seed) on ``obs`` [M, A, d_o]
    (standardised) and the dataset ``actions`` [M, A, d_a]: a dict of per-agent lists."""
    sample, q_apply, (pol, crit) = sampler_and_critic(algo_name, state)

    def agent(p, c, o, a, k):
        cand = sample(p, o, k, num_candidates)                                  # [M, K, d]
        obs_k = jnp.broadcast_to(o[:, None], cand.shape[:-1] + o.shape[-1:])
        q = jnp.min(q_apply(c, obs_k, cand), axis=0)                            # [M, K]
        q_data = jnp.min(q_apply(c, o, a), axis=0)                              # [M]
        return {"sample_std": cand.std(axis=1).mean(),
                "saturation": (jnp.abs(cand) >= 1.0).mean(),
                "q_spread": q.std(axis=1).mean(),
                "q_gain": (q.max(axis=1) - q.mean(axis=1)).mean(),
                "q_mean": q.mean(), "q_data": q_data.mean()}
    keys = jax.random.split(key, obs.shape[1])
    out = jax.jit(jax.vmap(agent))(pol, crit, jnp.moveaxis(obs, 1, 0),
                                   jnp.moveaxis(actions, 1, 0), keys)
    return {k: [float(x) for x in np.asarray(v)] for k, v in out.items()}


def run_candidates(workdir: str, num_states: int = 1000, num_candidates: int = 32,
                   seed: int = 0, chunk=None) -> dict:
    if num_states < 1 or num_candidates < 2:
        raise SystemExit(f"error: need --num_states >= 1 and --candidates >= 2, got "
                         f"{num_states}, {num_candidates}")
    run = load_run(workdir, chunk)
    algo_name = run.resolved["algo"]
    ds = data.load(run.resolved["dataset"], expected_env=run.resolved["env"])
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(ds.num_transitions, size=min(num_states, ds.num_transitions),
                             replace=False))
    obs = jnp.asarray(ds.obs[idx])
    if run.stats is not None:
        obs = (obs - jnp.asarray(run.stats["mean"])) / jnp.asarray(run.stats["std"])
    state = jax.tree.map(lambda x: x[0], run.carry.state)  # first seed of the run
    stats = candidate_stats(algo_name, state, obs, jnp.asarray(ds.actions[idx]),
                            jax.random.PRNGKey(seed), num_candidates)
    updates = int(run.step) * int(run.config.eval_every)
    out = {"workdir": os.path.abspath(workdir), "algo": algo_name, "env": run.resolved["env"],
           "updates": updates, "num_states": int(len(idx)), "candidates": num_candidates,
           "seed": seed, "per_agent": stats,
           "mean": {k: float(np.mean(v)) for k, v in stats.items()}}
    path = os.path.join(workdir, "diagnostics",
                        f"candidates-u{updates}-K{num_candidates}-n{len(idx)}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_json(path, out)
    out["path"] = path
    return out


def main(argv):
    del argv
    from absl import flags
    f = flags.FLAGS
    out = run_candidates(f.workdir, f.num_states, f.candidates, f.seed, f.chunk)
    m = out["mean"]
    print(f"{out['algo']} u{out['updates']} K={out['candidates']}: sample_std "
          f"{m['sample_std']:.3f}, saturation {m['saturation']:.2f}, q_spread "
          f"{m['q_spread']:.3f}, q_gain {m['q_gain']:.3f}, Q mean {m['q_mean']:.2f} "
          f"(data {m['q_data']:.2f}); wrote {out['path']}")


if __name__ == "__main__":
    from absl import app
    _define_flags()
    app.run(main)
