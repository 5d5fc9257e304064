"""TD3 behaviour-policy config for the MPE tasks (OMAR's MPE hyper-parameters).

    python -m experiments.train_behaviour --env=mpe_spread --config=experiments/configs/td3_mpe.py \
        --config.num_envs=64
"""
from dom2_jax.online.td3 import default_config


def get_config():
    return default_config("mpe_spread")
