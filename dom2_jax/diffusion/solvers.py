"""Samplers for the diffusion ODE/SDE: DPM-Solver 1/2/3 (singlestep, DPM-Solver-fast, multistep),
DPM-Solver++(2M) and DDPM.

All samplers take a noise-prediction function ``eps_fn(x, t)`` (x of shape [..., d], t of shape
x.shape[:-1]) and an initial ``x_T ~ N(0, I)``, and integrate from T = 1 down to ``t_end``. They
are pure: jittable, differentiable end-to-end (the DOM2 Q-loss back-propagates through every
step) and usable under ``vmap``. Steps are a ``lax.scan`` over a precomputed time grid (pass
``unroll=True`` to unroll it; see BUILD_NOTES.md for when that is faster). The time grid is
built in the input's precision: float64 for float64 ``x_T`` (with ``jax_enable_x64``), float32
otherwise.

Formulas (Lu et al. 2022, "DPM-Solver", Algorithms 1-2 and Eq. 3.7; h = lambda_t - lambda_s,
s the current time, t < s the next one, s1 / s2 the intermediate times with
lambda_{s_i} = lambda_s + r_i h):

  order 1 (= DDIM):  x_t = (a_t/a_s) x_s - sig_t (e^h - 1) eps(x_s, s)
  order 2:           u  = (a_s1/a_s) x_s - sig_s1 (e^{r1 h} - 1) eps(x_s, s)
                     x_t = (a_t/a_s) x_s - sig_t (e^h - 1) eps_s
                           - sig_t/(2 r1) (e^h - 1) (eps(u, s1) - eps_s)
  order 3:           u1 = (a_s1/a_s) x_s - sig_s1 (e^{r1 h} - 1) eps_s
                     D1 = eps(u1, s1) - eps_s
                     u2 = (a_s2/a_s) x_s - sig_s2 (e^{r2 h} - 1) eps_s
                          - sig_s2 r2/r1 ((e^{r2 h} - 1)/(r2 h) - 1) D1
                     D2 = eps(u2, s2) - eps_s
                     x_t = (a_t/a_s) x_s - sig_t (e^h - 1) eps_s - sig_t/r2 ((e^h - 1)/h - 1) D2

The intermediate times are placed as the official implementation (LuChengTHU/dpm-solver,
``dpm_solver_pytorch.py``, ``DPM_Solver.sample``) places them: with the step's own grid rule
between s and t. On the "logsnr" grid they are uniform in lambda (r1 = 1/2; r1 = 1/3,
r2 = 2/3); on the "time_uniform" grid they are uniform in t (s1 = (s + t)/2; s1 = s + (t-s)/3,
s2 = t - (t-s)/3) and r_i = (lambda_{s_i} - lambda_s)/h follow from them.

An order-k singlestep step calls ``eps_fn`` k times, so ``num_steps`` steps cost k * num_steps
calls. ``dpm_solver_fast_sample`` and ``dpm_solver_multistep_sample`` take the number of
function evaluations (NFE) instead, as the official ``sample(steps=...)`` does;
``dpm_solver_official`` dispatches on the official method names.
"""
from __future__ import annotations

import itertools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from dom2_jax.diffusion.schedule import VPSchedule

EpsFn = Callable[[jax.Array, jax.Array], jax.Array]

GRIDS = ("logsnr", "time_uniform")
GRID_ALIASES = {"logSNR": "logsnr"}  # the official skip_type spelling
ORDERS = (1, 2, 3)
METHODS = ("singlestep", "singlestep_fixed", "multistep")  # the official ``sample`` methods


def _grid_name(grid: str) -> str:
    name = GRID_ALIASES.get(grid, grid)
    if name not in GRIDS:
        raise ValueError(f"unknown time grid {grid!r}; expected one of {GRIDS}")
    return name


def grid_dtype(dtype=None):
    """The dtype the time grid is built in for inputs of ``dtype``: float64 for float64 inputs
    (when x64 is enabled), float32 for everything else (float32, and half precisions, whose
    grids would be too coarse)."""
    if dtype is None:
        return jnp.dtype(jnp.float32)
    return jax.dtypes.canonicalize_dtype(jnp.promote_types(dtype, jnp.float32))


def time_grid(schedule: VPSchedule, num_steps: int, t_end: float = 1e-3, t_start: float = 1.0,
              grid: str = "logsnr", dtype=None) -> jax.Array:
    """Decreasing times [num_steps + 1] from ``t_start`` to ``t_end``, the official
    ``get_time_steps`` (with the end points pinned exactly).

    "logsnr" (or the official "logSNR"): uniform in lambda (DPM-Solver's recommended "logSNR"
    skip); "time_uniform": uniform in t. Every operation, end points included, runs in
    ``grid_dtype(dtype)``: float64 for ``dtype=jnp.float64``, else float32 (the default).
    """
    _check_steps(num_steps)
    grid = _grid_name(grid)
    dt = grid_dtype(dtype)
    t0, t1 = jnp.asarray(t_start, dt), jnp.asarray(t_end, dt)
    if grid == "logsnr":
        lam = jnp.linspace(schedule.log_snr(t0), schedule.log_snr(t1), num_steps + 1)
        ts = schedule.t_from_log_snr(lam)
        # Pin the end points exactly (the inverse is exact up to rounding).
        return ts.at[0].set(t0).at[-1].set(t1)
    return jnp.linspace(t0, t1, num_steps + 1)


def _check_steps(num_steps, what="num_steps"):
    if not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"{what} must be a positive Python int, got {num_steps!r}")


def _check_order(order):
    if order not in ORDERS:
        raise ValueError(f"DPM-Solver order must be one of {ORDERS}, got {order!r}")


def _full_t(x, t):
    return jnp.full(x.shape[:-1], t, dtype=x.dtype)


def _dpm_step(eps_fn, schedule, x, s, t, order, r1, r2, grid="logsnr"):
    """One singlestep DPM-Solver step of the given order from time s to t (< s): the official
    ``singlestep_dpm_solver_update`` (algorithm_type="dpmsolver", solver_type="dpmsolver").

    ``grid`` places the intermediate times as the official ``sample`` does: "logsnr" uses the
    given fractions of h (r1 = 1/2 for order 2; r1 = 1/3, r2 = 2/3 for order 3: uniform in
    lambda); "time_uniform" ignores r1, r2, puts s1 (s2) uniformly in t between s and t and
    derives r_i = (lambda_{s_i} - lambda_s)/h.
    """
    ls, lt = schedule.log_snr(s), schedule.log_snr(t)
    h = lt - ls
    a_s, a_t = schedule.alpha(s), schedule.alpha(t)
    sig_t = schedule.sigma(t)
    phi1 = jnp.expm1(h)  # e^h - 1
    eps_s = eps_fn(x, _full_t(x, s))
    if order == 1:
        return (a_t / a_s) * x - sig_t * phi1 * eps_s
    if _grid_name(grid) == "time_uniform":
        # the official torch.linspace(s, t, order + 1) interior points
        if order == 2:
            s1, s2 = s + (t - s) / 2.0, None
        else:
            step = (t - s) / 3.0
            s1, s2 = s + step, t - step
        r1 = (schedule.log_snr(s1) - ls) / h
        r2 = None if s2 is None else (schedule.log_snr(s2) - ls) / h
    else:
        s1 = schedule.t_from_log_snr(ls + r1 * h)
        s2 = None if order == 2 else schedule.t_from_log_snr(ls + r2 * h)
    if order == 2:
        u = (schedule.alpha(s1) / a_s) * x - schedule.sigma(s1) * jnp.expm1(r1 * h) * eps_s
        eps_u = eps_fn(u, _full_t(x, s1))
        return ((a_t / a_s) * x - sig_t * phi1 * eps_s
                - (sig_t / (2.0 * r1)) * phi1 * (eps_u - eps_s))
    # order 3
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


def _fractions(order):
    """The logSNR grid's r1, r2 for an order-k step (uniform in lambda)."""
    return (0.5, None) if order == 2 else (1.0 / 3.0, 2.0 / 3.0)


def _singlestep_scan(eps_fn, schedule, x, ts, order, grid, unroll, remat, return_trajectory):
    """Singlestep steps of one order over the consecutive times ``ts``: a ``lax.scan``."""
    r1, r2 = _fractions(order)

    def body(x, st):
        s, t = st
        x = _dpm_step(eps_fn, schedule, x, s, t, order, r1, r2, grid)
        return x, (x if return_trajectory else None)

    if remat:
        body = jax.checkpoint(body)
    return jax.lax.scan(body, x, (ts[:-1], ts[1:]), unroll=unroll)


def _multistep_update(schedule, x, ms, tps, t, order):
    """The official ``multistep_dpm_solver_update`` (algorithm_type="dpmsolver", solver_type=
    "dpmsolver") from tps[-1] to t: ``ms``, ``tps`` are the previous eps values and their times,
    oldest first (the last ``order`` of them are used).

      h = lambda_t - lambda_{p0},  r0 = h_0/h,  r1 = h_1/h  (h_0, h_1 the previous two steps)
      D1_0 = (m0 - m1)/r0,  D1_1 = (m1 - m2)/r1
      order 1: x_t = e^{log a_t - log a_p0} x - sig_t (e^h - 1) m0
      order 2:       ... - 1/2 sig_t (e^h - 1) D1_0
      order 3:       ... - sig_t phi_2 D1 - sig_t phi_3 D2,  phi_2 = (e^h - 1)/h - 1,
                     phi_3 = phi_2/h - 1/2,  D1 = D1_0 + r0/(r0 + r1) (D1_0 - D1_1),
                     D2 = (D1_0 - D1_1)/(r0 + r1)
    """
    t0, m0 = tps[-1], ms[-1]
    l0, lt = schedule.log_snr(t0), schedule.log_snr(t)
    h = lt - l0
    sig_t = schedule.sigma(t)
    phi_1 = jnp.expm1(h)
    x_t = jnp.exp(schedule.log_alpha(t) - schedule.log_alpha(t0)) * x - (sig_t * phi_1) * m0
    if order == 1:
        return x_t
    l1 = schedule.log_snr(tps[-2])
    r0 = (l0 - l1) / h
    d1_0 = (1.0 / r0) * (m0 - ms[-2])
    if order == 2:
        return x_t - 0.5 * (sig_t * phi_1) * d1_0
    r1 = (l1 - schedule.log_snr(tps[-3])) / h
    d1_1 = (1.0 / r1) * (ms[-2] - ms[-3])
    d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1)
    d2 = (1.0 / (r0 + r1)) * (d1_0 - d1_1)
    phi_2 = phi_1 / h - 1.0
    phi_3 = phi_2 / h - 0.5
    return x_t - (sig_t * phi_2) * d1 - (sig_t * phi_3) * d2


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
    """Singlestep DPM-Solver of order 1, 2 or 3 with ``num_steps`` steps: the official
    ``DPM_Solver(model_fn, ns, algorithm_type="dpmsolver").sample(x, steps=order * num_steps,
    order=order, skip_type=grid, method="singlestep_fixed", t_start=t_start, t_end=t_end)``
    (intermediate times placed by the grid's rule, see the module docstring).

    Args:
      eps_fn: noise prediction eps(x, t); x [..., d], t x.shape[:-1].
      x_T: initial noise [..., d].
      schedule: the VP schedule eps_fn was trained with.
      num_steps: number of solver steps N (order * N network calls).
      order: 1 (DDIM, the paper's Eq. 4), 2 or 3.
      t_end: final time (the diffusion is not integrated to 0 exactly).
      grid: "logsnr" (official "logSNR") or "time_uniform".
      unroll: forwarded to ``lax.scan``.
      return_trajectory: also return the states after every step [num_steps, ..., d].
      remat: ``jax.checkpoint`` each step, so a gradient through the sampler keeps only the
        N step inputs and recomputes each step's network activations in the backward pass
        (memory for about one more forward pass; same values).
    Returns:
      x_0 [..., d] (no clipping: callers clip to their action box), or (x_0, trajectory).
    """
    _check_order(order)
    grid = _grid_name(grid)
    ts = time_grid(schedule, num_steps, t_end=t_end, t_start=t_start, grid=grid,
                   dtype=x_T.dtype).astype(x_T.dtype)
    x0, traj = _singlestep_scan(eps_fn, schedule, x_T, ts, order, grid, unroll, remat,
                                return_trajectory)
    return (x0, traj) if return_trajectory else x0


def dpm_solver_fast_orders(nfe: int, order: int = 3) -> list[int]:
    """The per-step orders of DPM-Solver-fast (Lu et al. 2022; the official
    ``get_orders_and_timesteps_for_singlestep_solver``) for ``nfe`` function evaluations:

      order 3: K = nfe // 3 + 1 steps;  nfe % 3 == 0: [3] * (K - 2) + [2, 1]
                                        nfe % 3 == 1: [3] * (K - 1) + [1]
                                        nfe % 3 == 2: [3] * (K - 1) + [2]
      order 2: nfe even: [2] * (nfe // 2);  odd: [2] * (nfe // 2) + [1]
      order 1: [1] * nfe
    The orders always sum to ``nfe``.
    """
    _check_steps(nfe, "nfe")
    _check_order(order)
    if order == 3:
        k = nfe // 3 + 1
        if nfe % 3 == 0:
            return [3] * (k - 2) + [2, 1]
        if nfe % 3 == 1:
            return [3] * (k - 1) + [1]
        return [3] * (k - 1) + [2]
    if order == 2:
        return [2] * (nfe // 2) + [1] * (nfe % 2)
    return [1] * nfe


def dpm_solver_fast_grid(schedule: VPSchedule, nfe: int, order: int = 3, t_end: float = 1e-3,
                         t_start: float = 1.0, grid: str = "logsnr", dtype=None) -> jax.Array:
    """The step end points of DPM-Solver-fast, [len(orders) + 1], as the official
    ``get_orders_and_timesteps_for_singlestep_solver`` builds them: on the "logsnr" grid,
    uniform in lambda over the K steps whatever their orders ("to reproduce the results in
    DPM-Solver paper"); on "time_uniform", the ``nfe``-interval uniform grid taken at the
    cumulative sums of the orders (an order-k step spans k intervals)."""
    orders = dpm_solver_fast_orders(nfe, order)
    if _grid_name(grid) == "logsnr":
        return time_grid(schedule, len(orders), t_end=t_end, t_start=t_start, grid="logsnr",
                         dtype=dtype)
    fine = time_grid(schedule, nfe, t_end=t_end, t_start=t_start, grid="time_uniform",
                     dtype=dtype)
    return fine[np.cumsum([0] + orders)]


def dpm_solver_fast_sample(eps_fn: EpsFn, x_T: jax.Array, schedule: VPSchedule, nfe: int,
                           order: int = 3, t_end: float = 1e-3, grid: str = "logsnr",
                           t_start: float = 1.0, unroll: bool | int = 1, remat: bool = False):
    """DPM-Solver-fast: singlestep DPM-Solver mixing orders <= ``order`` to use exactly ``nfe``
    network calls (``dpm_solver_fast_orders``), the paper's recommended singlestep schedule: the
    official ``DPM_Solver(model_fn, ns, algorithm_type="dpmsolver").sample(x, steps=nfe,
    order=order, skip_type=grid, method="singlestep", t_start=t_start, t_end=t_end)``.

    Each run of equal orders is one ``lax.scan`` (at most three). Same conventions as
    ``dpm_solver_sample`` otherwise (noise prediction, no clipping, jittable, differentiable).
    """
    grid = _grid_name(grid)
    orders = dpm_solver_fast_orders(nfe, order)
    ts = dpm_solver_fast_grid(schedule, nfe, order, t_end=t_end, t_start=t_start, grid=grid,
                              dtype=x_T.dtype).astype(x_T.dtype)
    x, i = x_T, 0
    for k, run in itertools.groupby(orders):
        n = len(list(run))
        x, _ = _singlestep_scan(eps_fn, schedule, x, ts[i:i + n + 1], k, grid, unroll, remat,
                                False)
        i += n
    return x


def dpm_solver_multistep_orders(nfe: int, order: int = 3,
                                lower_order_final: bool = True) -> list[int]:
    """The order of each of the ``nfe`` multistep steps, as the official ``sample`` picks it:
    steps 1 .. order-1 warm up with orders 1 .. order-1; then ``order``, except that with
    ``lower_order_final`` and nfe < 10 step i takes min(order, nfe + 1 - i) (the last steps
    drop to orders 2, 1)."""
    _check_steps(nfe, "nfe")
    _check_order(order)
    if nfe < order:
        raise ValueError(f"multistep DPM-Solver of order {order} needs nfe >= {order}, got {nfe}")
    out = []
    for step in range(1, nfe + 1):
        if step < order:
            out.append(step)
        elif lower_order_final and nfe < 10:
            out.append(min(order, nfe + 1 - step))
        else:
            out.append(order)
    return out


def dpm_solver_multistep_sample(eps_fn: EpsFn, x_T: jax.Array, schedule: VPSchedule, nfe: int,
                                order: int = 3, t_end: float = 1e-3, grid: str = "logsnr",
                                t_start: float = 1.0, lower_order_final: bool = True,
                                unroll: bool | int = 1, remat: bool = False):
    """Multistep DPM-Solver (Adams-Bashforth-like; the multistep solvers of Lu et al. 2022b,
    "DPM-Solver++", in noise-prediction form): one network call per step, ``nfe`` steps on
    the ``nfe``-interval grid. The official ``DPM_Solver(model_fn, ns, algorithm_type=
    "dpmsolver").sample(x, steps=nfe, order=order, skip_type=grid, method="multistep",
    lower_order_final=lower_order_final, t_start=t_start, t_end=t_end)``; the per-step orders are
    ``dpm_solver_multistep_orders`` and each update is ``_multistep_update``. The official
    README recommends order 3 for unconditional sampling (order 2 with guidance).

    The steps of the main order (all but at most 2 warm-up and 2 final steps) are one
    ``lax.scan``. Same conventions as ``dpm_solver_sample`` otherwise.
    """
    grid = _grid_name(grid)
    orders = dpm_solver_multistep_orders(nfe, order, lower_order_final)
    ts = time_grid(schedule, nfe, t_end=t_end, t_start=t_start, grid=grid,
                   dtype=x_T.dtype).astype(x_T.dtype)

    def advance(carry, t, k, evaluate):
        """One order-k step to t; then eps at the new point joins the history (the last
        ``order`` values are kept) unless this is the final step."""
        x, ms, tps = carry
        x = _multistep_update(schedule, x, ms, tps, t, k)
        if evaluate:
            ms = (ms + (eps_fn(x, _full_t(x, t)),))[-order:]
            tps = (tps + (t,))[-order:]
        return x, ms, tps

    carry = (x_T, (eps_fn(x_T, _full_t(x_T, ts[0])),), (ts[0],))
    j = 1
    while j <= nfe:
        k = orders[j - 1]
        end = j  # steps j .. end-1: order k, history full, not the final step -> one scan
        while end < nfe and orders[end - 1] == k:
            end += 1
        if len(carry[1]) == order and end - j >= 2:
            body = lambda c, t, k=k: (advance(c, t, k, True), None)
            if remat:
                body = jax.checkpoint(body)
            carry, _ = jax.lax.scan(body, carry, ts[j:end], unroll=unroll)
            j = end
        else:
            carry = advance(carry, ts[j], k, j < nfe)
            j += 1
    return carry[0]


def dpm_solver_official(eps_fn: EpsFn, x_T: jax.Array, schedule: VPSchedule, steps: int,
                        order: int, method: str, grid: str = "logsnr", t_end: float = 1e-3,
                        t_start: float = 1.0, lower_order_final: bool = True,
                        unroll: bool | int = 1, remat: bool = False):
    """DPM-Solver by the official method names: ``DPM_Solver(model_fn, ns, algorithm_type=
    "dpmsolver").sample(x, steps, t_start, t_end, order, skip_type=grid, method,
    lower_order_final)`` with ``steps`` = the number of function evaluations, as there.

    method: "singlestep" (DPM-Solver-fast, ``dpm_solver_fast_sample``), "multistep"
    (``dpm_solver_multistep_sample``) or "singlestep_fixed" (``dpm_solver_sample`` with
    ``steps // order`` steps of order ``order``). grid: "logsnr"/"logSNR" or "time_uniform" (our
    default "logsnr"; the official default is "time_uniform").
    """
    if method == "singlestep":
        return dpm_solver_fast_sample(eps_fn, x_T, schedule, steps, order=order, t_end=t_end,
                                      grid=grid, t_start=t_start, unroll=unroll, remat=remat)
    if method == "multistep":
        return dpm_solver_multistep_sample(eps_fn, x_T, schedule, steps, order=order,
                                           t_end=t_end, grid=grid, t_start=t_start,
                                           lower_order_final=lower_order_final, unroll=unroll,
                                           remat=remat)
    if method == "singlestep_fixed":
        _check_steps(steps, "steps")
        _check_order(order)
        if steps < order:
            raise ValueError(f"singlestep_fixed of order {order} needs steps >= {order}")
        return dpm_solver_sample(eps_fn, x_T, schedule, steps // order, order=order, t_end=t_end,
                                 grid=grid, t_start=t_start, unroll=unroll, remat=remat)
    raise ValueError(f"unknown DPM-Solver method {method!r}; expected one of {METHODS}")


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
    ts = time_grid(schedule, num_steps, t_end=t_end, t_start=t_start, grid=grid,
                   dtype=x_T.dtype).astype(x_T.dtype)
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
    ts = time_grid(schedule, num_steps, t_end=t_end, t_start=t_start, grid=grid,
                   dtype=x_T.dtype).astype(x_T.dtype)
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
    """Dispatch by name: "dpm1" | "dpm2" | "dpm3" | "dpmpp2m" | "ddpm" (ddpm needs ``key``).

    "dpmpp2m" is the official ``algorithm_type="dpmsolver++"`` multistep order 2 with
    ``lower_order_final=False`` (the same for NFE >= 10). DPM-Solver-fast and multistep
    DPM-Solver: ``dpm_solver_fast_sample``, ``dpm_solver_multistep_sample``,
    ``dpm_solver_official``."""
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
