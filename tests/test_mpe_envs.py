"""Construction, API contract, determinism, vmap, shifts and input validation of the JAX MPE.

XLA compilation dominates the run time of these tests on a small CPU, so each scenario is
compiled twice only (one episode runner, and its vmap over 1024 envs), on the
``shift="speed"`` env; unit speed factors can be forced at run time to get the unshifted
dynamics from the same program.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dom2_jax.envs import make
from dom2_jax.envs.mpe import base, prey

NAMES = ["mpe_spread", "mpe_tag", "mpe_world"]
EXPECTED = {  # name -> (num_agents, obs_dim, v_min)
    "mpe_spread": (3, 18, 0.3), "mpe_tag": (3, 16, 0.4), "mpe_world": (3, 24, 0.5)}


def fixed_actions(seed, n, length=25):
    """Actions [length, n, 2] in [-1, 1] made with numpy (keeps RNG out of compiled code)."""
    return np.random.default_rng(seed).uniform(-1, 1, (length, n, 2)).astype(np.float32)


def run(env, key, actions, unit_speed=False):
    """Reset + one episode with the given actions -> dict with ``pos``, ``obs``, ``reward``,
    ``done``, ``info`` (leading axis 25), ``obs0`` and ``state0``. ``unit_speed`` (traced)
    replaces the sampled speed factors by 1."""
    obs0, state0 = env.reset(key)
    state0 = state0.replace(speed=jnp.where(unit_speed, 1.0, state0.speed))

    def body(state, a):
        obs, state, reward, done, info = env.step(key, state, a)
        return state, (state.p_pos, obs, reward, done, info)

    pos, obs, rew, done, info = jax.lax.scan(body, state0, actions)[1]
    return dict(pos=pos, obs=obs, reward=rew, done=done, info=info, obs0=obs0, state0=state0)


@functools.lru_cache(maxsize=None)
def get_env(name, shift="speed"):
    return make(name, shift=shift)


@functools.lru_cache(maxsize=None)
def runner(name, batched=False):
    fn = functools.partial(run, get_env(name))
    return jax.jit(jax.vmap(fn, in_axes=(0, 0, None)) if batched else fn)


def episode(name, seed=0, unit_speed=False):
    acts = fixed_actions(seed, get_env(name).num_agents)
    return runner(name)(jax.random.PRNGKey(seed), acts, unit_speed)


@pytest.mark.parametrize("shift", [None, "speed"])
@pytest.mark.parametrize("name", NAMES)
def test_make_and_contract(name, shift):
    env = make(name, shift=shift)
    n, obs_dim, v_min = EXPECTED[name]
    assert (env.num_agents, env.obs_dim, env.act_dim, env.episode_length) == (n, obs_dim, 2, 25)
    assert len(env.agent_names) == n and env.v_min == v_min and env.shift == shift
    # shapes and dtypes, without compiling
    key = jax.random.PRNGKey(0)
    obs0, state0 = jax.eval_shape(env.reset, key)
    obs, state, reward, done, info = jax.eval_shape(env.step, key, state0,
                                                    jnp.zeros((n, 2), jnp.float32))
    for o in (obs0, obs):
        assert o.shape == (n, obs_dim) and o.dtype == jnp.float32
    for s in (state0, state):
        assert s.p_pos.shape == (env.spec.n_entities, 2) == s.p_vel.shape
        assert s.p_pos.dtype == s.p_vel.dtype == s.speed.dtype == jnp.float32
        assert s.speed.shape == (env.spec.n_agents,) and s.t.shape == ()
    assert reward.shape == (n,) and reward.dtype == jnp.float32
    assert done.shape == () and done.dtype == jnp.bool_ and info == {}
    # values, on the compiled episode
    out = episode(name, unit_speed=shift is None)
    assert int(out["state0"].t) == 0 and out["info"] == {}
    assert np.isfinite(np.asarray(out["obs"])).all() and np.isfinite(out["reward"]).all()
    expected = out["reward"].mean(-1) if name == "mpe_spread" else out["reward"][:, 0]
    np.testing.assert_allclose(env.score(out["reward"]), expected)


def test_world_comm_variant_and_names():
    env = make("mpe_world", variant="comm")
    assert (env.num_agents, env.obs_dim) == (4, 34)
    assert env.agent_names[0] == "leadadversary_0" and env.spec.n_agents == 6
    assert make("mpe_tag").agent_names == ("adversary_0", "adversary_1", "adversary_2")
    assert make("mpe_spread").agent_names == ("agent_0", "agent_1", "agent_2")


@pytest.mark.parametrize("name", NAMES)
def test_determinism_vmap_and_speed_shift(name):
    env = get_env(name)
    keys = jax.random.split(jax.random.PRNGKey(7), 1024)
    actions = np.stack([fixed_actions(i, env.num_agents) for i in range(1024)])
    batched = runner(name, batched=True)(keys, actions, False)
    single = runner(name)
    # Batched and unbatched XLA programs round differently (~1e-7 per step); the pursuit
    # dynamics of tag/world (prey flee direction, contacts) amplify that over 25 steps to
    # ~1e-4. So: exact equality for the same key, 1e-5 over the first 10 steps, 1e-3 after.
    for i in (0, 1, 517, 1023):
        one = single(keys[i], actions[i], False)
        again = single(keys[i], actions[i], False)
        for k in ("pos", "obs", "reward", "done"):
            a, b, c = np.asarray(one[k]), np.asarray(again[k]), np.asarray(batched[k][i])
            np.testing.assert_array_equal(a, b)
            np.testing.assert_allclose(a[:10], c[:10], rtol=1e-5, atol=1e-5)
            if k in ("pos", "obs"):
                np.testing.assert_allclose(a, c, atol=1e-3)
    dones = np.asarray(batched["done"])
    assert dones[:, -1].all() and not dones[:, :-1].any()
    # shift="speed": per-agent factors in [v_min, 1] for learners, 1 for the scripted prey
    speed = np.asarray(batched["state0"].speed)
    learners = speed[:, env.learner_idx]
    assert learners.min() >= env.v_min and learners.max() <= 1.0
    assert learners.std() > 0.05 and np.all(speed[:, env.scripted_idx] == 1.0)
    # ... and they change the motion: same key and actions, unit speed factors
    plain = single(keys[0], actions[0], True)
    np.testing.assert_array_equal(plain["state0"].p_pos, batched["state0"].p_pos[0])
    assert np.abs(np.asarray(plain["pos"]) - np.asarray(batched["pos"][0])).max() > 1e-2
    if name == "mpe_tag":   # the scripted prey stays (almost always) inside the arena
        prey_pos = np.asarray(batched["pos"])[:, :, env.scripted_idx[0]]
        assert np.mean(np.abs(prey_pos).max(axis=(1, 2)) < 1.1) > 0.95


def test_unshifted_env_has_unit_speed():
    env = make("mpe_tag")
    state = jax.jit(env.reset)(jax.random.PRNGKey(0))[1]
    np.testing.assert_array_equal(state.speed, np.ones(4))


def test_speed_factor_scales_motion_exactly():
    """From rest without contact, displacement scales with the speed factor (acceleration
    and max speed both scale), and a predator pushed for a whole episode reaches exactly
    v * max_speed."""
    tag = get_env("mpe_tag")
    far = np.array([[-3, 0], [3, 3], [3, -3], [0, 9], [9, 0], [-9, -9]], np.float32)
    push = jnp.array([[1.0, 0.0], [0.6, 0.0], [0.0, -1.0]])

    @jax.jit
    def drive(speed):
        st = tag.state_from_positions(far, speed=speed)
        step = lambda s, _: (tag.step(jax.random.PRNGKey(0), s, push)[1],) * 2  # noqa: E731
        return jax.lax.scan(step, st, None, length=25)[1]

    ref = drive(jnp.ones(4))
    slow = drive(jnp.array([0.4, 0.7, 1.0, 1.0]))
    disp = lambda s: np.asarray(s.p_pos[:, :3]) - far[:3]   # noqa: E731
    np.testing.assert_allclose(disp(slow), disp(ref) * np.array([[0.4], [0.7], [1.0]]),
                               rtol=1e-4, atol=1e-6)
    speeds = np.linalg.norm(np.asarray(slow.p_vel[-1, :3]), axis=-1)
    np.testing.assert_allclose(speeds[0], 0.4, rtol=1e-5)                 # clipped at v * 1.0
    assert np.linalg.norm(np.asarray(ref.p_vel[-1, 0])) == pytest.approx(1.0, rel=1e-5)


def test_integration_option():
    assert get_env("mpe_tag").integration == "original"
    other = make("mpe_tag", shift="speed", integration="mpe2")
    key, acts = jax.random.PRNGKey(5), fixed_actions(5, 3)
    mpe2 = jax.jit(functools.partial(run, other))(key, acts)["pos"]
    original = runner("mpe_tag")(key, acts, False)["pos"]
    assert np.abs(np.asarray(original) - np.asarray(mpe2)).max() > 1e-3


def test_action_clipping():
    acts = fixed_actions(3, 3) * 4.0
    big = runner("mpe_spread")(jax.random.PRNGKey(3), acts, False)["pos"]
    clipped = runner("mpe_spread")(jax.random.PRNGKey(3), np.clip(acts, -1, 1), False)["pos"]
    np.testing.assert_array_equal(np.asarray(big), np.asarray(clipped))


def test_prey_params_policy():
    dim = get_env("mpe_tag").prey_obs_dim
    rng = np.random.default_rng(0)
    params = {"layers": [{"w": rng.normal(0, 0.3, (dim, 32)), "b": np.zeros(32)},
                         {"w": rng.normal(0, 3.0, (32, 2)), "b": np.zeros(2)}],
              "obs_norm": {"mean": np.full(dim, 0.1), "var": np.full(dim, 2.0),
                           "scale": np.ones(dim), "bias": np.zeros(dim)}}
    env = make("mpe_tag", shift="speed", prey_params=params)
    key, acts = jax.random.PRNGKey(2), fixed_actions(2, 3)

    @jax.jit
    def go(key):
        out = run(env, key, acts)
        st = out["state0"]
        o = env.prey_obs(st)
        return out, o, env.scripted_actions(st), prey.prey_policy_apply(env.prey_params, o)

    out, o, act, expected = go(key)
    # reference MLP in numpy: BatchNorm (eval) -> ReLU hidden -> tanh out
    o = np.asarray(o)
    x = (o - 0.1) / np.sqrt(2.0 + 1e-5)
    ref = np.tanh(np.maximum(x @ params["layers"][0]["w"], 0) @ params["layers"][1]["w"])
    np.testing.assert_allclose(np.asarray(act), ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(act), np.asarray(expected), rtol=1e-6)
    # the prey really is driven by the MLP: its trajectory differs from the scripted prey's
    scripted = runner("mpe_tag")(key, acts, False)
    assert np.abs(np.asarray(out["pos"]) - np.asarray(scripted["pos"])).max() > 1e-3
    assert get_env("mpe_world").prey_obs_dim == 22
    assert make("mpe_world", variant="comm").prey_obs_dim == 28
    for name in ("mpe_tag", "mpe_world"):
        with pytest.raises(ValueError, match="prey observes"):
            make(name, prey_params={"layers": [{"w": np.zeros((5, 2)), "b": np.zeros(2)}]})
        with pytest.raises(ValueError, match="layers"):
            make(name, prey_params={"w": 1})
    p = jax.eval_shape(lambda k: prey.init_prey_params(k, dim), jax.random.PRNGKey(0))
    assert [l["w"].shape for l in p["layers"]] == [(dim, 64), (64, 64), (64, 2)]


def test_scripted_prey_rule():
    act = jax.jit(prey.scripted_prey_action)
    # flee: away from a predator on its left
    a = act(jnp.array([0.0, 0.0]), jnp.array([[-0.3, 0.0], [-5.0, 5.0]]))
    assert a[0] > 0.9 and abs(float(jnp.linalg.norm(a)) - 1.0) < 1e-4
    # at the right edge with a predator close on the left, the wall term turns it back
    a = act(jnp.array([0.99, 0.0]), jnp.array([[0.7, 0.0], [-5.0, 5.0]]))
    assert a[0] < 0


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown shift"):
        make("mpe_spread", shift="gravity")
    with pytest.raises(ValueError, match="unknown integration"):
        make("mpe_tag", integration="rk4")
    with pytest.raises(ValueError, match="unknown force_model"):
        make("mpe_tag", force_model="double")
    with pytest.raises(ValueError, match="unknown world variant"):
        make("mpe_world", variant="simple_world_comm2")
    with pytest.raises(ValueError, match="v_min"):
        make("mpe_spread", shift="speed", v_min=1.5)
    env = get_env("mpe_tag")
    st = env.state_from_positions(np.zeros((6, 2)))
    with pytest.raises(ValueError, match=r"actions must have shape \(3, 2\)"):
        env.step(jax.random.PRNGKey(0), st, jnp.zeros((4, 2)))
    with pytest.raises(ValueError, match="p_pos must have shape"):
        env.state_from_positions(np.zeros((3, 2)))


def test_others_index():
    np.testing.assert_array_equal(base.others_index(3), [[1, 2], [0, 2], [0, 1]])
