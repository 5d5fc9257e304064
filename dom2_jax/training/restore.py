"""Restore a trained ``experiments.train`` workdir: its resolved config, algorithm, environment,
observation statistics and a checkpoint (``load_run``). Used by ``experiments.evaluate`` and
``experiments.actor_stats``.
"""
from __future__ import annotations

import json
import os
from typing import Any, NamedTuple

import ml_collections

from dom2_jax import data, envs, registry
from dom2_jax.training.checkpoint import Checkpointer
from dom2_jax.training.trainer import carry_template, obs_statistics


class RunLoadError(ValueError):
    """A workdir that cannot be restored; the message names the workdir and the problem."""


def _fail(msg):
    raise RunLoadError(msg)


def read_resolved(workdir: str) -> dict:
    """The run's config.json (what ``experiments.train`` resolved and ran)."""
    cfg_path = os.path.join(workdir, "config.json")
    if not os.path.exists(cfg_path):
        _fail(f"{workdir} has no config.json: not an experiments.train workdir")
    try:
        with open(cfg_path) as f:
            return json.load(f)
    except ValueError as e:
        _fail(f"{cfg_path} is not valid JSON ({e}): the file is damaged")


class LoadedRun(NamedTuple):
    """A trained ``experiments.train`` workdir, restored (see ``load_run``)."""

    resolved: dict          # config.json
    results: dict           # results.json ({} for an unfinished run)
    config: Any             # the run's ml_collections config, agent fields completed
    algo: Any               # the dom2_jax.algos module
    env: Any                # the standard environment
    stats: Any              # observation statistics ({"mean", "std"}) or None
    carry: Any              # the restored TrainCarry (leading seed axis)
    step: int               # the checkpoint's chunk
    num_seeds: int
    filled: list            # agent fields absent from config.json (today's defaults used)


def load_run(workdir: str, chunk=None, dataset_arrays=None) -> LoadedRun:
    """Restores ``workdir``'s newest checkpoint (or chunk ``chunk``) with its config.

    ``dataset_arrays``: the run's dataset (``data.to_device``) when the caller has it already;
    it is read only for an unfinished run that standardised its observations. Raises
    ``RunLoadError`` naming what is missing."""
    resolved = read_resolved(workdir)
    config = ml_collections.ConfigDict(resolved["config"])
    algo = registry.algo_module(resolved["algo"])
    # Fields added to the algorithm after the run was trained take today's defaults; the
    # output lists them. Restoring only acts with the policy, so a field that changes the
    # update alone (e.g. DOM2's cql_policy_noise) does not change what is measured.
    agent = algo.default_config().to_dict()
    filled = sorted(set(agent) - set(config.agent.to_dict()))
    agent.update(config.agent.to_dict())
    config.agent = ml_collections.ConfigDict(agent)
    env = envs.make(resolved["env"], **dict(config.get("env_kwargs", {})))
    num_seeds = int(resolved.get("num_seeds", 1))

    res_path = os.path.join(workdir, "results.json")
    results = json.load(open(res_path)) if os.path.exists(res_path) else {}
    stats = None
    if bool(config.get("normalize_obs", False)):
        stats = results.get("obs_normalization")
        if stats is None:  # an unfinished run: the statistics of its whole dataset (the
            # trainer's come from the arrays it trained on: the same unless the run used
            # data_fraction < 1 or the augmentation, where they differ slightly)
            if dataset_arrays is None:
                if not os.path.isdir(resolved.get("dataset") or ""):
                    _fail(f"{workdir} standardised its observations, has no results.json with "
                          f"their statistics, and its dataset {resolved.get('dataset')!r} is "
                          "gone")
                dataset_arrays = data.to_device(data.load(resolved["dataset"]))
            stats = obs_statistics(dataset_arrays)

    template = carry_template(algo, config.agent, env, num_seeds)
    if not os.path.isdir(os.path.join(workdir, "checkpoints")):  # read-only: create nothing
        _fail(f"{workdir} has no checkpoints yet (the run has not finished its first chunk)")
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"))
    if ckpt.latest_step() is None:
        _fail(f"{workdir} has no complete checkpoint")
    if chunk is not None and int(chunk) not in ckpt.all_steps():
        _fail(f"{workdir} has no checkpoint {chunk}; it keeps {ckpt.all_steps()}")
    # the newest readable step (a damaged one is skipped with a warning, not moved)
    carry = ckpt.restore(template, None if chunk is None else int(chunk))
    step = ckpt.restored_step
    ckpt.close()
    return LoadedRun(resolved, results, config, algo, env, stats, carry, int(step), num_seeds,
                     filled)
