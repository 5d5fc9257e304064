"""DPM-Solver against the official method (LuChengTHU/dpm-solver, ``dpm_solver_pytorch.py``).

Self-contained: no torch, no network. The reference below is a NumPy float64 transcription of
the official arithmetic for our setting (``NoiseScheduleVP('linear', 0.1, 20.)``,
``DPM_Solver(..., algorithm_type="dpmsolver")``, solver_type "dpmsolver", ``sample`` with
method "singlestep_fixed" / "singlestep" / "multistep", skip_type "logSNR" / "time_uniform"),
kept line by line close to the original so a reader can check it against the published code.
The other tests use closed forms: Gaussian data, whose exact probability-flow map is known, and
the published order rules. Float64 runs use the ``jax.enable_x64`` context manager so the rest
of the test process stays in float32.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dom2_jax import diffusion
from dom2_jax.diffusion import VPSchedule

SCHED = VPSchedule()


# ----------------------------------------------------------------------------- reference
class OfficialNumpy:
    """The official NoiseScheduleVP('linear') + DPM_Solver('dpmsolver') in NumPy float64."""
    b0, b1 = 0.1, 20.0

    def log_alpha(self, t):
        return -0.25 * t**2 * (self.b1 - self.b0) - 0.5 * t * self.b0

    def std(self, t):
        return np.sqrt(1.0 - np.exp(2.0 * self.log_alpha(t)))

    def lam(self, t):
        la = self.log_alpha(t)
        return la - 0.5 * np.log(1.0 - np.exp(2.0 * la))

    def inverse_lambda(self, lamb):
        tmp = 2.0 * (self.b1 - self.b0) * np.logaddexp(-2.0 * lamb, 0.0)
        return tmp / (np.sqrt(self.b0**2 + tmp) + self.b0) / (self.b1 - self.b0)

    def get_time_steps(self, skip_type, t_T, t_0, n):
        if skip_type == "logSNR":
            return self.inverse_lambda(np.linspace(self.lam(t_T), self.lam(t_0), n + 1))
        return np.linspace(t_T, t_0, n + 1)

    def singlestep(self, eps, x, s, t, order, r1, r2):
        la, std, lam = self.log_alpha, self.std, self.lam
        h = lam(t) - lam(s)
        m_s = eps(x, s)
        if order == 1:
            return np.exp(la(t) - la(s)) * x - std(t) * np.expm1(h) * m_s
        s1 = self.inverse_lambda(lam(s) + r1 * h)
        x_s1 = np.exp(la(s1) - la(s)) * x - std(s1) * np.expm1(r1 * h) * m_s
        m_s1 = eps(x_s1, s1)
        if order == 2:
            return (np.exp(la(t) - la(s)) * x - std(t) * np.expm1(h) * m_s
                    - (0.5 / r1) * std(t) * np.expm1(h) * (m_s1 - m_s))
        s2 = self.inverse_lambda(lam(s) + r2 * h)
        phi_22 = np.expm1(r2 * h) / (r2 * h) - 1.0
        x_s2 = (np.exp(la(s2) - la(s)) * x - std(s2) * np.expm1(r2 * h) * m_s
                - r2 / r1 * std(s2) * phi_22 * (m_s1 - m_s))
        m_s2 = eps(x_s2, s2)
        phi_2 = np.expm1(h) / h - 1.0
        return (np.exp(la(t) - la(s)) * x - std(t) * np.expm1(h) * m_s
                - (1.0 / r2) * std(t) * phi_2 * (m_s2 - m_s))

    def multistep(self, x, ms, tps, t, order):
        la, std, lam = self.log_alpha, self.std, self.lam
        h = lam(t) - lam(tps[-1])
        phi_1 = np.expm1(h)
        x_t = np.exp(la(t) - la(tps[-1])) * x - std(t) * phi_1 * ms[-1]
        if order == 1:
            return x_t
        r0 = (lam(tps[-1]) - lam(tps[-2])) / h
        d1_0 = (ms[-1] - ms[-2]) / r0
        if order == 2:
            return x_t - 0.5 * std(t) * phi_1 * d1_0
        r1 = (lam(tps[-2]) - lam(tps[-3])) / h
        d1_1 = (ms[-2] - ms[-3]) / r1
        d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1)
        d2 = (d1_0 - d1_1) / (r0 + r1)
        phi_2 = phi_1 / h - 1.0
        return x_t - std(t) * phi_2 * d1 - std(t) * (phi_2 / h - 0.5) * d2

    def orders_singlestep(self, steps, order):
        if order == 3:
            k = steps // 3 + 1
            return ([3] * (k - 2) + [2, 1] if steps % 3 == 0 else
                    [3] * (k - 1) + [1] if steps % 3 == 1 else [3] * (k - 1) + [2])
        if order == 2:
            return [2] * (steps // 2) if steps % 2 == 0 else [2] * (steps // 2) + [1]
        return [1] * steps

    def sample(self, eps, x, steps, order, skip_type, method, lower_order_final=True,
               t_T=1.0, t_0=1e-3):
        if method == "multistep":
            ts = self.get_time_steps(skip_type, t_T, t_0, steps)
            tps, ms = [ts[0]], [eps(x, ts[0])]
            for step in range(1, order):
                x = self.multistep(x, ms, tps, ts[step], step)
                tps.append(ts[step])
                ms.append(eps(x, ts[step]))
            for step in range(order, steps + 1):
                k = min(order, steps + 1 - step) if lower_order_final and steps < 10 else order
                x = self.multistep(x, ms, tps, ts[step], k)
                tps, ms = tps[1:] + [ts[step]], ms[1:] + [None]
                if step < steps:
                    ms[-1] = eps(x, ts[step])
            return x
        if method == "singlestep":
            orders = self.orders_singlestep(steps, order)
            if skip_type == "logSNR":
                outer = self.get_time_steps(skip_type, t_T, t_0, len(orders))
            else:
                outer = self.get_time_steps(skip_type, t_T, t_0, steps)[np.cumsum([0] + orders)]
        else:  # singlestep_fixed
            orders = [order] * (steps // order)
            outer = self.get_time_steps(skip_type, t_T, t_0, len(orders))
        for i, k in enumerate(orders):
            s, t = outer[i], outer[i + 1]
            lam_inner = self.lam(self.get_time_steps(skip_type, s, t, k))
            h = lam_inner[-1] - lam_inner[0]
            r1 = None if k <= 1 else (lam_inner[1] - lam_inner[0]) / h
            r2 = None if k <= 2 else (lam_inner[2] - lam_inner[0]) / h
            x = self.singlestep(eps, x, s, t, k, r1, r2)
        return x


REF = OfficialNumpy()
A = np.array([[0.9, -0.4, 0.3], [0.2, 0.7, -0.5], [-0.6, 0.1, 0.8]])
B = np.array([0.5, -1.0, 0.3])


def tanh_eps_np(x, t):
    return np.tanh(x @ A + B * t)


def tanh_eps_jax(x, t):
    return jnp.tanh(x @ jnp.asarray(A, x.dtype) + jnp.asarray(B, x.dtype) * t[..., None])


def x_T(dtype):
    return jax.random.normal(jax.random.PRNGKey(0), (8, 3), jnp.float32).astype(dtype)


def ours(method, steps, order, grid, lower_order_final=True, dtype=jnp.float64):
    x = x_T(dtype)
    if method == "singlestep_fixed":  # the public contract: num_steps steps of one order
        return diffusion.dpm_solver_sample(tanh_eps_jax, x, SCHED, steps // order, order=order,
                                           grid=grid)
    return diffusion.dpm_solver_official(tanh_eps_jax, x, SCHED, steps, order, method, grid=grid,
                                         lower_order_final=lower_order_final)


# ----------------------------------------------------------------------------- vs the official
@pytest.mark.parametrize("method", ["singlestep_fixed", "singlestep", "multistep"])
@pytest.mark.parametrize("grid", ["logsnr", "time_uniform"])
def test_matches_official_arithmetic_float64(method, grid):
    """Every order, float64, a nonlinear eps: ours equals the official loop to rounding
    (measured against the PyTorch original: <= 3e-11, BUILD_NOTES.md)."""
    skip = {"logsnr": "logSNR", "time_uniform": "time_uniform"}[grid]
    with jax.enable_x64(True):
        x = np.asarray(x_T(jnp.float64))
        configs = {"singlestep_fixed": ((6, True),), "singlestep": ((6, True), (8, True)),
                   "multistep": ((6, True), (7, False), (12, True))}[method]
        for order in (1, 2, 3):
            for steps, lof in configs:
                got = ours(method, steps, order, grid, lof)
                assert got.dtype == jnp.float64
                want = REF.sample(tanh_eps_np, x, steps, order, skip, method, lof)
                np.testing.assert_allclose(np.asarray(got), want, rtol=1e-10, atol=1e-10,
                                           err_msg=f"{method} {grid} order {order} NFE {steps}")


def test_float32_close_to_official_float64():
    with jax.enable_x64(True):
        x = np.asarray(x_T(jnp.float64))
        want = REF.sample(tanh_eps_np, x, 9, 3, "time_uniform", "singlestep_fixed")
    got = ours("singlestep_fixed", 9, 3, "time_uniform", dtype=jnp.float32)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got), want, rtol=2e-4, atol=1e-3)


# ----------------------------------------------------------------------------- grids
def _eval_times(sampler):
    """The times eps is evaluated at, in order (eager: jax.disable_jit runs scans as loops)."""
    times = []

    def eps_fn(x, t):
        times.append(float(np.asarray(t).ravel()[0]))
        return jnp.tanh(x + t[..., None])

    with jax.enable_x64(True), jax.disable_jit():
        sampler(eps_fn, jnp.ones((2, 1), jnp.float64))
    return np.array(times)


def test_time_uniform_intermediate_points_are_uniform_in_t():
    """Order 2, N = 10 steps (NFE 20): the step points are 0.0999 apart and each intermediate
    point is the midpoint in t, so the 20 evaluation times are uniform with spacing 0.04995
    (the official places them so; the lambda midpoint of the last step would be t = 0.0146,
    not 0.0509). Order 3: thirds in t."""
    for order, n in ((2, 10), (3, 4)):
        times = _eval_times(lambda f, x: diffusion.dpm_solver_sample(
            f, x, SCHED, n, order=order, grid="time_uniform"))
        np.testing.assert_allclose(times, np.linspace(1.0, 1e-3, order * n + 1)[:-1],
                                   rtol=0, atol=1e-14)
        if order == 2:
            np.testing.assert_allclose(np.diff(times), -0.04995, rtol=0, atol=1e-14)


def test_logsnr_intermediate_points_are_uniform_in_lambda():
    for order in (2, 3):
        times = _eval_times(lambda f, x: diffusion.dpm_solver_sample(
            f, x, SCHED, 4, order=order, grid="logsnr"))
        with jax.enable_x64(True):
            lam = np.asarray(SCHED.log_snr(jnp.asarray(times, jnp.float64)))
            l0, l1 = (float(SCHED.log_snr(jnp.float64(v))) for v in (1.0, 1e-3))
        np.testing.assert_allclose(lam, np.linspace(l0, l1, order * 4 + 1)[:-1], atol=1e-12)


def test_float64_grid_end_points_and_steps():
    with jax.enable_x64(True):
        for grid in ("logsnr", "time_uniform", "logSNR"):
            g = diffusion.time_grid(SCHED, 5, t_end=1e-3, grid=grid, dtype=jnp.float64)
            assert g.dtype == jnp.float64
            assert float(g[0]) == 1.0 and float(g[-1]) == 1e-3  # not float32(1e-3)
        g = diffusion.time_grid(SCHED, 5, grid="time_uniform", dtype=jnp.float64)
        np.testing.assert_allclose(np.diff(np.asarray(g)), -(1.0 - 1e-3) / 5, rtol=0, atol=1e-15)
        g = diffusion.time_grid(SCHED, 5, grid="logsnr", dtype=jnp.float64)
        np.testing.assert_allclose(np.asarray(g), REF.get_time_steps("logSNR", 1.0, 1e-3, 5),
                                   rtol=1e-13)
    g32 = diffusion.time_grid(SCHED, 5)
    assert g32.dtype == jnp.float32 and float(g32[-1]) == float(np.float32(1e-3))
    assert diffusion.time_grid(SCHED, 5, dtype=jnp.bfloat16).dtype == jnp.float32


# ----------------------------------------------------------------------------- closed form
MU, S = np.array([0.7, -0.3]), 0.2


def gaussian_eps(x, t):
    a, sig = SCHED.alpha(t)[..., None], SCHED.sigma(t)[..., None]
    return sig * (x - a * jnp.asarray(MU, x.dtype)) / (a**2 * S**2 + sig**2)


def exact_flow(x1, t_end=1e-3):
    """x_1 -> x_{t_end} for data N(MU, S^2 I): the probability-flow ODE is linear."""
    ref = OfficialNumpy()
    a1, s1 = np.exp(ref.log_alpha(1.0)), ref.std(1.0)
    ae, se = np.exp(ref.log_alpha(t_end)), ref.std(t_end)
    z = (x1 - a1 * MU) / np.sqrt(a1**2 * S**2 + s1**2)
    return ae * MU + np.sqrt(ae**2 * S**2 + se**2) * z


def _errors(sampler, ns):
    with jax.enable_x64(True):
        x1 = jax.random.normal(jax.random.PRNGKey(0), (256, 2), jnp.float64)
        want = exact_flow(np.asarray(x1))
        return np.array([np.max(np.abs(np.asarray(sampler(x1, n)) - want)) for n in ns])


def test_float64_keeps_third_order_where_float32_floors():
    """Order 3 on the logSNR grid: the rate stays ~3 from N = 64 to 128 in float64."""
    e = _errors(lambda x, n: diffusion.dpm_solver_sample(gaussian_eps, x, SCHED, n, order=3),
                [32, 64, 128])
    rates = np.log2(e[:-1] / e[1:])
    assert np.all(rates > 2.8) and e[-1] < 1e-6, (e, rates)


def test_multistep_converges():
    """Multistep order 2 is second order. Order 3 is ~2.5x more accurate but, like the
    official method, also converges at rate ~2 here: its warm-up starts with a first-order
    step (local error O(h^2)), which a 3-step method cannot make up for."""
    ns = [16, 32, 64]
    e2, e3 = (_errors(lambda x, n: diffusion.dpm_solver_multistep_sample(
        gaussian_eps, x, SCHED, n, order=k), ns) for k in (2, 3))
    r2, r3 = np.log2(e2[:-1] / e2[1:]), np.log2(e3[:-1] / e3[1:])
    assert np.all(r2 > 1.7) and np.all(r2 < 2.7), (e2, r2)
    assert np.all(r3 > 1.8) and np.all(e3 < 0.5 * e2), (e3, r3, e2)


def test_fast_schedule_converges_and_beats_first_order():
    """DPM-Solver-fast (order 3) against DDIM at the same NFE. At NFE 12 the logSNR steps
    (K = 5) are h ~ 1.9 and it is no better than DDIM on this narrow target."""
    nfe = [24, 48]
    e3 = _errors(lambda x, n: diffusion.dpm_solver_fast_sample(gaussian_eps, x, SCHED, n), nfe)
    e1 = _errors(lambda x, n: diffusion.dpm_solver_sample(gaussian_eps, x, SCHED, n), nfe)
    assert e3[1] < 0.1 * e3[0] and np.all(e3 < 0.2 * e1) and e3[1] < 1e-3, (e3, e1)


def test_time_uniform_grid_with_official_placement_converges():
    """The uniform-in-t grid spends its steps at large t (its last step spans a lambda interval
    ~0.5 log N): order 2 beats order 1 only from N ~ 32 on this narrow target (at N = 16 it is
    0.25 vs 0.22), order 3 is the best from N = 8."""
    ns = [8, 16, 32, 64]
    e = {k: _errors(lambda x, n: diffusion.dpm_solver_sample(gaussian_eps, x, SCHED, n, order=k,
                                                             grid="time_uniform"), ns)
         for k in (1, 2, 3)}
    assert all(np.all(np.diff(e[k][1:]) < 0) for k in (1, 2, 3)), e
    assert np.all(e[3] < e[1]) and np.all(e[3][1:] < e[2][1:]), e
    assert np.all(e[2][2:] < e[1][2:]), e


# ----------------------------------------------------------------------------- schedules
def test_fast_orders_follow_the_published_rule():
    assert diffusion.dpm_solver_fast_orders(10) == [3, 3, 3, 1]
    assert diffusion.dpm_solver_fast_orders(6) == [3, 2, 1]
    assert diffusion.dpm_solver_fast_orders(20) == [3] * 6 + [2]
    assert diffusion.dpm_solver_fast_orders(2) == [2] and diffusion.dpm_solver_fast_orders(1) == [1]
    assert diffusion.dpm_solver_fast_orders(7, order=2) == [2, 2, 2, 1]
    assert diffusion.dpm_solver_fast_orders(4, order=1) == [1] * 4
    for nfe in range(1, 40):
        for order in (1, 2, 3):
            got = diffusion.dpm_solver_fast_orders(nfe, order)
            assert got == REF.orders_singlestep(nfe, order) and sum(got) == nfe
        k = nfe // 3 + 1  # order 3: K = NFE // 3 + 1 steps
        assert len(diffusion.dpm_solver_fast_orders(nfe, 3)) == k


def test_multistep_orders_warm_up_and_lower_order_final():
    assert diffusion.dpm_solver_multistep_orders(5, 3) == [1, 2, 3, 2, 1]
    assert diffusion.dpm_solver_multistep_orders(5, 3, lower_order_final=False) == [1, 2, 3, 3, 3]
    assert diffusion.dpm_solver_multistep_orders(10, 3) == [1, 2] + [3] * 8  # only below 10
    assert diffusion.dpm_solver_multistep_orders(4, 2) == [1, 2, 2, 1]
    with pytest.raises(ValueError, match="nfe >= 3"):
        diffusion.dpm_solver_multistep_orders(2, 3)


def test_fast_grid_and_evaluations():
    """time_uniform: an order-k step spans k intervals of the NFE grid, so with inner points
    uniform in t every evaluation lands on that grid; logSNR: K steps uniform in lambda."""
    times = _eval_times(lambda f, x: diffusion.dpm_solver_fast_sample(f, x, SCHED, 10,
                                                                      grid="time_uniform"))
    np.testing.assert_allclose(times, np.linspace(1.0, 1e-3, 11)[:-1], atol=1e-14)
    with jax.enable_x64(True):
        g = diffusion.dpm_solver_fast_grid(SCHED, 10, grid="logsnr", dtype=jnp.float64)
        np.testing.assert_allclose(np.asarray(g), REF.get_time_steps("logSNR", 1.0, 1e-3, 4),
                                   rtol=1e-13)


@pytest.mark.parametrize("method", ["singlestep", "multistep"])
def test_nfe_network_calls(method):
    for nfe in (5, 10):
        times = _eval_times(lambda f, x: diffusion.dpm_solver_official(f, x, SCHED, nfe, 3, method))
        assert len(times) == nfe


def test_order_one_schedules_are_ddim():
    x = x_T(jnp.float32)
    ddim = diffusion.dpm_solver_sample(tanh_eps_jax, x, SCHED, 6)
    for f in (diffusion.dpm_solver_fast_sample, diffusion.dpm_solver_multistep_sample):
        np.testing.assert_allclose(f(tanh_eps_jax, x, SCHED, 6, order=1), ddim, rtol=1e-5,
                                   atol=1e-4)


def test_jit_grad_and_bad_arguments():
    x = x_T(jnp.float32)
    for f, remat in ((diffusion.dpm_solver_fast_sample, False),
                     (diffusion.dpm_solver_multistep_sample, True)):
        g = jax.jit(jax.grad(lambda x: jnp.sum(f(tanh_eps_jax, x, SCHED, 8, remat=remat)**2)))(x)
        assert g.shape == x.shape and bool(jnp.all(jnp.isfinite(g)))
    with pytest.raises(ValueError, match="unknown DPM-Solver method"):
        diffusion.dpm_solver_official(tanh_eps_jax, x, SCHED, 6, 2, "adaptive")
    with pytest.raises(ValueError, match="unknown time grid"):
        diffusion.dpm_solver_fast_sample(tanh_eps_jax, x, SCHED, 6, grid="time_quadratic")
    with pytest.raises(ValueError, match="order"):
        diffusion.dpm_solver_fast_sample(tanh_eps_jax, x, SCHED, 6, order=4)
