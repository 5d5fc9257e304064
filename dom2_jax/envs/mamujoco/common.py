"""Backend-independent pieces of MAMuJoCo HalfCheetah 2x3: model, agent partition,
observation layout, shift sampling, reset sampling and reward.

Both backends (MJX in ``halfcheetah.py``, C MuJoCo in ``cpu.py``) use these functions, so
they agree by construction on everything except the physics step itself (which the
parity tests check).

Layout (gymnasium HalfCheetah-v5): ``qpos`` [9] = (rootx, rootz, rooty, bthigh, bshin, bfoot,
fthigh, fshin, ffoot), ``qvel`` [9] the matching velocities, ``ctrl`` [6] = (bthigh, bshin,
bfoot, fthigh, fshin, ffoot) motors.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import os
import re
from typing import Dict, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

Array = jax.Array

NQ = NV = 9
NU = 6
JOINT_NAMES = ("rootx", "rootz", "rooty", "bthigh", "bshin", "bfoot", "fthigh", "fshin", "ffoot")

# MaMuJoCo "2x3" as gymnasium-robotics 1.4 defines it (its partition order is the action order
# inside each agent): agent 0 = back leg, agent 1 = front leg. Values are actuator ids.
PARTITION_2X3 = (("bthigh", "bshin", "bfoot"), ("fthigh", "fshin", "ffoot"))
AGENT_NAMES = ("agent_0", "agent_1")
ACTUATOR_IDS = {name: i for i, name in enumerate(JOINT_NAMES[3:])}
# Kinematic chain used by MaMuJoCo's k-hop neighbourhoods (obsk).
EDGES = (("bfoot", "bshin"), ("bshin", "bthigh"), ("bthigh", "fthigh"), ("fthigh", "fshin"),
         ("fshin", "ffoot"))
# MaMuJoCo's global nodes for HalfCheetah, in gymnasium-robotics' order; rootx's position is
# never observed (it is the unbounded forward coordinate).
GLOBAL_JOINTS = ("rootz", "rooty")  # qpos part (rootx skipped)
GLOBAL_JOINTS_QVEL = ("rootx", "rootz", "rooty")
# Local categories per hop distance (gymnasium-robotics / original MaMuJoCo default for
# HalfCheetah): own joints qpos+qvel, farther joints qpos only.
LOCAL_CATEGORIES = (("qpos", "qvel"), ("qpos",))
SHIFTS = (None, "R", "E")

# Packer et al. (2018) HalfCheetah parameters: deterministic (D) value, and the R / E ranges.
# We use them as multiplicative factors relative to D on the gymnasium model (see
# ``shift_factors``).
SCALING_NAMES = ("power", "density", "friction")
NOMINAL = {"power": 0.9, "density": 1000.0, "friction": 0.8}
SHIFT_RANGES: Dict[str, Dict[str, Tuple[Tuple[float, float], ...]]] = {
    "R": {"power": ((0.7, 1.1),), "density": ((750.0, 1250.0),), "friction": ((0.5, 1.1),)},
    "E": {"power": ((0.5, 0.7), (1.1, 1.3)), "density": ((500.0, 750.0), (1250.0, 1500.0)),
          "friction": ((0.2, 0.5), (1.1, 1.4))},
}


def xml_path() -> str:
    """Path of ``half_cheetah.xml`` inside the installed gymnasium package (not copied)."""
    import gymnasium  # (a) optional: not in install_requires (comes with pettingzoo)
    path = os.path.join(os.path.dirname(gymnasium.__file__), "envs", "mujoco", "assets",
                        "half_cheetah.xml")
    if not os.path.exists(path):
        raise FileNotFoundError(f"gymnasium's HalfCheetah model not found at {path}; "
                                "install gymnasium>=1.0 (mujoco extra)")
    return path


@functools.lru_cache(maxsize=1)
def _base_model_cached():
    """gymnasium's model, compiled without MuJoCo's deprecated ``settotalmass`` attribute.

    MuJoCo >= 3.3 warns on every compile of ``<compiler settotalmass="14"/>``. We strip the
    attribute and apply what it did on the compiled model (``mj_setTotalmass`` then
    ``mj_setConst``, as the warning advises); every numeric array of the result equals the
    plain compile's bit for bit (tests/test_mamujoco.py).
    """
    with open(xml_path()) as f:
        text = f.read()
    match = re.search(r'\ssettotalmass="([^"]+)"', text)
    if match is None:  # a future gymnasium without the attribute
        return mujoco.MjModel.from_xml_path(xml_path())
    # No relative file references in this XML, so compiling from a string is equivalent.
    model = mujoco.MjModel.from_xml_string(text.replace(match.group(0), "", 1))
    mujoco.mj_setTotalmass(model, float(match.group(1)))
    mujoco.mj_setConst(model, mujoco.MjData(model))
    return model


def load_model():
    """A fresh ``mujoco.MjModel`` of gymnasium's HalfCheetah (copy of a cached compile)."""
    return copy.copy(_base_model_cached())


# --------------------------------------------------------------------------- config
@dataclasses.dataclass(frozen=True)
class HalfCheetahConfig:
    """Static configuration shared by the MJX and CPU backends.

    Attributes:
      obsk: MaMuJoCo ``agent_obsk`` (hops of neighbouring joints observed). 0 = each agent sees
        its own 3 joints' qpos and qvel (6 dims; OMAR and the DOM2 paper). 1 = gymnasium-robotics
        ``mamujoco_v1`` default (12 dims with the global root observations).
      global_categories: observed global root categories, subset of ("qpos", "qvel"). None =
        () for obsk 0 (original MaMuJoCo / OMAR) and ("qpos", "qvel") for obsk >= 1
        (gymnasium-robotics default).
      shift: None (nominal), "R" or "E" (Packer et al. 2018, sampled per episode at reset).
      episode_length: steps per episode (``done`` is True on that step; truncation).
      frame_skip: physics steps (dt 0.01) per env step.
      forward_reward_weight, ctrl_cost_weight, reset_noise_scale: HalfCheetah-v5 defaults.
      mjx_ls_iterations: MJX only: cap on line-search iterations per solver iteration (the
        model says 50). Under ``vmap`` MJX runs all of them (a scan of conds), so the cap sets
        the cost: 8 is ~3.5x faster than 50 with unchanged results (the C solver's line search
        converges in far fewer; see notes/mamujoco.md). None keeps the model's value.
      mjx_iterations: MJX only: cap on Newton iterations (None keeps the model's 100; the
        solver stops earlier at the model's tolerance). The C backend always uses the model.
    """

    obsk: int = 0
    global_categories: Optional[Tuple[str, ...]] = None
    shift: Optional[str] = None
    episode_length: int = 1000
    frame_skip: int = 5
    forward_reward_weight: float = 1.0
    ctrl_cost_weight: float = 0.1
    reset_noise_scale: float = 0.1
    mjx_ls_iterations: Optional[int] = 8
    mjx_iterations: Optional[int] = None

    def __post_init__(self):
        if not isinstance(self.obsk, (int, np.integer)) or isinstance(self.obsk, bool) \
                or not 0 <= int(self.obsk) <= 5:
            raise ValueError(f"obsk must be an int in [0, 5] (MaMuJoCo agent_obsk; 0 = OMAR / "
                             f"paper, 1 = gymnasium-robotics default), got {self.obsk!r}")
        if self.shift not in SHIFTS:
            raise ValueError(f"unknown shift {self.shift!r} for mamujoco_halfcheetah_2x3; "
                             f"expected one of {SHIFTS}")
        gc = self.global_categories
        if gc is None:
            gc = () if int(self.obsk) == 0 else ("qpos", "qvel")
        if isinstance(gc, str):
            gc = (gc,)
        gc = tuple(gc)
        bad = [c for c in gc if c not in ("qpos", "qvel")]
        if bad:
            raise ValueError(f"global_categories must be a subset of ('qpos', 'qvel'), got {gc}")
        object.__setattr__(self, "global_categories", gc)
        object.__setattr__(self, "obsk", int(self.obsk))
        if int(self.episode_length) < 1:
            raise ValueError(f"episode_length must be >= 1, got {self.episode_length}")
        if int(self.frame_skip) < 1:
            raise ValueError(f"frame_skip must be >= 1, got {self.frame_skip}")
        for name in ("mjx_ls_iterations", "mjx_iterations"):
            value = getattr(self, name)
            if value is not None and int(value) < 1:
                raise ValueError(f"{name} must be None or >= 1, got {value}")

    @property
    def dt(self) -> float:
        """Seconds per env step (model timestep 0.01 * frame_skip)."""
        return 0.01 * self.frame_skip


# --------------------------------------------------------------------------- observations
def _k_hop_joints(agent_joints: Sequence[str], k: int):
    """MaMuJoCo ``get_joints_at_kdist``: {hop: joints at exactly that hop, sorted by label}."""
    adj = {n: set() for n in JOINT_NAMES[3:]}
    for a, b in EDGES:
        adj[a].add(b)
        adj[b].add(a)
    seen = set(agent_joints)
    frontier = set(agent_joints)
    hops = {0: sorted(frontier)}
    for h in range(1, k + 1):
        frontier = set().union(*[adj[n] for n in frontier]) - seen if frontier else set()
        seen |= frontier
        hops[h] = sorted(frontier)
    return hops


def observation_labels(obsk: int = 0, global_categories: Sequence[str] = ()
                       ) -> Tuple[Tuple[str, ...], ...]:
    """Per agent, the names ("bfoot.qpos", ...) of its observation entries, in order.

    Mirrors gymnasium-robotics' ``build_obs``: for each hop h (0..obsk), for each joint at that
    hop (sorted by name), the categories of that hop (h=0: qpos, qvel; h>=1: qpos); then the
    global categories over the root joints (rootx's qpos excluded).
    """
    labels = []
    for part in PARTITION_2X3:
        hops = _k_hop_joints(part, obsk)
        out = []
        for h in range(obsk + 1):
            cats = LOCAL_CATEGORIES[min(h, len(LOCAL_CATEGORIES) - 1)]
            for joint in hops[h]:
                out += [f"{joint}.{c}" for c in cats]
        for c in global_categories:
            joints = GLOBAL_JOINTS if c == "qpos" else GLOBAL_JOINTS_QVEL
            out += [f"{j}.{c}" for j in joints]
        labels.append(tuple(out))
    return tuple(labels)


def observation_index(obsk: int = 0, global_categories: Sequence[str] = ()) -> np.ndarray:
    """[num_agents, obs_dim] int32 indices into ``concat(qpos, qvel, [0])`` (length 19).

    Agents with fewer entries are padded with index 18 (the trailing zero), so that
    ``observe`` zero-pads to the common ``obs_dim``.
    """
    labels = observation_labels(obsk, global_categories)
    pos = {f"{n}.qpos": i for i, n in enumerate(JOINT_NAMES)}
    pos.update({f"{n}.qvel": NQ + i for i, n in enumerate(JOINT_NAMES)})
    obs_dim = max(len(l) for l in labels)
    index = np.full((len(labels), obs_dim), NQ + NV, np.int32)
    for a, lab in enumerate(labels):
        index[a, :len(lab)] = [pos[x] for x in lab]
    return index


def observe(qpos, qvel, index: np.ndarray, xp=jnp):
    """Observations [..., num_agents, obs_dim] from qpos, qvel [..., 9] (``xp`` = jnp or np)."""
    flat = xp.concatenate([qpos, qvel, xp.zeros(qpos.shape[:-1] + (1,), qpos.dtype)], axis=-1)
    return flat[..., index]


def action_to_ctrl_index() -> np.ndarray:
    """[6] int: ctrl[ACT[i]] = actions.reshape(6)[i] (agent-major, partition order)."""
    return np.asarray([ACTUATOR_IDS[j] for part in PARTITION_2X3 for j in part], np.int32)


def actions_to_ctrl(actions, xp=jnp):
    """Clipped actions [..., 2, 3] -> motor controls [..., 6] in actuator order."""
    flat = actions.reshape(actions.shape[:-2] + (NU,))
    inv = np.argsort(action_to_ctrl_index())
    return flat[..., inv]


def check_actions_shape(actions_shape, batch_shape=()):
    """Raises ValueError unless ``actions_shape == batch_shape + (2, 3)``."""
    expected = tuple(batch_shape) + (len(PARTITION_2X3), 3)
    if tuple(actions_shape) != expected:
        raise ValueError(f"mamujoco_halfcheetah_2x3: actions must have shape {expected} "
                         f"(agents x 3 joints, in [-1, 1]), got {tuple(actions_shape)}")


# --------------------------------------------------------------------------- shifts
def _sample_union(key: Array, intervals: Tuple[Tuple[float, float], ...]) -> Array:
    """One sample uniform over a union of disjoint intervals (length-weighted)."""
    lengths = [b - a for a, b in intervals]
    u = jax.random.uniform(key, (), jnp.float32, 0.0, float(sum(lengths)))
    value = jnp.float32(intervals[0][0]) + u
    offset = 0.0
    for (a, _), prev_length in zip(intervals[1:], lengths[:-1]):
        offset += prev_length  # u beyond the earlier intervals' total length -> next interval
        value = jnp.where(u >= offset, jnp.float32(a) + (u - offset), value)
    return value


def sample_scalings(key: Array, shift: Optional[str]) -> Array:
    """Per-episode factors [3] = (power, density, friction) relative to Packer et al.'s D values.

    None -> ones. "R"/"E" -> value ~ U(range) / D for each parameter independently, e.g. power
    U[0.7, 1.1] / 0.9 in [0.778, 1.222]; density U[750, 1250] / 1000; friction U[0.5, 1.1] / 0.8.
    """
    if shift is None:
        return jnp.ones((3,), jnp.float32)
    if shift not in SHIFT_RANGES:
        raise ValueError(f"unknown shift {shift!r}; expected one of {SHIFTS}")
    keys = jax.random.split(key, 3)
    vals = [_sample_union(k, SHIFT_RANGES[shift][n]) / NOMINAL[n]
            for k, n in zip(keys, SCALING_NAMES)]
    return jnp.stack(vals).astype(jnp.float32)


def scaled_model_fields(base: Dict[str, np.ndarray], scalings, xp=jnp) -> Dict[str, object]:
    """Model fields after applying factors (power, density, friction) [3].

    power multiplies ``actuator_gear`` (motor torque per unit control); density multiplies
    ``body_mass`` and ``body_inertia`` (same geometry, denser material); friction multiplies
    ``geom_friction`` of every geom (floor included; MuJoCo takes the max of the pair, so the
    contact coefficient scales by the factor; condim 3 only uses the sliding column).
    """
    s = xp.asarray(scalings)
    return {
        "actuator_gear": base["actuator_gear"] * s[0],
        "body_mass": base["body_mass"] * s[1],
        "body_inertia": base["body_inertia"] * s[1],
        "geom_friction": base["geom_friction"] * s[2],
    }


SCALED_FIELDS = ("actuator_gear", "body_mass", "body_inertia", "geom_friction")


# --------------------------------------------------------------------------- reset / reward
def sample_initial(key: Array, config: HalfCheetahConfig,
                   dtype=jnp.float32) -> Tuple[Array, Array, Array]:
    """HalfCheetah-v5 reset noise + shift sample: key -> (qpos [9], qvel [9], scalings [3]).

    qpos = qpos0 (zeros) + U(-s, s), qvel = s * N(0, 1), s = ``reset_noise_scale`` (0.1);
    drawn in ``dtype`` (float64 under x64 for the portable rollouts of ``cpu``).
    """
    k_pos, k_vel, k_shift = jax.random.split(key, 3)
    s = config.reset_noise_scale
    qpos = jax.random.uniform(k_pos, (NQ,), dtype, -s, s)
    qvel = s * jax.random.normal(k_vel, (NV,), dtype)
    return qpos, qvel, sample_scalings(k_shift, config.shift)


def reward_terms(x_before, x_after, clipped_actions, config: HalfCheetahConfig, xp=jnp):
    """HalfCheetah-v5 reward: (reward, x_velocity, forward_reward, ctrl_cost).

    x_velocity = (x_after - x_before) / dt; reward = w_f * x_velocity - w_c * sum(a^2), with
    the sum over all 6 (clipped) actions. Shapes: x [...], actions [..., 2, 3].
    """
    x_velocity = (x_after - x_before) / config.dt
    forward = config.forward_reward_weight * x_velocity
    ctrl_cost = config.ctrl_cost_weight * xp.sum(xp.square(clipped_actions), axis=(-2, -1))
    return forward - ctrl_cost, x_velocity, forward, ctrl_cost
