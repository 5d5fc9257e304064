"""DOM2 config file: ``--config=experiments/configs/dom2.py`` (the default for --algo=dom2).

Every field is documented in ``dom2_jax.algos.dom2.default_config`` (agent.*) and
``experiments.configs.common.run_config`` (run-level); ``--helpfull`` lists them with values.
"""
from dom2_jax.algos import dom2
from experiments.configs import common
from experiments.configs.macql import ZETA, per_quality

TASK_DEFAULTS = {
    "mpe_spread": {"agent.num_solver_steps": 5},      # paper: N = 5 in MPE
    "mpe_tag": {"agent.num_solver_steps": 5},
    "mpe_world": {"agent.num_solver_steps": 5},
    "mamujoco_halfcheetah_2x3": {"agent.num_solver_steps": 10},  # paper: N = 10
}

# CQL weight per (task, quality): OMAR's tuned MA-CQL alphas (reference.md), the closest
# published values for a CQL critic on these datasets; other qualities take the nearest one.
QUALITY_DEFAULTS = per_quality(ZETA, "agent.zeta")

PRESETS = {
    "smoke": {"agent.noise_hidden": (32,), "agent.critic_hidden": (32, 32),
              "agent.num_solver_steps": 2, "agent.num_cql_actions": 2},
    "quick": {"agent.noise_hidden": (128, 64, 32), "agent.critic_hidden": (128, 128),
              "agent.batch_size": 128, "agent.actor_lr": 1e-3, "agent.critic_lr": 1e-3},
}
PRESETS["cpu"] = PRESETS["quick"]  # the CPU-scale protocol uses the quick networks


def get_config():
    c = common.run_config("dom2", dom2.default_config())
    c.augment = True  # Alg. 1 is part of DOM2
    return c
