"""PettingZoo's own test suites on the wrapper, for every task and shift (issue #28).

Suites: parallel_api_test, parallel_seed_test, api_test, seed_test, max_cycles_test,
state_test, render_test (the AEC ones on ``pettingzoo_wrapper.env``, i.e. PettingZoo's
``parallel_to_aec``). Cost is compilation (MPE ~1-2 s, HalfCheetah's MJX step ~5-10 s per env
object); ``pettingzoo_wrapper.parallel_env`` keeps one env object per (name, overrides), so
every suite of a case shares its two compiled programs. HalfCheetah runs short episodes here
(``max_cycles`` 10 or the suites' cycle counts); the default run covers the nominal
HalfCheetah, ``--runslow`` adds shifts R and E (another compile each: the same step program,
but a new env object) and full 1000-step episodes.
"""
from __future__ import annotations

import functools
import types

import numpy as np
import pytest

pytest.importorskip("pettingzoo")
from pettingzoo.test import (api_test, max_cycles_test, parallel_api_test,  # noqa: E402
                             parallel_seed_test, render_test, seed_test, state_test)

from dom2_jax import registry  # noqa: E402
from dom2_jax.envs import pettingzoo_wrapper as pz  # noqa: E402
from dom2_jax.envs.mamujoco.render import FrameRenderer, RenderingUnavailable  # noqa: E402

# Observation and state spaces are unbounded by design, as in PettingZoo's own MPE, which the
# suites exempt from their "infinity is probably too low/high" advice by name.
pytestmark = pytest.mark.filterwarnings("ignore:.*infinity.*:UserWarning")

HC = "mamujoco_halfcheetah_2x3"
SHIFTS = {"mpe_spread": (None, "speed"), "mpe_tag": (None, "speed"),
          "mpe_world": (None, "speed"), HC: (None, "R", "E")}
assert set(SHIFTS) == set(registry.TASKS), "a new task needs its shifts listed here"
SLOW_CASES = {(HC, "R"), (HC, "E")}
CASES = [pytest.param(name, shift, id=f"{name}-{shift}",
                      marks=[pytest.mark.slow] if (name, shift) in SLOW_CASES else [])
         for name in registry.TASKS for shift in SHIFTS[name]]
SUITES = ("parallel_api_test", "parallel_seed_test", "api_test", "seed_test",
          "max_cycles_test", "state_test", "render_test")


def _constructors(name, shift, **kw):
    """(parallel constructor, AEC constructor), each taking further keyword arguments."""
    return (functools.partial(pz.parallel_env, name, shift=shift, **kw),
            functools.partial(pz.env, name, shift=shift, **kw))


@functools.lru_cache(maxsize=None)
def _gl_problem():
    """None when MuJoCo can render in this process, else the reason."""
    try:
        FrameRenderer(width=32, height=24).close()
    except RenderingUnavailable as err:
        return str(err)
    return None


def run_suite(suite, name, shift, cycles=None):
    """Runs PettingZoo's ``suite`` on task ``name`` with ``shift``. MPE episodes run whole
    (25 steps, truncation included); HalfCheetah's are cut to 10 steps by ``max_cycles``
    unless ``cycles`` is given (then they run ``cycles`` steps, 1000 = a whole episode)."""
    episode = pz.parallel_env(name, shift=shift).env.episode_length
    steps = cycles or min(episode, 10)
    short = {} if steps >= episode else {"max_cycles": steps}
    par, aec = _constructors(name, shift, **short)
    n = steps + 1  # one more cycle than the episode: the end (truncation) is exercised
    if suite == "parallel_api_test":
        parallel_api_test(par(seed=0), num_cycles=n)
    elif suite == "parallel_seed_test":
        parallel_seed_test(par, num_cycles=n)
    elif suite == "api_test":
        api_test(aec(), num_cycles=n)
    elif suite == "seed_test":
        seed_test(aec, num_cycles=n)
    elif suite == "max_cycles_test":  # its own max_cycles (4)
        p, a = _constructors(name, shift)
        max_cycles_test(types.SimpleNamespace(parallel_env=p, env=a))
    elif suite == "state_test":
        state_test(aec(), par(), num_cycles=n)
    elif suite == "render_test":
        if name == HC and _gl_problem():
            pytest.skip(f"no OpenGL for MuJoCo: {_gl_problem()}")
        with pytest.warns(UserWarning, match="human"):  # render_test builds a human env
            render_test(aec)
    else:
        raise ValueError(suite)


@pytest.mark.parametrize("suite", SUITES)
@pytest.mark.parametrize("name,shift", CASES)
def test_pettingzoo_suite(name, shift, suite):
    run_suite(suite, name, shift)


@pytest.mark.slow
@pytest.mark.parametrize("shift", SHIFTS[HC])
@pytest.mark.parametrize("suite", ("parallel_api_test", "api_test", "state_test"))
def test_halfcheetah_whole_episode(shift, suite):
    run_suite(suite, HC, shift, cycles=1000)


# --------------------------------------------------------------------------- what they see
def test_state_is_global_state():
    """state(): MPE's learners' observations concatenated; HalfCheetah's qpos[1:], qvel
    (gymnasium HalfCheetah-v5 observation), float32 inside state_space."""
    for name, dim in (("mpe_world", 3 * 24), (HC, 17)):
        penv = pz.parallel_env(name, shift=None, seed=1)  # the suites' env object
        assert penv.state_space.shape == (dim,)
        obs, _ = penv.reset(seed=1)
        for _ in range(3):
            obs, *_ = penv.step({a: penv.action_space(a).sample() for a in penv.agents})
            s = penv.state()
            assert s.dtype == np.float32 and penv.state_space.contains(s)
            if name == HC:
                st = penv._state
                want = np.concatenate([np.asarray(st.qpos)[1:], np.asarray(st.qvel)])
            else:
                want = np.concatenate([obs[a] for a in penv.possible_agents])
            np.testing.assert_array_equal(s, want)


def test_halfcheetah_rgb_frames_follow_the_state():
    if _gl_problem():
        pytest.skip(f"no OpenGL for MuJoCo: {_gl_problem()}")
    penv = pz.parallel_env(HC, shift=None, render_mode="rgb_array", seed=0)
    assert penv.metadata["render_fps"] == 20 and penv.metadata["render_modes"] == ["rgb_array"]
    penv.reset(seed=0)
    first = penv.render()
    for _ in range(8):
        penv.step({a: np.ones(3, np.float32) for a in penv.agents})
    last = penv.render()
    penv.close()
    assert first.shape == last.shape == (240, 320, 3) and first.dtype == np.uint8
    assert np.abs(first.astype(int) - last).mean() > 0.5  # the legs moved


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="max_cycles"):
        pz.parallel_env("mpe_spread", max_cycles=26)
    with pytest.raises(ValueError, match="max_cycles"):
        pz.parallel_env("mpe_spread", max_cycles=0)
    with pytest.raises(ValueError, match="render_mode"):
        pz.parallel_env("mpe_spread", render_mode="ansi")
    with pytest.warns(UserWarning, match="no window"):
        penv = pz.parallel_env("mpe_spread", shift=None, render_mode="human")
    penv.reset(seed=0)
    assert penv.render() is None
    with pytest.raises(RuntimeError, match="reset"):
        pz.parallel_env("mpe_spread").state()
    assert pz.parallel_env("mpe_spread").env is pz.parallel_env("mpe_spread").env
    assert pz.parallel_env("mpe_spread", shift="speed").env.shift == "speed"


# --------------------------------------------------------------------------- they can fail
class _NoStateSpace(pz.PettingZooParallelEnv):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        del self.state_space


class _NoFrames(pz.PettingZooParallelEnv):
    def render(self):
        return None


class _IgnoresMaxCycles(pz.PettingZooParallelEnv):
    def __init__(self, *args, max_cycles=None, **kwargs):
        super().__init__(*args, **kwargs)


class _IgnoresSeed(pz.PettingZooParallelEnv):
    def reset(self, seed=None, options=None):
        return super().reset(seed=None, options=options)


class _Float64Observations(pz.PettingZooParallelEnv):
    def _obs_dict(self, obs):
        return {a: o.astype(np.float64) for a, o in super()._obs_dict(obs).items()}


class _NeverTruncates(pz.PettingZooParallelEnv):
    def step(self, actions):
        agents = self.agents
        out = super().step(actions)
        self.agents = agents   # keeps "finished" agents alive
        return out


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("broken,suite", [
    (_NoStateSpace, "state_test"), (_NoFrames, "render_test"),
    (_IgnoresMaxCycles, "max_cycles_test"), (_IgnoresSeed, "seed_test"),
    (_IgnoresSeed, "parallel_seed_test"), (_Float64Observations, "api_test"),
    (_NeverTruncates, "parallel_api_test")], ids=lambda x: getattr(x, "__name__", x))
def test_suites_catch_a_broken_wrapper(monkeypatch, broken, suite):
    """Each suite fails on a wrapper with the matching defect (so passing means something)."""
    monkeypatch.setattr(pz, "PettingZooParallelEnv", broken)
    with pytest.raises((AssertionError, AttributeError)):
        run_suite(suite, "mpe_tag", None)
