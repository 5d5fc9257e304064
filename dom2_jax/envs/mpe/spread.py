"""Cooperative navigation (``simple_spread``) as edited by OMAR (Pan et al., 2022).

Rules, checked against ``multiagent-particle-envs/multiagent/scenarios/simple_spread.py`` of
github.com/ling-pan/OMAR:
  * N agents (default 3; size 0.15, collide, silent, accel None -> 5.0, no speed limit)
    and N landmarks (no collision, immovable); all positions U[-1, 1]^2 (boundary 1 for
    N <= 3; OMAR uses 2 for 4..10 agents, reproduced here).
  * reward of agent i = sum over landmarks l of min(1 / min_a |p_a - p_l|, 10)
                       - 5 * #{other agents j : |p_i - p_j| < r_i + r_j}.
    (mpe2 instead gives -min distance and -1 per collision mixed with local_ratio.)
  * obs of agent i (6N dims, 18 for N=3) = [v_i, p_i, (p_l - p_i) for every landmark,
    (p_j - p_i) for every other agent, c_j for every other agent (2 zeros each: silent)].
  * rewards are not shared; the reported score is the mean over agents (``Env.score``).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from dom2_jax.envs.mpe import base, core

Array = jax.Array

AGENT_SIZE = 0.15
COVER_CAP = 10.0
COLLISION_PENALTY = 5.0
DIM_C = 2


class SpreadEnv(base.MPEEnv):
    """OMAR's cooperative navigation. obs [N, 6N], actions [N, 2]."""

    name = "mpe_spread"
    default_v_min = 0.3

    def __init__(self, num_agents: int = 3, **kwargs):
        n = int(num_agents)
        if not 1 <= n <= 10:
            raise ValueError(f"num_agents must be in 1..10 for spread, got {num_agents}")
        agents = [dict(name=f"agent_{i}", size=AGENT_SIZE, collide=True,
                       color=(0.35, 0.35, 0.85)) for i in range(n)]
        landmarks = [dict(name=f"landmark_{i}", collide=False, color=(0.25, 0.25, 0.25))
                     for i in range(n)]
        spec = core.make_world_spec(agents, landmarks)
        self.boundary = 1.0 if n <= 3 else 2.0
        self.spawn_half_width = np.full(2 * n, self.boundary, np.float32)
        self._others = base.others_index(n)
        super().__init__(spec, learner_idx=range(n), agent_names=[a["name"] for a in agents],
                         obs_dim=4 + 2 * n + 2 * (n - 1) + DIM_C * (n - 1), **kwargs)

    def _learner_obs(self, p_pos, p_vel):
        n = self.num_agents
        pos, vel, lm = p_pos[:n], p_vel[:n], p_pos[n:]
        lm_rel = (lm[None, :, :] - pos[:, None, :]).reshape(n, -1)               # [n, 2n]
        other_rel = (pos[self._others] - pos[:, None, :]).reshape(n, -1)         # [n, 2(n-1)]
        comm = jnp.zeros((n, DIM_C * (n - 1)), core.float_dtype())
        return jnp.concatenate([vel, pos, lm_rel, other_rel, comm], axis=-1)

    def _learner_reward(self, p_pos, p_vel):
        n = self.num_agents
        pos, lm = p_pos[:n], p_pos[n:]
        min_dist = core.norm(core.pairwise_delta(pos, lm)).min(axis=0)           # [n_landmarks]
        cover = jnp.sum(jnp.minimum(1.0 / min_dist, COVER_CAP))
        size = self.spec.size[:n]
        hit = core.collisions(pos, size, pos, size) & ~np.eye(n, dtype=bool)       # [n, n]
        return cover - COLLISION_PENALTY * hit.sum(axis=1).astype(core.float_dtype())
