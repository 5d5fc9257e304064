"""MA-SfBC config file: ``--config=experiments/configs/masfbc.py`` (default for --algo=masfbc).

Fields: ``dom2_jax.algos.masfbc.default_config`` (agent.*) and ``common.run_config``. The
behaviour model uses DOM2's diffusion settings per task (N = 5 solver steps in MPE, 10 on
HalfCheetah); the selection temperature and expectile are not tuned per dataset.
"""
from dom2_jax.algos import masfbc
from experiments.configs import common

TASK_DEFAULTS = {
    "mpe_spread": {"agent.num_solver_steps": 5},
    "mpe_tag": {"agent.num_solver_steps": 5},
    "mpe_world": {"agent.num_solver_steps": 5},
    "mamujoco_halfcheetah_2x3": {"agent.num_solver_steps": 10},
}
QUALITY_DEFAULTS = {}

PRESETS = {
    "smoke": {"agent.noise_hidden": (32,), "agent.critic_hidden": (32, 32),
              "agent.value_hidden": (32, 32), "agent.num_solver_steps": 2,
              "agent.num_candidates": 4},
    "quick": {"agent.noise_hidden": (128, 64, 32), "agent.critic_hidden": (128, 128),
              "agent.value_hidden": (128, 128), "agent.batch_size": 128,
              "agent.behavior_lr": 1e-3, "agent.critic_lr": 1e-3, "agent.value_lr": 1e-3,
              "agent.num_candidates": 16},
}
PRESETS["cpu"] = PRESETS["quick"]  # the CPU-scale protocol uses the quick networks


def get_config():
    return common.run_config("masfbc", masfbc.default_config())
