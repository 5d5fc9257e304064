"""TD3 behaviour-policy config for MAMuJoCo HalfCheetah 2x3 (OMAR/TD3 MuJoCo settings)."""
from dom2_jax.online.td3 import default_config


def get_config():
    return default_config("mamujoco_halfcheetah_2x3")
