"""The variance-preserving (VP) SDE with a linear beta schedule (Song et al. 2021).

    beta(t)      = beta_min + t (beta_max - beta_min),            t in [0, 1]
    log alpha_t  = -(beta_max - beta_min) t^2 / 4 - beta_min t / 2
    sigma_t      = sqrt(1 - alpha_t^2)
    lambda_t     = log(alpha_t / sigma_t)                          (half log-SNR)

``q(x_t | x_0) = N(alpha_t x_0, sigma_t^2 I)``. Every quantity is computed in log space so that
float32 stays finite on the whole of [1e-3, 1] (``sigma_t`` uses ``expm1``: at t = 1e-3,
1 - alpha_t^2 ~ 2e-4 would lose half its digits if formed by subtraction).
"""
from __future__ import annotations

import dataclasses

import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class VPSchedule:
    """Linear-beta VP schedule. Methods accept arrays of t (any shape) and are jittable."""

    beta_min: float = 0.1
    beta_max: float = 20.0

    def __post_init__(self):
        if not (self.beta_max > self.beta_min >= 0.0):
            raise ValueError(
                f"VPSchedule needs beta_max > beta_min >= 0, got beta_min={self.beta_min}, "
                f"beta_max={self.beta_max}")

    def log_alpha(self, t):
        t = jnp.asarray(t)
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def alpha(self, t):
        return jnp.exp(self.log_alpha(t))

    def log_sigma(self, t):
        # log sqrt(1 - alpha^2) = 0.5 log(-expm1(2 log alpha)), exact for small t.
        return 0.5 * jnp.log(-jnp.expm1(2.0 * self.log_alpha(t)))

    def sigma(self, t):
        return jnp.exp(self.log_sigma(t))

    def log_snr(self, t):
        """lambda_t = log(alpha_t / sigma_t) (DPM-Solver's lambda: half the log-SNR)."""
        return self.log_alpha(t) - self.log_sigma(t)

    def t_from_log_snr(self, lam):
        """Inverse of ``log_snr``: the t with lambda_t = lam.

        From e^{-2 lambda} = alpha^{-2} - 1 we get -2 log alpha = log(1 + e^{-2 lambda}) =: u and
        solve (b1 - b0)/2 t^2 + b0 t = u with the rationalised (cancellation-free) root.
        """
        lam = jnp.asarray(lam)
        u = jnp.logaddexp(-2.0 * lam, 0.0)
        b0, b1 = self.beta_min, self.beta_max
        return 2.0 * u / (b0 + jnp.sqrt(b0**2 + 2.0 * (b1 - b0) * u))

    def marginal(self, x0, t, noise):
        """x_t = alpha_t x0 + sigma_t noise, with t of shape x0.shape[:-1]."""
        return self.alpha(t)[..., None] * x0 + self.sigma(t)[..., None] * noise
