"""Predator-prey (``simple_tag``) with 3 learning predators and 1 fixed-policy prey.

World (original MPE / OMAR / mpe2 agree): agents = 3 adversaries (size 0.075, accel 3,
max_speed 1.0) then 1 prey (size 0.05, accel 4, max_speed 1.3), all colliding; 2 obstacle
landmarks (size 0.2, collide, immovable). Agents spawn U[-1, 1]^2, obstacles U[-0.9, 0.9]^2.

Predator observation (16) = [v_i, p_i, obstacles - p_i (2x2), other agents - p_i (3x2, world
order without i), prey velocity (2)]. Prey observation (14) = the same without velocities.

Predator reward (shared by all predators):
  ``+10 * #{(prey, predator) pairs colliding}``
  ``- 0.1 * sum over predators of the distance to the nearest prey``  (``reward_shaping``)
OMAR's ``simple_tag.py`` has ``shape = True`` (shaping on, our default); the original MPE and
mpe2 have ``shape = False`` (``reward_shaping=False`` reproduces them).

The prey acts through ``prey_params`` (an MLP, see ``prey.py``) or, when None, the scripted
flee rule of ``prey.scripted_prey_action``. Score = predator 0's reward.
"""
from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from dom2_jax.envs.mpe import base, core, prey

Array = jax.Array

COLLISION_REWARD = 10.0
SHAPING = 0.1


class TagEnv(prey.PredatorPreyMixin, base.MPEEnv):
    """simple_tag: obs [3, 16], actions [3, 2]; prey driven by a fixed policy."""

    name = "mpe_tag"
    default_v_min = 0.4

    def __init__(self, prey_params: Optional[Any] = None, reward_shaping: bool = True,
                 num_adversaries: int = 3, num_good: int = 1, num_obstacles: int = 2,
                 **kwargs):
        self.n_adv, self.n_good = int(num_adversaries), int(num_good)
        self.n_obst = int(num_obstacles)
        if self.n_adv < 1 or self.n_good < 1 or self.n_obst < 0:
            raise ValueError("tag needs num_adversaries >= 1, num_good >= 1, num_obstacles >= 0")
        agents = [dict(name=f"adversary_{i}", size=0.075, accel=3.0, max_speed=1.0,
                       color=(0.85, 0.35, 0.35)) for i in range(self.n_adv)]
        agents += [dict(name=f"agent_{i}", size=0.05, accel=4.0, max_speed=1.3,
                        color=(0.35, 0.85, 0.35)) for i in range(self.n_good)]
        landmarks = [dict(name=f"landmark_{i}", size=0.2, collide=True,
                          color=(0.25, 0.25, 0.25)) for i in range(self.n_obst)]
        spec = core.make_world_spec(agents, landmarks)
        n = len(agents)
        self.is_adv = np.arange(n) < self.n_adv
        self.spawn_half_width = np.asarray([1.0] * n + [0.9] * self.n_obst, np.float32)
        self.reward_shaping = bool(reward_shaping)
        self._landmarks = np.arange(n, n + self.n_obst)
        self._others = base.others_index(n)
        pred_dim = 4 + 2 * self.n_obst + 2 * (n - 1) + 2 * self.n_good
        self.prey_obs_dim = 4 + 2 * self.n_obst + 2 * (n - 1) + 2 * (self.n_good - 1)
        super().__init__(spec, learner_idx=range(self.n_adv),
                         agent_names=[a["name"] for a in agents[: self.n_adv]],
                         obs_dim=pred_dim, **kwargs)
        self.prey_params = (None if prey_params is None else
                            prey.validate_prey_params(prey_params, self.prey_obs_dim, self.name))

    def _obs(self, p_pos, p_vel, idx):
        """[v_i, p_i, obstacles - p_i, others - p_i, velocities of the other prey] for the
        agents ``idx`` (all predators or all prey): [len(idx), dim]."""
        idx = np.asarray(idx)
        k = len(idx)
        others = self._others[idx]                                          # [k, n-1]
        goods = np.asarray([[j for j in self._others[i] if not self.is_adv[j]] for i in idx],
                           np.int32).reshape(k, -1)                         # [k, g]
        own = p_pos[idx]
        lm = (p_pos[self._landmarks][None] - own[:, None]).reshape(k, -1)
        rel = (p_pos[others] - own[:, None]).reshape(k, -1)
        vel = p_vel[goods].reshape(k, -1)
        return jnp.concatenate([p_vel[idx], own, lm, rel, vel], axis=-1)

    # _learner_obs / prey_obs / _scripted_actions: prey.PredatorPreyMixin

    def _learner_reward(self, p_pos, p_vel):
        adv, good = p_pos[: self.n_adv], p_pos[self.n_adv: self.spec.n_agents]
        size = self.spec.size
        hits = core.collisions(good, size[self.n_adv: self.spec.n_agents],
                               adv, size[: self.n_adv]).sum()
        rew = COLLISION_REWARD * hits.astype(core.float_dtype())
        if self.reward_shaping:
            nearest = core.norm(core.pairwise_delta(adv, good)).min(axis=1)       # [n_adv]
            rew = rew - SHAPING * nearest.sum()
        return jnp.full((self.num_agents,), rew, core.float_dtype())

    def score(self, reward: Array) -> Array:
        """Predator 0's reward (OMAR's and the paper's tag score)."""
        return reward[..., 0]
