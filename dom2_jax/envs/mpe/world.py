"""World (predators, prey, food and forests) in two variants.

``variant="omar"`` (default) follows ``multiagent/scenarios/simple_world.py`` of OMAR
(github.com/ling-pan/OMAR), the code behind the offline-MARL "World" numbers:
  * 3 learning predators (size 0.075, accel 3, max_speed 1.0) and 1 fixed-policy prey
    (size 0.045, accel 4, max_speed 1.3). (``make_world`` has defaults 4/2 but immediately
    overrides them with ``num_adversaries, num_good_agents = 3, 1``.)
  * landmarks, in order: 1 obstacle (size 0.2, collides), 2 food (0.03), 2 forests (0.3);
    food and forests do not collide. Agents spawn U[-1,1]^2, landmarks U[-0.9,0.9]^2.
  * every agent has ``leader = True`` and is silent, so the forest rule never hides anyone
    and there is no communication in the observation.
  * obs (24 for a predator, 22 for the prey) = [v_i, p_i, landmarks - p_i (5x2),
    other agents - p_i (3x2), velocity of the other non-predators (1x2 for a predator),
    in_forest flags (2, +1 inside forest f else -1)].
  * predator reward (shared): ``+5 * #{(prey, predator) colliding pairs}
    - 0.1 * sum over predators of the distance to their nearest prey``.

``variant="comm"`` is ``simple_world_comm`` of the original MPE / mpe2:
  * 4 learning predators (agent 0 is the leader) and 2 fixed-policy prey; same landmarks.
  * forests hide: agent i sees agent j iff they share a forest, or neither is in any forest,
    or i is the leader; hidden agents appear as zeros (position and velocity).
  * predator obs (34) = [v_i, p_i, landmarks (10), other agents (5x2), prey velocities
    (2x2), in_forest (2), leader's comm channel (4)]; prey obs (28) = [v, p, landmarks,
    others, in_forest, other prey velocity (2)].
  * predator i reward: ``+5 * #{(prey, predator) colliding pairs}
    - 0.1 * distance from predator i to its nearest prey`` (mpe2's formula).
  * leader communication: the leader's comm action is NOT part of the action space (all
    learners have 2-D physical actions); its channel is always zero, so the 4 comm entries
    of every predator observation are zeros. This keeps act_dim = 2 for every agent and the
    layout of the original observation; a learned comm channel would be new behaviour that
    neither OMAR nor the DOM2 paper use.

Prey: ``prey_params`` (MLP, see ``prey.py``; shared by all prey) or the scripted flee rule.
Score = predator 0's reward.
"""
from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from dom2_jax.envs.mpe import base, core, prey

Array = jax.Array

VARIANTS = ("omar", "comm")
COLLISION_REWARD = 5.0
SHAPING = 0.1
DIM_C = 4
N_OBSTACLES, N_FOOD, N_FORESTS = 1, 2, 2


class WorldEnv(prey.PredatorPreyMixin, base.MPEEnv):
    """World scenario; see the module docstring for the two variants."""

    name = "mpe_world"
    default_v_min = 0.5

    def __init__(self, variant: str = "omar", prey_params: Optional[Any] = None, **kwargs):
        if variant not in VARIANTS:
            raise ValueError(f"unknown world variant {variant!r}; expected one of {VARIANTS}")
        self.variant = variant
        self.n_adv, self.n_good = (3, 1) if variant == "omar" else (4, 2)
        n = self.n_adv + self.n_good
        agents = []
        for i in range(n):
            adv = i < self.n_adv
            if variant == "comm":
                name = ("leadadversary_0" if i == 0 else
                        f"adversary_{i - 1}" if adv else f"agent_{i - self.n_adv}")
            else:
                name = f"adversary_{i}" if adv else f"agent_{i - self.n_adv}"
            color = np.array([0.95, 0.45, 0.45] if adv else [0.45, 0.95, 0.45])
            if variant == "omar" or i == 0:          # leaders are drawn darker
                color = color - 0.3
            agents.append(dict(name=name, size=0.075 if adv else 0.045,
                               accel=3.0 if adv else 4.0, max_speed=1.0 if adv else 1.3,
                               color=tuple(color)))
        landmarks = ([dict(name="landmark_0", size=0.2, collide=True)]
                     + [dict(name=f"food_{i}", size=0.03, collide=False,
                             color=(0.15, 0.15, 0.65)) for i in range(N_FOOD)]
                     + [dict(name=f"forest_{i}", size=0.3, collide=False,
                             color=(0.6, 0.9, 0.6)) for i in range(N_FORESTS)])
        spec = core.make_world_spec(agents, landmarks)
        self.is_adv = np.arange(n) < self.n_adv
        self.spawn_half_width = np.asarray([1.0] * n + [0.9] * spec.n_landmarks, np.float32)
        self.leader = (np.ones(n, bool) if variant == "omar" else np.arange(n) == 0)
        self.forest_idx = np.arange(n + N_OBSTACLES + N_FOOD, spec.n_entities)
        self.food_idx = np.arange(n + N_OBSTACLES, n + N_OBSTACLES + N_FOOD)
        self._landmarks = list(range(n, spec.n_entities))
        self._others = base.others_index(n)
        n_lm = len(self._landmarks)
        if variant == "omar":
            pred_dim = 4 + 2 * n_lm + 2 * (n - 1) + 2 * self.n_good + N_FORESTS
            self.prey_obs_dim = 4 + 2 * n_lm + 2 * (n - 1) + 2 * (self.n_good - 1) + N_FORESTS
        else:
            pred_dim = 4 + 2 * n_lm + 2 * (n - 1) + 2 * self.n_good + N_FORESTS + DIM_C
            self.prey_obs_dim = 4 + 2 * n_lm + 2 * (n - 1) + N_FORESTS + 2 * (self.n_good - 1)
        super().__init__(spec, learner_idx=range(self.n_adv),
                         agent_names=[a["name"] for a in agents[: self.n_adv]],
                         obs_dim=pred_dim, **kwargs)
        self.prey_params = (None if prey_params is None else
                            prey.validate_prey_params(prey_params, self.prey_obs_dim, self.name))

    # ----------------------------------------------------------------- dynamics hooks
    def in_forest(self, p_pos: Array) -> Array:
        """bool [n_world_agents, n_forests]: agent collides with (is inside) forest f."""
        n = self.spec.n_agents
        return core.collisions(p_pos[:n], self.spec.size[:n],
                               p_pos[self.forest_idx], self.spec.size[self.forest_idx])

    def _visibility(self, p_pos: Array) -> Array:
        """bool [n, n]: agent i sees agent j (the MPE's forest rule)."""
        inf = self.in_forest(p_pos)
        share = jnp.any(inf[:, None, :] & inf[None, :, :], axis=-1)
        outside = ~jnp.any(inf, axis=-1)
        return share | (outside[:, None] & outside[None, :]) | self.leader[:, None]

    def _obs(self, p_pos, p_vel, idx):
        """Observations of the agents ``idx`` (all predators or all prey): [len(idx), dim]."""
        idx = np.asarray(idx)
        others = self._others[idx]                                          # [k, n-1]
        goods = np.asarray([[j for j in self._others[i] if not self.is_adv[j]] for i in idx],
                           np.int32).reshape(len(idx), -1)                  # [k, g]
        own = p_pos[idx]                                                    # [k, 2]
        visible = self._visibility(p_pos)[idx]                              # [k, n]
        vis_others = jnp.take_along_axis(visible, others, axis=1)[..., None]
        vis_goods = jnp.take_along_axis(visible, goods, axis=1)[..., None]
        lm = p_pos[np.asarray(self._landmarks)][None] - own[:, None]        # [k, 5, 2]
        rel = jnp.where(vis_others, p_pos[others] - own[:, None], 0.0)      # [k, n-1, 2]
        vel = jnp.where(vis_goods, p_vel[goods], 0.0)                       # [k, g, 2]
        flags = jnp.where(self.in_forest(p_pos)[idx], 1.0, -1.0)            # [k, 2]
        k = len(idx)
        head = [p_vel[idx], own, lm.reshape(k, -1), rel.reshape(k, -1)]
        if self.variant == "omar":
            tail = [vel.reshape(k, -1), flags]
        elif self.is_adv[idx[0]]:
            tail = [vel.reshape(k, -1), flags, jnp.zeros((k, DIM_C), core.float_dtype())]
        else:
            tail = [flags, vel.reshape(k, -1)]
        return jnp.concatenate(head + tail, axis=-1).astype(core.float_dtype())

    # _learner_obs / prey_obs / _scripted_actions: prey.PredatorPreyMixin

    def _learner_reward(self, p_pos, p_vel):
        n = self.spec.n_agents
        adv, good = p_pos[: self.n_adv], p_pos[self.n_adv: n]
        size = self.spec.size
        hits = core.collisions(good, size[self.n_adv: n], adv, size[: self.n_adv]).sum()
        nearest = core.norm(core.pairwise_delta(adv, good)).min(axis=1)           # [n_adv]
        if self.variant == "omar":
            shaping = jnp.full((self.n_adv,), nearest.sum())
        else:
            shaping = nearest
        return COLLISION_REWARD * hits.astype(core.float_dtype()) - SHAPING * shaping

    def score(self, reward: Array) -> Array:
        """Predator 0's reward (OMAR's and the paper's world score)."""
        return reward[..., 0]
