"""Parity of the JAX MPE with mpe2 (physics, observations) and with OMAR's formulas (rewards).

mpe2's ``World`` is driven directly: same initial entity states, same per-agent action
forces (our learners' actions and our scripted prey's actions times accel), its
``integrate_state`` replaced by the original MPE order for ``integration="original"`` and
left alone for ``integration="mpe2"``. Initial positions are packed into a small box so
agents collide with each other and with obstacles during the 25 steps.
"""
from __future__ import annotations

import types

import jax
import numpy as np
import pytest

pytest.importorskip("mpe2")
from mpe2.simple_spread.simple_spread import Scenario as Mpe2Spread  # noqa: E402
from mpe2.simple_tag.simple_tag import Scenario as Mpe2Tag  # noqa: E402
from mpe2.simple_world_comm.simple_world_comm import Scenario as Mpe2World  # noqa: E402

from dom2_jax.envs import make  # noqa: E402

ATOL_STATE = 1e-5


def original_integrate_state(self, p_force):
    """The original MPE's World.integrate_state (velocity first), for patching mpe2."""
    for i, entity in enumerate(self.entities):
        if not entity.movable:
            continue
        entity.state.p_vel = entity.state.p_vel * (1 - self.damping)
        if p_force[i] is not None:
            entity.state.p_vel = entity.state.p_vel + (p_force[i] / entity.mass) * self.dt
        if entity.max_speed is not None:
            speed = np.sqrt(np.sum(np.square(entity.state.p_vel)))
            if speed > entity.max_speed:
                entity.state.p_vel = entity.state.p_vel / speed * entity.max_speed
        entity.state.p_pos = entity.state.p_pos + entity.state.p_vel * self.dt


# ------------------------------------------------------------- independent reward formulas
def _d(a, b):
    return float(np.sqrt(np.sum(np.square(a.state.p_pos - b.state.p_pos))))


def _hit(a, b):
    return _d(a, b) < a.size + b.size


def omar_spread_reward(agent, world):
    """OMAR simple_spread.reward, re-computed in plain numpy."""
    rew = 0.0
    for lm in world.landmarks:
        rew += min(1.0 / min(_d(a, lm) for a in world.agents), 10.0)
    for a in world.agents:
        if a is not agent and _hit(a, agent):
            rew -= 5.0
    return rew


def omar_team_reward(world, collision_reward):
    """OMAR simple_tag / simple_world adversary_reward (shape=True): shared by predators."""
    good = [a for a in world.agents if not a.adversary]
    adv = [a for a in world.agents if a.adversary]
    rew = -0.1 * sum(min(_d(g, p) for g in good) for p in adv)
    rew += collision_reward * sum(_hit(g, p) for g in good for p in adv)
    return rew


# ------------------------------------------------------------- the driver
def build(case):
    """Returns (env, mpe2 world, mpe2 scenario) for a parity case."""
    name, kwargs = case
    if name == "mpe_spread":
        sc = Mpe2Spread()
        world = sc.make_world(3)
    elif name == "mpe_tag":
        sc = Mpe2Tag()
        world = sc.make_world()
    else:
        sc = Mpe2World()
        if kwargs.get("variant", "omar") == "omar":
            world = sc.make_world(num_good_agents=1, num_adversaries=3)
            for a in world.agents:   # OMAR: every agent is a silent "leader"
                a.leader, a.silent = True, True
        else:
            world = sc.make_world()
    sc.reset_world(world, np.random.default_rng(0))
    env = make(name, **{k: v for k, v in kwargs.items() if k != "_speed"})
    return env, world, sc


def reference_obs(env, world, sc):
    """mpe2's observations (learners, scripted) in our layout."""
    obs = [sc.observation(a, world) for a in world.agents]
    if env.name == "mpe_world" and env.variant == "omar":
        # mpe2's simple_world_comm observation with every agent a leader is OMAR's
        # simple_world observation followed by the (zero) 4-dim comm channel.
        obs = [o[:-4] for o in obs]
    return (np.stack([obs[i] for i in env.learner_idx]),
            np.stack([obs[i] for i in env.scripted_idx]) if len(env.scripted_idx) else None)


def reference_reward(env, world, sc):
    """OMAR's formulas (numpy) where OMAR and mpe2 differ, mpe2's scenario elsewhere."""
    learners = [world.agents[i] for i in env.learner_idx]
    if env.name == "mpe_spread":
        return np.array([omar_spread_reward(a, world) for a in learners])
    if env.name == "mpe_tag" and env.reward_shaping:
        return np.full(len(learners), omar_team_reward(world, 10.0))
    if env.name == "mpe_world" and env.variant == "omar":
        return np.full(len(learners), omar_team_reward(world, 5.0))
    return np.array([sc.reward(a, world) for a in learners])   # tag unshaped, world comm


def run_episode(case, integration, seed=0, speed=None):
    """Runs one 25-step episode in both simulators; returns a dict of worst errors/counts."""
    name, kwargs = case
    env, world, sc = build((name, dict(kwargs, integration=integration)))
    if integration == "original":
        world.integrate_state = types.MethodType(original_integrate_state, world)
    rng = np.random.default_rng(seed)
    n_agents = env.spec.n_agents
    pos = np.concatenate([rng.uniform(-0.35, 0.35, (n_agents, 2)),
                          rng.uniform(-0.5, 0.5, (env.spec.n_landmarks, 2))]).astype(np.float32)
    vel = np.zeros_like(pos)
    vel[:n_agents] = rng.uniform(-0.3, 0.3, (n_agents, 2))
    speed = np.ones(n_agents, np.float32) if speed is None else np.asarray(speed, np.float32)
    for i, e in enumerate(world.entities):
        e.state.p_pos = pos[i].astype(np.float64)
        e.state.p_vel = vel[i].astype(np.float64)
    # OMAR's core.py multiplies the env-scaled action by mass * accel again (when set)
    omar_gain = [a.mass * a.accel if a.accel is not None else a.mass for a in world.agents]
    force_gain = [g if kwargs.get("force_model") == "omar" else 1.0 for g in omar_gain]
    for i, a in enumerate(world.agents):   # speed shift = accel and max speed scaled by v_i
        a.accel = float(env.spec.accel[i] * speed[i])
        if a.max_speed is not None:
            a.max_speed = float(a.max_speed * speed[i])
    state = env.state_from_positions(pos, vel, speed)
    step = jax.jit(env.step)
    scripted = jax.jit(env.scripted_actions)
    prey_obs = jax.jit(env.prey_obs) if len(env.scripted_idx) else None
    hidden = jax.jit(lambda p: (~env._visibility(p)).sum()) if name == "mpe_world" else None
    log = dict(state=0.0, obs=0.0, prey_obs=0.0, reward=0.0, collisions=0, hidden=0, dones=[])
    for t in range(env.episode_length):
        a = rng.uniform(-1, 1, (env.num_agents, 2)).astype(np.float32)
        a[rng.uniform(size=a.shape) < 0.1] *= 1.5          # some out-of-range actions (clipped)
        u = np.zeros((n_agents, 2), np.float64)
        u[env.learner_idx] = np.clip(a, -1, 1)
        if len(env.scripted_idx):
            u[env.scripted_idx] = np.asarray(scripted(state))
        for i, ag in enumerate(world.agents):
            ag.action.u = u[i] * ag.accel * force_gain[i]
            ag.action.c = np.zeros(world.dim_c)
        world.step()
        obs, state, reward, done, _ = step(jax.random.PRNGKey(t), state, a)
        ref_pos = np.stack([e.state.p_pos for e in world.entities])
        ref_vel = np.stack([e.state.p_vel for e in world.entities])
        log["state"] = max(log["state"], np.abs(ref_pos - np.asarray(state.p_pos)).max(),
                           np.abs(ref_vel - np.asarray(state.p_vel)).max())
        ref_obs, ref_prey_obs = reference_obs(env, world, sc)
        log["obs"] = max(log["obs"], np.abs(ref_obs - np.asarray(obs)).max())
        if prey_obs is not None:
            log["prey_obs"] = max(log["prey_obs"],
                                  np.abs(ref_prey_obs - np.asarray(prey_obs(state))).max())
        ref_rew = reference_reward(env, world, sc)
        log["reward"] = max(log["reward"], (np.abs(ref_rew - np.asarray(reward))
                                            / (1.0 + np.abs(ref_rew))).max())
        colliders = [e for e in world.entities if e.collide]
        log["collisions"] += sum(_hit(x, y) for i, x in enumerate(colliders)
                                 for y in colliders[i + 1:] if x.movable or y.movable)
        if hidden is not None:
            log["hidden"] += int(hidden(state.p_pos))
        log["dones"].append(bool(done))
    return env, log


CASES = [("mpe_spread", {}), ("mpe_tag", {}), ("mpe_tag", {"reward_shaping": False}),
         ("mpe_tag", {"force_model": "omar"}), ("mpe_world", {}),
         ("mpe_world", {"variant": "comm"}), ("mpe_world", {"force_model": "omar"})]
IDS = ["spread", "tag", "tag_unshaped", "tag_omarforce", "world_omar", "world_comm",
       "world_omarforce"]
OBS_DIMS = {"spread": 18, "tag": 16, "tag_unshaped": 16, "tag_omarforce": 16, "world_omar": 24,
            "world_comm": 34, "world_omarforce": 24}


@pytest.mark.parametrize("integration", ["original", "mpe2"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_parity_with_mpe2(case, integration, request):
    if integration == "mpe2" and case not in (CASES[0], CASES[1], CASES[5]):
        pytest.skip("same physics as a case already run with integration='mpe2'")
    env, log = run_episode(case, integration, seed=1)
    assert log["state"] < ATOL_STATE, log
    assert log["obs"] < ATOL_STATE, log
    assert log["prey_obs"] < ATOL_STATE, log
    assert log["reward"] < 1e-4, log
    assert log["collisions"] > 0, "the episode must exercise contact forces"
    assert log["dones"] == [False] * 24 + [True]
    assert env.obs_dim == OBS_DIMS[request.node.callspec.id.split("-")[0]]
    if env.name == "mpe_world" and env.variant == "comm":
        assert log["hidden"] > 0, "the forest-hiding rule must be exercised"


def test_speed_shift_parity_with_mpe2():
    """shift semantics: scaling accel and max speed of each agent in mpe2 gives our motion."""
    speed = [0.4, 0.7, 1.0, 1.0]   # 3 predators, prey unchanged
    env, log = run_episode(("mpe_tag", {}), "original", seed=2, speed=speed)
    assert log["state"] < ATOL_STATE, log
