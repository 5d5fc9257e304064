"""The one list of algorithms, tasks and dataset qualities (no JAX import: the report and the
launchers' flag definitions read it).

Every launcher, config file, report and test takes its names from here; the modules behind a
name are imported only when asked for (``algo_module``, ``dom2_jax.envs.make``).
"""
from __future__ import annotations

import importlib

# --algo name -> module implementing default_config / init / update / act (the paper puts
# DOM2 last in its tables; ALGO_ORDER is that column order).
ALGO_MODULES = {
    "dom2": "dom2_jax.algos.dom2",
    "macql": "dom2_jax.algos.macql",
    "omar": "dom2_jax.algos.omar",
    "masfbc": "dom2_jax.algos.masfbc",
    "matd3bc": "dom2_jax.algos.matd3bc",
    "bc": "dom2_jax.algos.bc",
}
ALGOS = tuple(ALGO_MODULES)
ALGO_ORDER = ("bc", "matd3bc", "macql", "omar", "masfbc", "dom2")
ALGO_LABELS = {"bc": "BC", "matd3bc": "MA-TD3+BC", "macql": "MA-CQL", "omar": "OMAR",
               "masfbc": "MA-SfBC", "dom2": "DOM2"}

# task name -> "module:factory" of its environment (``dom2_jax.envs.make``).
TASK_FACTORIES = {
    "mpe_spread": "dom2_jax.envs.mpe.scenarios:make_spread",
    "mpe_tag": "dom2_jax.envs.mpe.scenarios:make_tag",
    "mpe_world": "dom2_jax.envs.mpe.scenarios:make_world",
    "mamujoco_halfcheetah_2x3": "dom2_jax.envs.mamujoco.halfcheetah:make_halfcheetah_2x3",
}
TASKS = tuple(TASK_FACTORIES)

# The paper's six dataset qualities (D4RL's recipe), worst first.
QUALITIES = ("random", "random-medium", "medium-replay", "medium", "medium-expert", "expert")


def algo_module(name: str):
    """The module implementing ``--algo=name`` (default_config / init / update / act)."""
    if name not in ALGO_MODULES:
        raise ValueError(f"unknown algorithm {name!r}; expected one of {ALGOS}")
    return importlib.import_module(ALGO_MODULES[name])


def task_factory(name: str):
    """The environment factory of task ``name``."""
    if name not in TASK_FACTORIES:
        raise ValueError(f"unknown environment {name!r}; expected one of {sorted(TASKS)}")
    module_name, factory_name = TASK_FACTORIES[name].split(":")
    return getattr(importlib.import_module(module_name), factory_name)
