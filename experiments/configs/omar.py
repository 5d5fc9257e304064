"""OMAR config file: ``--config=experiments/configs/omar.py`` (the default for --algo=omar).

Fields: ``dom2_jax.algos.omar.default_config`` (agent.*) and ``common.run_config`` (run-level).
Per-task values follow OMAR's public code (``ling-pan/OMAR``; see notes/baselines.md).
"""
from dom2_jax.algos import omar
from experiments.configs import common
from experiments.configs.macql import MUJOCO, ZETA, per_quality
from experiments.configs.macql import OMAR_MPE as MPE

# OMAR code: MPE uses the Gaussian search (3 iterations x 10 samples, softmax refit), MuJoCo the
# CEM (2 iterations x 20 samples, 5 elites); mu0 = 0 and sigma0 = 2 for both.
MPE_SEARCH = {"agent.search": "gaussian", "agent.search_iters": 3, "agent.search_samples": 10}
MUJOCO_SEARCH = {"agent.search": "cem", "agent.search_iters": 2, "agent.search_samples": 20,
                 "agent.search_elites": 5}
TASK_DEFAULTS = {"mpe_spread": {**MPE, **MPE_SEARCH}, "mpe_tag": {**MPE, **MPE_SEARCH},
                 "mpe_world": {**MPE, **MPE_SEARCH},
                 "mamujoco_halfcheetah_2x3": {**MUJOCO, **MUJOCO_SEARCH}}

# OMAR's tuned omar_coe (c) per task and quality (reference.md; OMAR code's env_config_map).
C = {
    "mpe_spread": dict(random=1.0, medium_replay=1.0, medium=1.0, expert=1.0),
    "mpe_tag": dict(random=0.9, medium_replay=0.9, medium=0.7, expert=0.9),
    "mpe_world": dict(random=1.0, medium_replay=0.7, medium=0.1, expert=0.9),
    "mamujoco_halfcheetah_2x3": dict(random=1.0, medium_replay=0.9, medium=0.7, expert=0.5),
}
QUALITY_DEFAULTS = per_quality(ZETA, "agent.zeta")
for key, val in per_quality(C, "agent.c").items():
    QUALITY_DEFAULTS[key].update(val)
QUALITY_DEFAULTS[("mpe_spread", "random")]["num_updates"] = 6_000  # OMAR: 600k steps

PRESETS = {
    "smoke": {"agent.actor_hidden": (32,), "agent.critic_hidden": (32,),
              "agent.num_cql_actions": 2, "agent.search_samples": 4, "agent.search_elites": 2,
              "agent.search_iters": 2},
    "quick": {},  # per-task settings kept (see experiments/configs/macql.py)
}
PRESETS["cpu"] = PRESETS["quick"]  # the CPU-scale protocol uses the quick networks


def get_config():
    return common.run_config("omar", omar.default_config())
