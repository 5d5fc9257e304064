"""BC config file: ``--config=experiments/configs/bc.py`` (the default for --algo=bc).

Fields: ``dom2_jax.algos.bc.default_config`` (agent.*) and ``common.run_config``. Network and
optimiser settings match the other deterministic-actor baselines per task (OMAR's MPE ones;
256x2 with lr 3e-4 on HalfCheetah).
"""
from dom2_jax.algos import bc
from experiments.configs import common

MPE = {"agent.actor_hidden": (64, 64), "agent.actor_lr": 0.01, "agent.batch_size": 1024,
       "num_updates": 2_000, "eval_every": 500}
MUJOCO = {"agent.actor_hidden": (256, 256), "agent.actor_lr": 3e-4, "agent.batch_size": 256}
TASK_DEFAULTS = {"mpe_spread": MPE, "mpe_tag": MPE, "mpe_world": MPE,
                 "mamujoco_halfcheetah_2x3": MUJOCO}
QUALITY_DEFAULTS = {}

PRESETS = {
    "smoke": {"agent.actor_hidden": (32,)},
    "quick": {},
}
PRESETS["cpu"] = PRESETS["quick"]  # the CPU-scale protocol uses the quick networks


def get_config():
    return common.run_config("bc", bc.default_config())
