"""Samplers for the diffusion ODE/SDE: DPM-Solver 1/2/3, DPM-Solver++(2M) and DDPM.

All samplers take a noise-prediction function ``eps_fn(x, t)`` (x of shape [..., d], t of shape
x.shape[:-1]) and an initial ``x_T ~ N(0, I)``, and integrate from T = 1 down to ``t_end``. They
are pure: jittable, differentiable end-to-end (the DOM2 Q-loss back-propagates through every
step) and usable under ``vmap``. Steps are a ``lax.scan`` over a precomputed time grid (pass
``unroll=True`` to unroll it; see BUILD_NOTES.md for when that is faster).

Formulas (Lu et al. 2022, "DPM-Solver", Algorithms 1-2 and Eq. 3.7; h = lambda_t - lambda_s,
s the current time, t < s the next one):

  order 1 (= DDIM):  x_t = (a_t/a_s) x_s - sig_t (e^h - 1) eps(x_s, s)
  order 2 (r1=1/2):  s1 = t_lambda(lambda_s + r1 h)
                     u  = (a_s1/a_s) x_s - sig_s1 (e^{r1 h} - 1) eps(x_s, s)
                     x_t = (a_t/a_s) x_s - sig_t (e^h - 1) eps_s
                           - sig_t/(2 r1) (e^h - 1) (eps(u, s1) - eps_s)
  order 3 (r1=1/3, r2=2/3):
                     u1 = (a_s1/a_s) x_s - sig_s1 (e^{r1 h} - 1) eps_s
                     D1 = eps(u1, s1) - eps_s
                     u2 = (a_s2/a_s) x_s - sig_s2 (e^{r2 h} - 1) eps_s
                          - sig_s2 r2/r1 ((e^{r2 h} - 1)/(r2 h) - 1) D1
                     D2 = eps(u2, s2) - eps_s
                     x_t = (a_t/a_s) x_s - sig_t (e^h - 1) eps_s - sig_t/r2 ((e^h - 1)/h - 1) D2

An order-k step calls ``eps_fn`` k times, so ``num_steps`` steps cost k * num_steps calls.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from dom2_jax.diffusion.schedule import VPSchedule

EpsFn = Callable[[jax.Array, jax.Array], jax.Array]

GRIDS = ("logsnr", "time_uniform")
ORDERS = (1, 2, 3)


def time_grid(schedule: VPSchedule, num_steps: int, t_end: float = 1e-3, t_start: float = 1.0,
              grid: str = "logsnr") -> jax.Array:
    """Decreasing times [num_steps + 1] from ``t_start`` to ``t_end``.

    "logsnr": uniform in lambda (DPM-Solver's recommended "logSNR" skip); "time_uniform": uniform
    in t.
    """
    _check_steps(num_steps)
    if grid == "logsnr":
        lam = jnp.linspace(schedule.log_snr(jnp.float32(t_start)),
                           schedule.log_snr(jnp.float32(t_end)), num_steps + 1)
        ts = schedule.t_from_log_snr(lam)
        # Pin the end points exactly (the inverse is exact up to rounding).
        return ts.at[0].set(t_start).at[-1].set(t_end)
    if grid == "time_uniform":
        return jnp.linspace(jnp.float32(t_start), jnp.float32(t_end), num_steps + 1)
    raise ValueError(f"unknown time grid {grid!r}; expected one of {GRIDS}")


def _check_steps(num_steps):
    if not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive Python int, got {num_steps!r}")


def _full_t(x, t):
    return jnp.full(x.shape[:-1], t, dtype=x.dtype)


def _dpm_step(eps_fn, schedule, x, s, t, order, r1, r2):
    """One singlestep DPM-Solver step of the given order from time s to t (< s)."""
    ls, lt = schedule.log_snr(s), schedule.log_snr(t)
    h = lt - ls
    a_s, a_t = schedule.alpha(s), schedule.alpha(t)
    sig_t = schedule.sigma(t)
    phi1 = jnp.expm1(h)  # e^h - 1
    eps_s = eps_fn(x, _full_t(x, s))
    if order == 1:
        return (a_t / a_s) * x - sig_t * phi1 * eps_s
    if order == 2:
        s1 = schedule.t_from_log_snr(ls + r1 * h)
        u = (schedule.alpha(s1) / a_s) * x - schedule.sigma(s1) * jnp.expm1(r1 * h) * eps_s
        eps_u = eps_fn(u, _full_t(x, s1))
        return ((a_t / a_s) * x - sig_t * phi1 * eps_s
                - (sig_t / (2.0 * r1)) * phi1 * (eps_u - eps_s))
    # order 3
    s1 = schedule.t_from_log_snr(ls + r1 * h)
    s2 = schedule.t_from_log_snr(ls + r2 * h)
    phi_11 = jnp.expm1(r1 * h)
    phi_12 = jnp.expm1(r2 * h)
    u1 = (schedule.alpha(s1) / a_s) * x - schedule.sigma(s1) * phi_11 * eps_s
    d1 = eps_fn(u1, _full_t(x, s1)) - eps_s
    sig_s2 = schedule.sigma(s2)
    u2 = ((schedule.alpha(s2) / a_s) * x - sig_s2 * phi_12 * eps_s
          - sig_s2 * (r2 / r1) * (phi_12 / (r2 * h) - 1.0) * d1)
    d2 = eps_fn(u2, _full_t(x, s2)) - eps_s
    return ((a_t / a_s) * x - sig_t * phi1 * eps_s
            - (sig_t / r2) * (phi1 / h - 1.0) * d2)


def _dpmpp2m_step(eps_fn, schedule, x, x0_prev, h_prev, s, t, first):
    """One DPM-Solver++(2M) step from s to t (< s): returns (x_t, x0(x, s), h). ``first``
    (a bool, traced or not) takes the first-order step that starts the multistep chain."""
    a_s, sig_s = schedule.alpha(s), schedule.sigma(s)
    h = schedule.log_snr(t) - schedule.log_snr(s)
    x0 = (x - sig_s * eps_fn(x, _full_t(x, s))) / a_s
    r = h_prev / h
    d = jnp.where(first, x0, (1.0 + 0.5 / r) * x0 - (0.5 / r) * x0_prev)
    x_new = (schedule.sigma(t) / sig_s) * x - schedule.alpha(t) * jnp.expm1(-h) * d
    return x_new, x0, h


def _ddpm_step(eps_fn, schedule, x, s, t, noise, last):
    """One ancestral step from s to t (< s) with standard-normal ``noise`` (not added when
    ``last``, a bool, traced or not)."""
    a_s, a_t = schedule.alpha(s), schedule.alpha(t)
    sig_s, sig_t = schedule.sigma(s), schedule.sigma(t)
    x0_hat = (x - sig_s * eps_fn(x, _full_t(x, s))) / a_s
    a_st = a_s / a_t
    var_st = sig_s**2 - a_st**2 * sig_t**2
    mean = (a_st * sig_t**2 / sig_s**2) * x + (a_t * var_st / sig_s**2) * x0_hat
    std = jnp.sqrt(jnp.maximum(var_st * sig_t**2 / sig_s**2, 0.0))
    return mean + jnp.where(last, 0.0, std) * noise


def dpm_solver_sample(eps_fn: EpsFn, x_T: jax.Array, schedule: VPSchedule, num_steps: int,
                      order: int = 1, t_end: float = 1e-3, grid: str = "logsnr",
                      t_start: float = 1.0, unroll: bool | int = 1,
                      return_trajectory: bool = False, remat: bool = False):
    """Singlestep DPM-Solver of order 1, 2 or 3 with ``num_steps`` steps.

    Args:
      eps_fn: noise prediction eps(x, t); x [..., d], t x.shape[:-1].
      x_T: initial noise [..., d].
      schedule: the VP schedule eps_fn was trained with.
      num_steps: number of solver steps N (order * N network calls).
      order: 1 (DDIM, the paper's Eq. 4), 2 or 3.
      t_end: final time (the diffusion is not integrated to 0 exactly).
      grid: "logsnr" or "time_uniform".
      unroll: forwarded to ``lax.scan``.
      return_trajectory: also return the states after every step [num_steps, ..., d].
      remat: ``jax.checkpoint`` each step, so a gradient through the sampler keeps only the
        N step inputs and recomputes each step's network activations in the backward pass
        (memory for about one more forward pass; same values).
    Returns:
      x_0 [..., d] (no clipping: callers clip to their action box), or (x_0, trajectory).
    """
    if order not in ORDERS:
        raise ValueError(f"DPM-Solver order must be one of {ORDERS}, got {order!r}")
    ts = time_grid(schedule, num_steps, t_end=t_end, t_start=t_start, grid=grid).astype(x_T.dtype)
    r1, r2 = (0.5, None) if order == 2 else (1.0 / 3.0, 2.0 / 3.0)

    def body(x, st):
        s, t = st
        x = _dpm_step(eps_fn, schedule, x, s, t, order, r1, r2)
        return x, (x if return_trajectory else None)

    if remat:
        body = jax.checkpoint(body)
    x0, traj = jax.lax.scan(body, x_T, (ts[:-1], ts[1:]), unroll=unroll)
    return (x0, traj) if return_trajectory else x0


def dpm_solver_pp_2m_sample(eps_fn: EpsFn, x_T: jax.Array, schedule: VPSchedule, num_steps: int,
                            t_end: float = 1e-3, grid: str = "logsnr", t_start: float = 1.0,
                            unroll: bool | int = 1):
    """DPM-Solver++(2M): the second-order multistep solver in data-prediction form
    (Lu et al. 2022b, Algorithm 2). The first step is first order; every later step reuses the
    previous data prediction, so ``num_steps`` steps cost ``num_steps`` network calls.

      x0(x, s) = (x - sig_s eps(x, s)) / a_s
      D_i      = (1 + 1/(2 r_i)) x0_{i-1} - 1/(2 r_i) x0_{i-2},   r_i = h_{i-1} / h_i
      x_{t_i}  = (sig_{t_i}/sig_{t_{i-1}}) x - a_{t_i} (e^{-h_i} - 1) D_i
    """
    ts = time_grid(schedule, num_steps, t_end=t_end, t_start=t_start, grid=grid).astype(x_T.dtype)
    idx = jnp.arange(num_steps)

    def body(carry, inp):
        i, s, t = inp
        return _dpmpp2m_step(eps_fn, schedule, *carry, s, t, i == 0), None

    init = (x_T, jnp.zeros_like(x_T), jnp.ones((), x_T.dtype))
    (x0, _, _), _ = jax.lax.scan(body, init, (idx, ts[:-1], ts[1:]), unroll=unroll)
    return x0


def ddpm_sample(eps_fn: EpsFn, x_T: jax.Array, schedule: VPSchedule, num_steps: int,
                key: jax.Array, t_end: float = 1e-3, grid: str = "time_uniform",
                t_start: float = 1.0, unroll: bool | int = 1):
    """Ancestral (DDPM) sampling on the same time grid: x_t ~ q(x_t | x_s, x0_hat) with
    x0_hat = (x_s - sig_s eps)/a_s, the exact Gaussian posterior of the VP forward process:

      a_{s|t} = a_s/a_t,  sig_{s|t}^2 = sig_s^2 - a_{s|t}^2 sig_t^2
      mean = a_{s|t} sig_t^2/sig_s^2 x_s + a_t sig_{s|t}^2/sig_s^2 x0_hat
      var  = sig_{s|t}^2 sig_t^2 / sig_s^2       (no noise is added on the final step)
    """
    ts = time_grid(schedule, num_steps, t_end=t_end, t_start=t_start, grid=grid).astype(x_T.dtype)
    keys = jax.random.split(key, num_steps)
    last = jnp.arange(num_steps) == num_steps - 1

    def body(x, inp):
        s, t, k, is_last = inp
        noise = jax.random.normal(k, x.shape, x.dtype)
        return _ddpm_step(eps_fn, schedule, x, s, t, noise, is_last), None

    x0, _ = jax.lax.scan(body, x_T, (ts[:-1], ts[1:], keys, last), unroll=unroll)
    return x0


SOLVERS = ("dpm1", "dpm2", "dpm3", "dpmpp2m", "ddpm")


def sample(solver: str, eps_fn: EpsFn, x_T: jax.Array, schedule: VPSchedule, num_steps: int,
           key: jax.Array | None = None, t_end: float = 1e-3, grid: str | None = None,
           unroll: bool | int = 1):
    """Dispatch by name: "dpm1" | "dpm2" | "dpm3" | "dpmpp2m" | "ddpm" (ddpm needs ``key``)."""
    if solver in ("dpm1", "dpm2", "dpm3"):
        return dpm_solver_sample(eps_fn, x_T, schedule, num_steps, order=int(solver[-1]),
                                 t_end=t_end, grid=grid or "logsnr", unroll=unroll)
    if solver == "dpmpp2m":
        return dpm_solver_pp_2m_sample(eps_fn, x_T, schedule, num_steps, t_end=t_end,
                                       grid=grid or "logsnr", unroll=unroll)
    if solver == "ddpm":
        if key is None:
            raise ValueError("the ddpm sampler is stochastic and needs a PRNG key")
        return ddpm_sample(eps_fn, x_T, schedule, num_steps, key, t_end=t_end,
                           grid=grid or "time_uniform", unroll=unroll)
    raise ValueError(f"unknown solver {solver!r}; expected one of {SOLVERS}")


def network_calls(solver: str, num_steps: int) -> int:
    """Number of eps_fn evaluations a solver makes for ``num_steps`` steps."""
    if solver in ("dpm1", "dpm2", "dpm3"):
        return int(solver[-1]) * num_steps
    if solver in ("dpmpp2m", "ddpm"):
        return num_steps
    raise ValueError(f"unknown solver {solver!r}; expected one of {SOLVERS}")
