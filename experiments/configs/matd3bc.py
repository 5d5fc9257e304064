"""MA-TD3+BC config file: ``--config=experiments/configs/matd3bc.py`` (default for --algo=matd3bc).

Fields: ``dom2_jax.algos.matd3bc.default_config`` (agent.*) and ``common.run_config``.
HalfCheetah uses TD3+BC's published D4RL settings (hidden 256x2, lr 3e-4, batch 256, tau 0.005,
alpha 2.5); MPE uses OMAR's MPE networks and schedule (as MA-CQL and OMAR do) so that the
deterministic-actor baselines differ only in their losses. alpha is not tuned per dataset
(TD3+BC uses 2.5 everywhere).
"""
from dom2_jax.algos import matd3bc
from experiments.configs import common
from experiments.configs.macql import OMAR_MPE as MPE  # lr 0.01 (MA-CQL alone uses 1e-3)

MUJOCO = {"agent.actor_hidden": (256, 256), "agent.critic_hidden": (256, 256),
          "agent.actor_lr": 3e-4, "agent.critic_lr": 3e-4, "agent.rho": 0.005,
          "agent.batch_size": 256}
TASK_DEFAULTS = {"mpe_spread": MPE, "mpe_tag": MPE, "mpe_world": MPE,
                 "mamujoco_halfcheetah_2x3": MUJOCO}
QUALITY_DEFAULTS = {("mpe_spread", "random"): {"num_updates": 6_000}}

PRESETS = {
    "smoke": {"agent.actor_hidden": (32,), "agent.critic_hidden": (32,)},
    "quick": {},
}
PRESETS["cpu"] = PRESETS["quick"]  # the CPU-scale protocol uses the quick networks


def get_config():
    return common.run_config("matd3bc", matd3bc.default_config())
