"""MAMuJoCo HalfCheetah 2x3 (MJX) correctness: parity with C MuJoCo and gymnasium-robotics,
observation layout, shifts, backends, rendering.

Cost: the MJX step is compiled exactly once (an AOT-compiled ``jit(vmap(env.step))`` for a
batch of B=100, with ``xla_backend_optimization_level=0``: ~23 s instead of ~60 s of compile
on a loaded 2-core CPU, for slower code that this small workload does not notice); every MJX
check reuses it. Everything else runs on C MuJoCo.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

jax = pytest.importorskip("jax")
pytest.importorskip("mujoco.mjx")
import jax.numpy as jnp  # noqa: E402
import mujoco  # noqa: E402

from dom2_jax.envs import make  # noqa: E402
from dom2_jax.envs.mamujoco import common  # noqa: E402
from dom2_jax.envs.mamujoco.cpu import (HalfCheetahCPU, make_batch_env,  # noqa: E402
                                        sample_initial_batch, select_backend)

B = 100               # MJX batch of the single compiled step
N_ONE_STEP = 10 * B   # random states in the one-step parity test
PREFIX = 10           # MJX episode-prefix length compared with C MuJoCo / gymnasium-robotics
# float32 MJX vs float64 C MuJoCo, relative error |x - ref| / (1 + |ref|): every state within
# ONE_STEP_RTOL, 99% within 2e-4, median below 1e-5 (measured on 1000 random states:
# max 4.3e-3 in a deep-penetration contact state, p99 ~5e-5, median ~7e-7).
ONE_STEP_RTOL = 1e-2
RESET_KEY = jax.random.PRNGKey(7)


def _rel_err(x, ref):
    return np.abs(np.asarray(x, np.float64) - ref) / (1.0 + np.abs(ref))


@pytest.fixture(scope="module")
def env():
    return make("mamujoco_halfcheetah_2x3", obsk=1, shift="E")


@pytest.fixture(scope="module")
def mjx_fns(env):
    """(vstep, vfrom, reset_out): the one compiled batched step, a jitted state builder, and
    ``jit(vmap(env.reset))`` over ``split(RESET_KEY, B)``."""
    fast_compile = {"xla_backend_optimization_level": 0}
    reset_keys = jax.random.split(RESET_KEY, B)
    reset_out = jax.jit(jax.vmap(env.reset)).lower(reset_keys).compile(fast_compile)(reset_keys)
    vfrom = jax.jit(jax.vmap(env.state_from_qpos))
    keys = jax.random.split(jax.random.PRNGKey(0), B)
    vstep = jax.jit(jax.vmap(env.step)).lower(keys, reset_out[1], jnp.zeros((B, 2, 3))).compile(
        fast_compile)
    return (lambda s, a: vstep(keys, s, jnp.asarray(a, jnp.float32))), vfrom, reset_out


def _c_step(model, data, base, qpos, qvel, scalings, actions, frame_skip=5):
    """Reference: one env step with mujoco.mj_step on the scaled C model (float64)."""
    for name, value in common.scaled_model_fields(base, np.float64(scalings), np).items():
        getattr(model, name)[:] = value
    mujoco.mj_resetData(model, data)
    data.qpos[:], data.qvel[:] = qpos, qvel
    a = np.clip(actions, -1, 1).astype(np.float64)
    data.ctrl[:] = a.reshape(6)
    mujoco.mj_step(model, data, frame_skip)
    reward = (data.qpos[0] - qpos[0]) / 0.05 - 0.1 * np.sum(a ** 2)
    return data.qpos.copy(), data.qvel.copy(), reward


# ----------------------------------------------------------------------------- API / layout
def test_attributes_and_errors():
    e0 = make("mamujoco_halfcheetah_2x3")
    assert (e0.num_agents, e0.obs_dim, e0.act_dim, e0.episode_length) == (2, 6, 3, 1000)
    assert tuple(e0.agent_names) == ("agent_0", "agent_1")
    assert e0.obs_labels[0] == ("bfoot.qpos", "bfoot.qvel", "bshin.qpos", "bshin.qvel",
                                "bthigh.qpos", "bthigh.qvel")
    assert make("mamujoco_halfcheetah_2x3", obsk=1).obs_dim == 12
    with pytest.raises(ValueError, match="unknown shift"):
        make("mamujoco_halfcheetah_2x3", shift="speed")
    with pytest.raises(ValueError, match="obsk"):
        make("mamujoco_halfcheetah_2x3", obsk=-1)
    with pytest.raises(ValueError, match="obsk"):
        make("mamujoco_halfcheetah_2x3", obsk=1.5)
    with pytest.raises(ValueError, match="global_categories"):
        make("mamujoco_halfcheetah_2x3", global_categories=("cvel",))
    with pytest.raises(ValueError, match=r"actions must have shape \(2, 3\)"):
        e0.step(None, None, jnp.zeros((6,)))  # checked before the state is touched
    with pytest.raises(ValueError, match="actions must have shape"):
        HalfCheetahCPU(2).step(np.zeros((2, 6)))
    with pytest.raises(ValueError, match="unknown backend"):
        make_batch_env(2, backend="tpu")
    assert select_backend("auto") == ("cpu" if jax.default_backend() == "cpu" else "mjx")
    r = jnp.asarray([[1.5, 1.5], [-2.0, -2.0]])
    np.testing.assert_array_equal(e0.score(r), [1.5, -2.0])


@pytest.mark.parametrize("obsk,global_categories", [(0, ()), (1, None), (2, None), (1, ())])
def test_observation_layout_matches_gymnasium_robotics(obsk, global_categories):
    mamujoco_v1 = pytest.importorskip("gymnasium_robotics").mamujoco_v1
    kw = {} if global_categories is None else {"global_categories": global_categories}
    ref = mamujoco_v1.parallel_env("HalfCheetah", "2x3", agent_obsk=obsk, **kw)
    ref.reset(seed=0)
    cfg = common.HalfCheetahConfig(obsk=obsk, **kw)
    index = common.observation_index(cfg.obsk, cfg.global_categories)
    rng = np.random.default_rng(obsk)
    for _ in range(3):
        qpos, qvel = rng.normal(size=9), rng.normal(size=9)
        ref.single_agent_env.unwrapped.set_state(qpos, qvel)
        expected = ref._get_obs()
        ours = common.observe(qpos, qvel, index, np)
        for a, name in enumerate(ref.possible_agents):
            np.testing.assert_array_equal(ours[a, :len(expected[name])], expected[name])
            assert not ours[a, len(expected[name]):].any()  # zero padding, if any
    # gymnasium-robotics' action partition is ours: agent 0 = back leg, agent 1 = front leg
    glob = ref.map_local_actions_to_global_action(
        {"agent_0": np.array([0., 1., 2.]), "agent_1": np.array([3., 4., 5.])})
    np.testing.assert_array_equal(common.actions_to_ctrl(np.arange(6.).reshape(2, 3), np),
                                  glob)


# ----------------------------------------------------------------------------- reset / shifts
def test_reset(env, mjx_fns):
    obs, state = mjx_fns[2]
    assert obs.shape == (B, 2, 12) and obs.dtype == jnp.float32
    assert state.qpos.shape == (B, 9) and state.qpos.dtype == jnp.float32
    np.testing.assert_array_equal(obs, env.observe(state))
    assert np.all(np.abs(state.qpos) <= 0.1) and abs(float(state.qvel.std()) - 0.1) < 0.01
    assert not np.asarray(state.t).any() and not np.asarray(state.data.qacc_warmstart).any()
    # per-episode E-shift factors, and the C backend starts from the same states (equal up
    # to float32 rounding: the reset here is compiled at another XLA optimisation level)
    assert np.all(np.abs(np.asarray(state.scalings) - 1.0) > 0.1)
    qpos, qvel, sc = sample_initial_batch(RESET_KEY, B, env.config)
    for ours, theirs in ((qpos, state.qpos), (qvel, state.qvel), (sc, state.scalings)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-8)


def test_shift_sample_ranges():
    keys = jax.random.split(jax.random.PRNGKey(2), 4000)
    both = jax.jit(lambda k: [jax.vmap(lambda x: common.sample_scalings(x, s))(k)
                              for s in (None, "R", "E")])(keys)
    np.testing.assert_array_equal(both[0], np.ones((4000, 3)))
    nominal = np.array([common.NOMINAL[n] for n in common.SCALING_NAMES])
    for shift, draws in zip(("R", "E"), both[1:]):
        raw = np.asarray(draws) * nominal
        for j, name in enumerate(common.SCALING_NAMES):
            intervals = common.SHIFT_RANGES[shift][name]
            inside = np.zeros(len(raw), bool)
            for lo, hi in intervals:
                sel = (raw[:, j] >= lo * (1 - 1e-6)) & (raw[:, j] <= hi * (1 + 1e-6))
                inside |= sel
                # every interval is used in proportion to its length, and covered end to end
                share = (hi - lo) / sum(b - a for a, b in intervals)
                assert abs(sel.mean() - share) < 0.04, (shift, name, lo, hi, sel.mean())
                assert raw[sel, j].min() < lo + 0.02 * (hi - lo)
                assert raw[sel, j].max() > hi - 0.02 * (hi - lo)
            assert inside.all(), (shift, name)
    with pytest.raises(ValueError, match="unknown shift"):
        common.sample_scalings(keys[0], "X")


def test_shifted_models_differ():
    """Same open-loop actions, factors 0.5..1.5 of power, density, friction: C backend (the MJX
    step applies the same scaled fields; ``test_one_step_parity_with_c_mujoco`` covers that)."""
    vals = np.array([0.5, 0.75, 1.0, 1.25, 1.5])
    kick = np.array([[1, -1, 1], [-1, 1, -1]], np.float32) * 0.5

    def joint_speed_in_air(column):
        cpu = HalfCheetahCPU(len(vals))
        qpos = np.zeros((len(vals), 9))
        qpos[:, 1] = 1.0  # 1 m up: no contact during the step
        sc = np.ones((len(vals), 3))
        sc[:, column] = vals
        cpu.set_state(qpos, np.zeros_like(qpos), sc)
        cpu.step(np.broadcast_to(kick, (len(vals), 2, 3)))
        return np.linalg.norm(cpu.qvel[:, 3:], axis=1)

    assert np.all(np.diff(joint_speed_in_air(0)) > 0)   # more power -> faster joints
    assert np.all(np.diff(joint_speed_in_air(1)) < 0)   # heavier -> slower joints

    cpu = HalfCheetahCPU(len(vals))                      # sliding with zero action
    sc = np.ones((len(vals), 3))
    sc[:, 2] = vals
    qvel = np.zeros((len(vals), 9))
    qvel[:, 0] = 3.0
    cpu.set_state(np.zeros((len(vals), 9)), qvel, sc)
    for _ in range(20):
        _, _, _, info = cpu.step(np.zeros((len(vals), 2, 3)))
    assert np.all(np.diff(info["x_position"]) < 0)      # more friction -> stops sooner

    # standing start, the same full-torque action: the heavier the body, the lower the
    # forward speed it reaches in the first step (later steps hit joint limits: chaotic)
    for sign in (1.0, -1.0):
        cpu = HalfCheetahCPU(len(vals))
        sc = np.ones((len(vals), 3))
        sc[:, 1] = vals
        cpu.set_state(np.zeros((len(vals), 9)), np.zeros((len(vals), 9)), sc)
        _, _, _, info = cpu.step(np.full((len(vals), 2, 3), sign, np.float32))
        assert np.all(np.diff(np.abs(info["x_velocity"])) < 0), info["x_velocity"]


# ----------------------------------------------------------------------------- MJX parity
def _random_states(rng, n, model):
    lo, hi = model.jnt_range[3:, 0], model.jnt_range[3:, 1]
    qpos = np.zeros((n, 9))
    qpos[:, 0] = rng.uniform(-5, 5, n)
    qpos[:, 1] = rng.uniform(-0.3, 0.3, n)      # from deep ground penetration to airborne
    qpos[:, 2] = rng.uniform(-0.8, 0.8, n)
    qpos[:, 3:] = rng.uniform(lo - 0.1, hi + 0.1, (n, 6))  # joint limits active at times
    qvel = rng.normal(0.0, 1.5, (n, 9))
    scalings = rng.uniform(0.5, 1.5, (n, 3))
    scalings[: n // 4] = 1.0
    actions = rng.uniform(-1.2, 1.2, (n, 2, 3))  # some outside [-1, 1]: clipped
    return [x.astype(np.float32) for x in (qpos, qvel, scalings, actions)]


def test_one_step_parity_with_c_mujoco(env, mjx_fns):
    """1000 random states (a quarter nominal, the rest with random power/density/friction
    factors in [0.5, 1.5]); one env step (5 physics steps) on MJX vs mujoco.mj_step."""
    vstep, vfrom, _ = mjx_fns
    rng = np.random.default_rng(0)
    model = common.load_model()
    data = mujoco.MjData(model)
    base = {f: getattr(model, f).copy() for f in common.SCALED_FIELDS}
    errs = {"qpos": [], "qvel": [], "reward": []}
    for _ in range(N_ONE_STEP // B):
        qpos, qvel, sc, act = _random_states(rng, B, model)
        _, state, reward, done, _ = vstep(vfrom(qpos, qvel, sc, np.zeros(B, np.int32)), act)
        assert not np.asarray(done).any() and np.all(np.asarray(state.t) == 1)
        m_qpos, m_qvel, reward = (np.asarray(x) for x in (state.qpos, state.qvel, reward))
        np.testing.assert_array_equal(reward[:, 0], reward[:, 1])
        for i in range(B):
            q, v, r = _c_step(model, data, base, qpos[i], qvel[i], sc[i], act[i])
            errs["qpos"].append(_rel_err(m_qpos[i], q).max())
            errs["qvel"].append(_rel_err(m_qvel[i], v).max())
            errs["reward"].append(_rel_err(reward[i, 0], r))
    for name, e in errs.items():
        e = np.asarray(e)
        assert e.max() < ONE_STEP_RTOL, (name, e.max())
        assert np.quantile(e, 0.99) < 2e-4, (name, np.quantile(e, 0.99))
        assert np.median(e) < 1e-5, (name, np.median(e))


def test_episode_prefix_parity(env, mjx_fns):
    """Same initial states and actions for PREFIX steps: MJX vs the C backend (100 episodes,
    half of them E-shifted; float32 vs float64, so errors grow along the episode) and both vs
    gymnasium-robotics mamujoco_v1 HalfCheetah 2x3 obsk=1 (the C backend exactly, 100 steps)."""
    mamujoco_v1 = pytest.importorskip("gymnasium_robotics").mamujoco_v1
    vstep, vfrom, _ = mjx_fns
    qpos, qvel, sc = sample_initial_batch(RESET_KEY, B, env.config)   # E-shifted
    sc[: B // 2] = 1.0                                                 # half nominal
    t0 = np.zeros(B, np.int32)
    t0[B // 2:] = env.episode_length - 4           # these episodes end at step 4
    state = vfrom(qpos, qvel, sc, t0)
    cpu = HalfCheetahCPU(B, obsk=1)
    obs_c = cpu.set_state(qpos, qvel, sc, t0)
    np.testing.assert_array_equal(obs_c, env.observe(state))
    rng = np.random.default_rng(1)
    actions = rng.uniform(-1, 1, (100, B, 2, 3)).astype(np.float32)

    traj = {"mjx_obs": [], "mjx_rew": [], "c_obs": [], "c_rew": []}
    for k in range(PREFIX):
        obs, state, reward, done, _ = vstep(state, actions[k])
        o, r, d, _ = cpu.step(actions[k])
        np.testing.assert_array_equal(np.asarray(done), d)
        np.testing.assert_array_equal(d, (t0 + k + 1) >= env.episode_length)
        traj["mjx_obs"].append(np.asarray(obs))
        traj["mjx_rew"].append(np.asarray(reward))
        traj["c_obs"].append(o)
        traj["c_rew"].append(r)
    traj = {k: np.stack(v) for k, v in traj.items()}
    err = np.maximum(_rel_err(traj["mjx_obs"], traj["c_obs"]).max(axis=(2, 3)),
                     _rel_err(traj["mjx_rew"], traj["c_rew"]).max(axis=2))  # [PREFIX, B]
    assert err[:3].max() < 2e-3, err[:3].max(axis=1)
    assert np.median(err[-1]) < 1e-3, np.median(err[-1])
    assert np.quantile(err[-1], 0.9) < 2e-2, np.quantile(err[-1], 0.9)

    # gymnasium-robotics from the same (nominal) initial states with the same actions; the C
    # backend is rerun for 100 steps on those episodes
    n_ref = 4
    cpu = HalfCheetahCPU(n_ref, obsk=1)
    cpu.set_state(qpos[:n_ref], qvel[:n_ref])
    ref_c = {"obs": [], "rew": []}
    for k in range(100):
        o, r, _, _ = cpu.step(actions[k, :n_ref])
        ref_c["obs"].append(o)
        ref_c["rew"].append(r[:, 0])
    ref = mamujoco_v1.parallel_env("HalfCheetah", "2x3", agent_obsk=1)
    for i in range(n_ref):
        ref.reset(seed=i)
        ref.single_agent_env.unwrapped.set_state(np.float64(qpos[i]), np.float64(qvel[i]))
        g_obs = ref._get_obs()
        np.testing.assert_allclose(np.stack([g_obs["agent_0"], g_obs["agent_1"]]),
                                   obs_c[i], rtol=1e-6, atol=1e-7)
        g_err = []
        for k in range(100):
            g_obs, g_rew, _, _, _ = ref.step({"agent_0": np.float64(actions[k, i, 0]),
                                              "agent_1": np.float64(actions[k, i, 1])})
            g_obs = np.stack([g_obs["agent_0"], g_obs["agent_1"]])
            g_rew = g_rew["agent_0"]
            # C backend: the same float64 physics, float32 outputs
            np.testing.assert_allclose(ref_c["obs"][k][i], g_obs, rtol=1e-6, atol=1e-5)
            np.testing.assert_allclose(ref_c["rew"][k][i], g_rew, rtol=1e-6, atol=1e-5)
            if k < PREFIX:
                g_err.append(max(_rel_err(traj["mjx_obs"][k, i], g_obs).max(),
                                 _rel_err(traj["mjx_rew"][k, i, 0], g_rew)))
        assert max(g_err[:3]) < 2e-3 and max(g_err) < 5e-2, g_err


# ----------------------------------------------------------------------------- rendering
def test_render_gif(tmp_path):
    from dom2_jax.envs.mamujoco.render import render_gif
    iio = pytest.importorskip("imageio.v3")
    qpos = np.zeros((3, 9))
    qpos[:, 3] = [-0.4, 0.0, 0.4]
    qpos[:, 0] = [0.0, 0.2, 0.4]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = render_gif(qpos, str(tmp_path / "episode.gif"), width=96, height=64)
    if path is None:
        pytest.skip("no OpenGL backend for mujoco.Renderer: "
                    + "; ".join(str(w.message) for w in caught))
    frames = iio.imread(path)
    assert frames.shape[0] == 3 and frames.shape[1:3] == (64, 96)
    assert np.abs(frames[0].astype(int) - frames[2]).mean() > 0.1


def test_rollout_batch_on_c_mujoco():
    """``cpu.rollout_batch`` (the CPU data-generation path): documented keys, layout,
    continuity, scores, partial last block, determinism; backend resolution errors."""
    from dom2_jax.envs.mamujoco.cpu import rollout_batch
    from dom2_jax.online import behaviour

    def policy(params, obs, key):       # noise from the key + a linear term of the obs
        return jnp.tanh(jax.random.normal(key, (2, 3)) + params * obs[:, :3])

    T, Bc, n = 6, 3, 5
    cpu = HalfCheetahCPU(Bc, episode_length=T)
    key = jax.random.PRNGKey(3)
    out = rollout_batch(cpu, policy, jnp.float32(0.5), key, n, return_trajectory=True)
    assert out["obs"].shape == (n, T, 2, 6) and out["actions"].shape == (n, T, 2, 3)
    assert out["score"].shape == (n,) and out["returns"].shape == (n, 2)
    np.testing.assert_array_equal(out["obs"][:, 1:], out["next_obs"][:, :-1])
    np.testing.assert_allclose(out["score"], out["rewards"][..., 0].sum(1), rtol=1e-6)
    np.testing.assert_array_equal(out["dones"][:, -1], True)
    assert not out["dones"][:, :-1].any()
    # block 1 (episodes 3, 4) starts from reset(fold_in(key, 1)); its step keys are
    # split(fold_in(fold_in(key, 1), 1), T * B)[t * B + b]
    k1 = jax.random.fold_in(key, 1)
    qpos, qvel, sc = sample_initial_batch(k1, Bc, cpu.config)
    ref = HalfCheetahCPU(Bc, episode_length=T)
    np.testing.assert_array_equal(out["obs"][3:, 0], ref.set_state(qpos, qvel, sc)[:2])
    step_keys = jax.random.split(jax.random.fold_in(k1, 1), T * Bc)
    for t in (0, T - 1):
        want = policy(jnp.float32(0.5), out["obs"][4, t], step_keys[t * Bc + 1])
        np.testing.assert_allclose(out["actions"][4, t], want, rtol=1e-5, atol=1e-6)
    again = rollout_batch(cpu, policy, jnp.float32(0.5), key, n)
    np.testing.assert_array_equal(again["score"], out["score"])
    # backend resolution
    hc = make("mamujoco_halfcheetah_2x3")
    assert behaviour.resolve_backend(hc, "auto") == (
        "cpu" if jax.default_backend() == "cpu" else "jax")
    with pytest.raises(ValueError, match="only for MAMuJoCo"):
        behaviour.resolve_backend(make("mpe_spread"), "cpu")
    with pytest.raises(ValueError, match="unknown rollout backend"):
        behaviour.resolve_backend(hc, "gpu")


def test_global_state_is_the_single_agent_observation(env):
    """Centralised critics see (qpos[1:], qvel): 17 dims, incl. the body velocity."""
    _, state = env.reset(jax.random.PRNGKey(0))
    g = np.asarray(env.global_state(state))
    assert g.shape == (17,)
    np.testing.assert_array_equal(g, np.concatenate([np.asarray(state.qpos)[1:],
                                                     np.asarray(state.qvel)]))


def test_mjx_import_drops_only_the_warp_notices():
    """Our lazy mjx import drops mjx's "Failed to import warp" lines (the optional backend we do
    not use) and passes anything else printed during the import on."""
    import subprocess
    import sys
    code = ("import builtins, contextlib, io, sys\n"
            "from dom2_jax.envs.mamujoco import halfcheetah as h\n"
            "real_import = builtins.__import__\n"
            "def noisy(name, *a, **k):\n"
            "    if name == 'mujoco' and 'mujoco.mjx' not in sys.modules:\n"
            "        print('Failed to import warp: stand-in'); print('other notice')\n"
            "    return real_import(name, *a, **k)\n"
            "builtins.__import__ = noisy\n"
            "assert h._mjx().__name__ == 'mujoco.mjx'\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert "Failed to import" not in out.stdout
    assert "other notice" in out.stdout


def test_model_without_settotalmass_equals_the_plain_compile():
    """``load_model`` strips gymnasium's deprecated ``settotalmass`` and applies it after the
    compile: every numeric array of the model must equal the plain compile's, and no
    deprecation warning may be printed (MuJoCo writes it from C, hence the subprocess)."""
    import subprocess
    import sys

    import mujoco

    from dom2_jax.envs.mamujoco import common as mjc
    plain = mujoco.MjModel.from_xml_path(mjc.xml_path())
    ours = mjc.load_model()
    assert 'settotalmass="' in open(mjc.xml_path()).read()  # else this test checks nothing
    compared = 0
    for name in dir(plain):
        a = getattr(plain, name, None)
        if name.startswith("_") or not isinstance(a, np.ndarray) or a.dtype.kind not in "fiub":
            continue
        np.testing.assert_array_equal(getattr(ours, name), a, err_msg=name)
        compared += 1
    assert compared > 50
    np.testing.assert_allclose(ours.body_mass.sum(), 14.0)
    code = "from dom2_jax.envs.mamujoco import common as c; c.load_model()"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert "settotalmass" not in out.stdout + out.stderr


_PORTABLE_SCRIPT = r"""
import hashlib, json, sys
import jax, jax.numpy as jnp, numpy as np
from dom2_jax.envs.mamujoco.cpu import HalfCheetahCPU, rollout_batch

def policy(params, obs, key):  # a matmul (CPU-specific kernels) + Gaussian noise, like TD3's
    a = jnp.tanh(obs @ params["w"] + params["b"])
    return jnp.clip(a + 0.1 * jax.random.normal(key, a.shape, a.dtype), -1.0, 1.0)

# parameters as a shipped policy's: read, not computed (a float32 draw would itself differ)
params = {"w": (np.random.default_rng(1).normal(size=(6, 3)) * 0.7).astype(np.float32),
          "b": np.full((3,), 0.1, np.float32)}
out = rollout_batch(HalfCheetahCPU(2, episode_length=200), policy, params,
                    jax.random.PRNGKey(4), 2, return_trajectory=True, portable=True)
print(json.dumps({k: hashlib.sha256(np.ascontiguousarray(out[k]).tobytes()).hexdigest()
                  for k in ("obs", "actions", "rewards")}))
"""


def test_portable_rollouts_are_the_same_bits_whatever_code_the_cpu_gets(tmp_path):
    """Dataset generation's HalfCheetah rollouts (``portable=True``) give the same bits when
    XLA compiles for another instruction set (SSE4.2 instead of the host's: no FMA, other
    vector widths), as on another CPU; float32 programs do not (an Intel Xeon and an AMD EPYC
    gave different seed-0 medium data before)."""
    from conftest import outputs_under_two_instruction_sets
    digests = outputs_under_two_instruction_sets(_PORTABLE_SCRIPT, tmp_path)
    assert digests[0] == digests[1]


def test_portable_initial_states_and_actions_lie_on_their_grids():
    from dom2_jax.envs.mamujoco import cpu as cpu_lib
    config = HalfCheetahCPU(1).config
    qpos, qvel, sc = cpu_lib.portable_initial_batch(jax.random.PRNGKey(0), 500, config)
    for x in (qpos, qvel):
        np.testing.assert_array_equal(x, np.round(x / cpu_lib.STATE_GRID) * cpu_lib.STATE_GRID)
    s = config.reset_noise_scale
    assert np.abs(qpos).max() <= s and abs(np.abs(qpos).mean() - s / 2) < 0.01  # U(-s, s)
    assert abs(qvel.std() - s) < 0.01 and abs(qvel.mean()) < 0.01                # s * N(0, 1)
    np.testing.assert_array_equal(sc, 1.0)

    def policy(params, obs, key):
        return jnp.tanh(obs[:, :3] * params)
    obs = np.random.default_rng(0).normal(size=(4, 2, 6)).astype(np.float32)
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    a = cpu_lib.portable_actions(policy, jnp.float32(0.5), obs, keys)
    assert a.dtype == np.float32
    np.testing.assert_array_equal(a, np.round(a / cpu_lib.ACTION_GRID) * cpu_lib.ACTION_GRID)
    np.testing.assert_allclose(a, np.tanh(obs[..., :3] * 0.5), atol=cpu_lib.ACTION_GRID)
