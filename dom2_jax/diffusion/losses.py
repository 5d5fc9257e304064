"""The eps-prediction (denoising score matching) loss of the paper's Eq. 3."""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from dom2_jax.diffusion.schedule import VPSchedule


def eps_loss(eps_fn: Callable, x0: jax.Array, key: jax.Array, schedule: VPSchedule,
             t_end: float = 1e-3, per_sample: bool = False):
    """E_{t ~ U(t_end, 1), eps ~ N(0, I)} ||eps - eps_fn(alpha_t x0 + sigma_t eps, t)||^2.

    ``eps_fn(x_t, t)``: x_t [..., d], t x.shape[:-1]. The squared error is averaged over the d
    action dimensions (Diffusion-QL's convention, so that eta keeps its published scale) and over
    the batch; ``per_sample=True`` returns the per-sample loss [...] instead.
    """
    k_t, k_eps = jax.random.split(key)
    t = jax.random.uniform(k_t, x0.shape[:-1], x0.dtype, minval=t_end, maxval=1.0)
    noise = jax.random.normal(k_eps, x0.shape, x0.dtype)
    x_t = schedule.marginal(x0, t, noise)
    err = jnp.mean(jnp.square(noise - eps_fn(x_t, t)), axis=-1)
    return err if per_sample else jnp.mean(err)
