"""dom2_jax: DOM2 (Diffusion Offline Multi-agent Model) and offline MARL baselines in JAX."""

__version__ = "0.1.0"
