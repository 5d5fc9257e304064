"""Diffusion core: schedule, DPM-Solver 1/2/3, DPM-Solver++(2M), DDPM, noise nets, Eq. 3 loss.

The solver tests use targets whose noised marginals are exact, so eps is known in closed form:
for data N(mu, s^2 I) the probability-flow ODE is linear and its exact solution maps
x_1 -> x_t = alpha_t mu + sqrt(alpha_t^2 s^2 + sigma_t^2) (x_1 - alpha_1 mu) / sqrt(alpha_1^2 s^2 + sigma_1^2),
which gives an independent reference for every sample (not just its distribution).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dom2_jax import diffusion
from dom2_jax.diffusion import VPSchedule

jax.config.update("jax_enable_x64", False)

SCHED = VPSchedule()


def gaussian_eps(mu, s, schedule=SCHED):
    def eps_fn(x, t):
        a, sig = schedule.alpha(t)[..., None], schedule.sigma(t)[..., None]
        var = a**2 * s**2 + sig**2
        return sig * (x - a * mu) / var  # = -sigma * grad log q_t
    return eps_fn


def gaussian_exact_flow(x1, mu, s, t_end, schedule=SCHED):
    a1, s1 = schedule.alpha(1.0), schedule.sigma(1.0)
    ae, se = schedule.alpha(t_end), schedule.sigma(t_end)
    z = (x1 - a1 * mu) / jnp.sqrt(a1**2 * s**2 + s1**2)
    return ae * mu + jnp.sqrt(ae**2 * s**2 + se**2) * z


def mixture_eps(mus, s, weights, schedule=SCHED):
    """eps for an isotropic Gaussian mixture sum_k w_k N(mu_k, s^2 I) (mus [K, d])."""
    logw = jnp.log(jnp.asarray(weights))

    def eps_fn(x, t):
        a, sig = schedule.alpha(t)[..., None, None], schedule.sigma(t)[..., None, None]
        var = a**2 * s**2 + sig**2  # [..., 1, 1]
        diff = x[..., None, :] - a * mus  # [..., K, d]
        logp = logw - 0.5 * jnp.sum(diff**2 / var, -1) - 0.5 * mus.shape[-1] * jnp.log(var[..., 0])
        resp = jax.nn.softmax(logp, axis=-1)[..., None]
        score = -jnp.sum(resp * diff / var, axis=-2)
        return -sig[..., 0] * score
    return eps_fn


# ----------------------------------------------------------------------------- schedule
def test_schedule_finite_and_consistent_float32():
    t = jnp.linspace(1e-3, 1.0, 10001, dtype=jnp.float32)
    for f in (SCHED.alpha, SCHED.sigma, SCHED.log_snr, SCHED.log_alpha, SCHED.log_sigma):
        v = f(t)
        assert v.dtype == jnp.float32
        assert bool(jnp.all(jnp.isfinite(v))), f.__name__
    np.testing.assert_allclose(SCHED.alpha(t) ** 2 + SCHED.sigma(t) ** 2, 1.0, atol=2e-6)
    lam = SCHED.log_snr(t)
    assert bool(jnp.all(jnp.diff(lam) < 0)), "log-SNR must decrease in t"
    np.testing.assert_allclose(SCHED.t_from_log_snr(lam), t, rtol=2e-4, atol=2e-6)
    # sigma at t_end computed in float64 by hand
    t0 = 1e-3
    la = -0.25 * t0**2 * 19.9 - 0.5 * t0 * 0.1
    np.testing.assert_allclose(float(SCHED.sigma(jnp.float32(t0))), np.sqrt(1 - np.exp(2 * la)),
                               rtol=1e-5)


def test_schedule_rejects_bad_betas():
    with pytest.raises(ValueError, match="beta_max > beta_min"):
        VPSchedule(beta_min=1.0, beta_max=0.5)


def test_time_grids():
    g = diffusion.time_grid(SCHED, 5, t_end=1e-3, grid="logsnr")
    assert g.shape == (6,)
    np.testing.assert_allclose([g[0], g[-1]], [1.0, 1e-3], rtol=1e-6)
    np.testing.assert_allclose(jnp.diff(SCHED.log_snr(g)),
                               (SCHED.log_snr(1e-3) - SCHED.log_snr(1.0)) / 5, rtol=1e-4)
    gu = diffusion.time_grid(SCHED, 4, grid="time_uniform")
    np.testing.assert_allclose(gu, np.linspace(1.0, 1e-3, 5), rtol=1e-6)
    with pytest.raises(ValueError, match="unknown time grid"):
        diffusion.time_grid(SCHED, 4, grid="cosine")
    with pytest.raises(ValueError, match="num_steps"):
        diffusion.time_grid(SCHED, 0)


# ----------------------------------------------------------------------------- solvers
def _solver_errors(order, steps, grid="logsnr", t_end=1e-3):
    mu, s = jnp.array([0.7, -0.3]), 0.2
    x1 = jax.random.normal(jax.random.PRNGKey(0), (512, 2))
    exact = gaussian_exact_flow(x1, mu, s, t_end)
    errs = []
    for n in steps:
        if order == "pp2m":
            x0 = diffusion.dpm_solver_pp_2m_sample(gaussian_eps(mu, s), x1, SCHED, n, t_end=t_end,
                                                   grid=grid)
        else:
            x0 = diffusion.dpm_solver_sample(gaussian_eps(mu, s), x1, SCHED, n, order=order,
                                             t_end=t_end, grid=grid)
        errs.append(float(jnp.max(jnp.abs(x0 - exact))))
    return np.array(errs)


def test_dpm_solver_converges_to_exact_ode_solution_logsnr_grid():
    steps = [6, 8, 16, 32]
    e1, e2, e3 = (_solver_errors(k, steps) for k in (1, 2, 3))
    for e in (e1, e2, e3):
        assert np.all(np.diff(e) < 0), e  # error falls as steps grow
    # higher order wins at the same step count (from N = 5 on for this narrow target; at
    # N <= 4 the logSNR steps are h ~ 2.3 and order 2 is no better than order 1, see BUILD_NOTES)
    assert np.all(e2 < e1) and np.all(e3 < e2), (e1, e2, e3)
    assert e3[-1] < 1e-4


def test_dpm_solver_time_uniform_grid():
    # intermediate points uniform in t as the official code places them: on this narrow target
    # order 2 beats order 1 from N ~ 32 (at N = 16: 0.25 vs 0.22); see test_dpm_solver_official
    steps = [32, 64]
    e1, e2, e3 = (_solver_errors(k, steps, "time_uniform") for k in (1, 2, 3))
    assert np.all(e2 < e1) and np.all(e3 < e2), (e1, e2, e3)
    assert e1[1] < e1[0] and e2[1] < e2[0] and e3[1] < e3[0]
    # the uniform-in-t grid wastes steps at large t: logSNR is more accurate at equal N
    assert e2[0] > _solver_errors(2, [32])[0]


def test_dpm_solver_orders_have_their_convergence_rates():
    """Empirical order from halving h on the logSNR grid: ~1, ~2, ~3."""
    steps = [8, 16, 32]
    for order in (1, 2, 3):
        e = _solver_errors(order, steps)
        rates = np.log2(e[:-1] / e[1:])
        assert np.all(rates > order - 0.3), (order, e, rates)
        assert np.all(rates < order + 0.7), (order, e, rates)


def test_dpm_solver_pp_2m_is_second_order():
    e = _solver_errors("pp2m", [16, 32, 64])
    e1 = _solver_errors(1, [16, 32, 64])
    assert np.all(e < e1)
    rates = np.log2(e[:-1] / e[1:])
    assert np.all(rates > 1.7) and np.all(rates < 2.5), (e, rates)


def test_first_order_equals_ddim_formula():
    """Order 1 is exactly the paper's Eq. 4 / Lu et al. Eq. 3.7 (DDIM) written out by hand."""
    mu, s = jnp.array([0.5]), 0.3
    eps_fn = gaussian_eps(mu, s)
    x = jax.random.normal(jax.random.PRNGKey(1), (64, 1))
    ts = np.asarray(diffusion.time_grid(SCHED, 3), dtype=np.float64)
    xr = np.asarray(x, np.float64)
    for s_, t_ in zip(ts[:-1], ts[1:]):
        a_s, a_t = float(SCHED.alpha(s_)), float(SCHED.alpha(t_))
        sg_s, sg_t = float(SCHED.sigma(s_)), float(SCHED.sigma(t_))
        e = np.asarray(eps_fn(jnp.asarray(xr, jnp.float32), jnp.full((64,), s_, jnp.float32)))
        xr = a_t / a_s * xr - sg_t * (a_t * sg_s / (a_s * sg_t) - 1.0) * e
    got = diffusion.dpm_solver_sample(eps_fn, x, SCHED, 3, order=1)
    np.testing.assert_allclose(got, xr, rtol=1e-4, atol=1e-5)


def test_mixture_samples_match_target_distribution():
    mus = jnp.array([[-1.0, 0.0], [1.0, 0.5]])
    weights = [0.3, 0.7]
    s = 0.1
    eps_fn = mixture_eps(mus, s, weights)
    x1 = jax.random.normal(jax.random.PRNGKey(2), (4000, 2))
    for solver, n in (("dpm1", 50), ("dpm2", 10), ("dpm3", 10), ("dpmpp2m", 20)):
        x0 = diffusion.sample(solver, eps_fn, x1, SCHED, n)
        frac_right = float(jnp.mean(x0[:, 0] > 0))
        assert abs(frac_right - 0.7) < 0.03, (solver, frac_right)
        right = x0[x0[:, 0] > 0]
        np.testing.assert_allclose(right.mean(0), mus[1], atol=0.02)
        np.testing.assert_allclose(right.std(0), s, rtol=0.15)
    # with 3 steps, first order collapses the modes' width; third order is already close
    def width_error(solver):
        x0 = diffusion.sample(solver, eps_fn, x1, SCHED, 3)
        return abs(float(jnp.std(x0[x0[:, 0] > 0][:, 1])) - s)
    assert width_error("dpm3") < 0.5 * width_error("dpm1")


def test_ddpm_matches_target_moments():
    mu, s = jnp.array([0.4, -0.6]), 0.25
    x1 = jax.random.normal(jax.random.PRNGKey(3), (8000, 2))
    def std_error(n):
        x0 = diffusion.ddpm_sample(gaussian_eps(mu, s), x1, SCHED, n, jax.random.PRNGKey(4),
                                   grid="logsnr")
        np.testing.assert_allclose(x0.mean(0), mu, atol=0.02)
        return np.max(np.abs(np.asarray(x0.std(0)) - s))
    # ancestral sampling with the posterior mean of x0 loses O(1/N) of the variance
    e100, e1000 = std_error(100), std_error(1000)
    assert e1000 < 0.03 * s and e1000 < e100
    with pytest.raises(ValueError, match="needs a PRNG key"):
        diffusion.sample("ddpm", gaussian_eps(mu, s), x1, SCHED, 5)


def test_network_calls_per_solver():
    calls = {"n": 0}

    def eps_fn(x, t):
        calls["n"] += 1  # counted at trace time: one trace of the scan body per call site
        return x * 0.0

    x = jnp.zeros((3, 2))
    for order in (1, 2, 3):
        calls["n"] = 0
        diffusion.dpm_solver_sample(eps_fn, x, SCHED, 4, order=order)
        assert calls["n"] == order  # eps_fn appears `order` times in one step
        assert diffusion.network_calls(f"dpm{order}", 4) == 4 * order


def test_bad_arguments():
    eps_fn = gaussian_eps(jnp.zeros(1), 1.0)
    with pytest.raises(ValueError, match="order"):
        diffusion.dpm_solver_sample(eps_fn, jnp.zeros((2, 1)), SCHED, 3, order=4)
    with pytest.raises(ValueError, match="unknown solver"):
        diffusion.sample("heun", eps_fn, jnp.zeros((2, 1)), SCHED, 3)


# ----------------------------------------------------------------------------- networks
@pytest.mark.parametrize("kind", ["residual", "mlp"])
def test_noise_net_shapes_and_dtypes(kind):
    net = diffusion.make_noise_net(kind, act_dim=3, hidden_dims=(32, 16))
    params = net.init(jax.random.PRNGKey(0), jnp.zeros((5, 3)), jnp.zeros((5, 7)), jnp.zeros((5,)))
    out = net.apply(params, jnp.ones((4, 5, 3)), jnp.ones((4, 5, 7)), jnp.full((4, 5), 0.5))
    assert out.shape == (4, 5, 3) and out.dtype == jnp.float32
    with pytest.raises(ValueError, match="unknown noise network"):
        diffusion.make_noise_net("transformer", act_dim=3)


def test_residual_net_default_widths_are_sfbc():
    net = diffusion.make_noise_net("residual", act_dim=2)
    params = net.init(jax.random.PRNGKey(0), jnp.zeros((1, 2)), jnp.zeros((1, 18)), jnp.zeros((1,)))
    widths = [v["kernel"].shape[-1] for k, v in params["params"].items()
              if k.startswith("ResidualBlock")
              for v in [v["Dense_2"]]]
    assert widths == [512, 256, 128, 128, 256, 512]


def _policy_sampler(net, order=1, steps=10):
    def sample(params, obs, key):
        eps_fn = lambda x, t: net.apply(params, x, obs, t)
        x_T = jax.random.normal(key, obs.shape[:-1] + (2,))
        return diffusion.dpm_solver_sample(eps_fn, x_T, SCHED, steps, order=order)
    return sample


def test_jit_no_retrace_and_vmap_over_agents_equals_loop():
    net = diffusion.make_noise_net("residual", act_dim=2, hidden_dims=(32, 16))
    n_agents, batch, obs_dim = 3, 8, 6
    keys = jax.random.split(jax.random.PRNGKey(0), n_agents)
    params = jax.vmap(lambda k: net.init(k, jnp.zeros((1, 2)), jnp.zeros((1, obs_dim)),
                                         jnp.zeros((1,))))(keys)
    obs = jax.random.normal(jax.random.PRNGKey(1), (n_agents, batch, obs_dim))
    traces = {"n": 0}

    def per_agent(p, o, k):
        traces["n"] += 1
        return _policy_sampler(net, order=2, steps=5)(p, o, k)

    f = jax.jit(jax.vmap(per_agent))
    out = f(params, obs, keys)
    out2 = f(params, obs + 1.0, keys)
    assert traces["n"] == 1, "second call with same shapes must not retrace"
    assert out.shape == (n_agents, batch, 2) and not np.allclose(out, out2)
    loop = jnp.stack([per_agent(jax.tree.map(lambda x: x[i], params), obs[i], keys[i])
                      for i in range(n_agents)])
    np.testing.assert_allclose(out, loop, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_gradients_finite_through_ten_steps(order):
    net = diffusion.make_noise_net("residual", act_dim=2, hidden_dims=(32, 16))
    obs = jax.random.normal(jax.random.PRNGKey(1), (16, 4))
    params = net.init(jax.random.PRNGKey(0), jnp.zeros((1, 2)), obs[:1], jnp.zeros((1,)))
    sampler = _policy_sampler(net, order=order, steps=10)
    loss = lambda p: jnp.mean(jnp.sum(sampler(p, obs, jax.random.PRNGKey(2)) ** 2, -1))
    val, grads = jax.value_and_grad(loss)(params)
    leaves = jax.tree.leaves(grads)
    assert np.isfinite(float(val))
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    assert sum(float(jnp.sum(jnp.abs(g))) for g in leaves) > 0


def test_unrolled_scan_equals_rolled():
    eps_fn = gaussian_eps(jnp.array([0.2, 0.1]), 0.5)
    x = jax.random.normal(jax.random.PRNGKey(0), (10, 2))
    a = diffusion.dpm_solver_sample(eps_fn, x, SCHED, 5, order=3)
    b = diffusion.dpm_solver_sample(eps_fn, x, SCHED, 5, order=3, unroll=True)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- loss
def test_eps_loss_zero_for_exact_eps_on_point_mass_and_learns():
    # For a point mass at mu, eps(x, t) = (x - alpha mu) / sigma exactly: the loss is ~0.
    mu = jnp.array([0.3, -0.2])
    exact = lambda x, t: (x - SCHED.alpha(t)[..., None] * mu) / SCHED.sigma(t)[..., None]
    x0 = jnp.broadcast_to(mu, (256, 2))
    assert float(diffusion.eps_loss(exact, x0, jax.random.PRNGKey(0), SCHED)) < 1e-6
    zero = lambda x, t: jnp.zeros_like(x)
    assert abs(float(diffusion.eps_loss(zero, x0, jax.random.PRNGKey(0), SCHED)) - 1.0) < 0.15
    per = diffusion.eps_loss(zero, x0, jax.random.PRNGKey(0), SCHED, per_sample=True)
    assert per.shape == (256,)
