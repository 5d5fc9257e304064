"""Fixed prey policies for tag and world: a small MLP (pytree params) or a scripted rule.

OMAR drives the prey of tag/world with a pre-trained DDPG actor (maddpg-pytorch
``MLPNetwork``: BatchNorm on the input (eval mode), two ReLU hidden layers of 64, tanh out)
that is not published. ``prey_policy_apply`` evaluates any such MLP from a params pytree;
``init_prey_params`` makes one (random) for tests; ``scripted_prey_action`` is the
parameter-free default.

Params pytree::

    {"layers": [{"w": [in, h1], "b": [h1]}, ..., {"w": [hk, 2], "b": [2]}],
     "obs_norm": {"mean": [in], "var": [in], "scale": [in], "bias": [in]}   # optional
    }

Hidden layers use ReLU, the last layer tanh; ``obs_norm`` applies
``(x - mean) / sqrt(var + 1e-5) * scale + bias`` first (BatchNorm1d in eval mode, so a
torch checkpoint converts by copying ``running_mean``, ``running_var``, ``weight``,
``bias`` and each ``fcK.weight.T`` / ``fcK.bias``).
"""
from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp

Array = jax.Array

BN_EPS = 1e-5


def prey_policy_apply(params: Any, obs: Array) -> Array:
    """MLP prey policy: obs [..., obs_dim] -> actions [..., 2] in [-1, 1]."""
    x = obs
    norm = params.get("obs_norm") if isinstance(params, dict) else None
    if norm is not None:
        x = (x - norm["mean"]) / jnp.sqrt(norm["var"] + BN_EPS) * norm["scale"] + norm["bias"]
    layers = params["layers"]
    for i, layer in enumerate(layers):
        x = x @ layer["w"] + layer["b"]
        x = jnp.tanh(x) if i == len(layers) - 1 else jax.nn.relu(x)
    return x


def prey_params_input_dim(params: Any) -> int:
    """Input dimension expected by a prey params pytree."""
    return int(params["layers"][0]["w"].shape[0])


def validate_prey_params(params: Any, obs_dim: int, where: str) -> Any:
    """Checks structure and shapes; returns the pytree with float32 jnp leaves."""
    if not isinstance(params, dict) or "layers" not in params or not params["layers"]:
        raise ValueError(f"{where}: prey_params must be a dict with a non-empty 'layers' list "
                         "of {'w', 'b'} dicts (see dom2_jax.envs.mpe.prey)")
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), params)
    if prey_params_input_dim(params) != obs_dim:
        raise ValueError(f"{where}: prey_params take obs of dim {prey_params_input_dim(params)}"
                         f", but the prey observes {obs_dim} dims")
    if params["layers"][-1]["w"].shape[-1] != 2:
        raise ValueError(f"{where}: prey_params must output 2 actions, got "
                         f"{params['layers'][-1]['w'].shape[-1]}")
    return params


def init_prey_params(key: Array, obs_dim: int, hidden: Sequence[int] = (64, 64)) -> dict:
    """Random MLP params (PyTorch-Linear-like uniform init; last layer U[-3e-3, 3e-3])."""
    return _init_prey_params(key, int(obs_dim), tuple(int(h) for h in hidden))


@functools.partial(jax.jit, static_argnums=(1, 2))
def _init_prey_params(key, obs_dim, hidden):
    dims = [obs_dim, *hidden, 2]
    layers = []
    keys = jax.random.split(key, len(dims) - 1)
    for i, (k, din, dout) in enumerate(zip(keys, dims[:-1], dims[1:])):
        kw, kb = jax.random.split(k)
        bound = 3e-3 if i == len(dims) - 2 else 1.0 / jnp.sqrt(din)
        layers.append({"w": jax.random.uniform(kw, (din, dout), jnp.float32, -bound, bound),
                       "b": jax.random.uniform(kb, (dout,), jnp.float32, -bound, bound)})
    return {"layers": layers}


def scripted_prey_action(prey_pos: Array, predator_pos: Array, edge: float = 0.7,
                         wall_gain: float = 3.0) -> Array:
    """Scripted prey: flee the predators and stay inside the arena.

    Args:
      prey_pos: [2]; predator_pos: [n_pred, 2].
    Returns:
      action [2] of unit length (full thrust) in [-1, 1]^2.

    Direction = sum over predators of (p - p_j) / |p - p_j|^2 (unit vectors weighted by
    1/distance, so the nearest predator dominates) plus, per coordinate beyond ``edge``
    (the MPE penalises the prey from |x| = 0.9 on), a push back toward the centre growing
    linearly to ``wall_gain`` at |x| = 1.
    """
    diff = prey_pos[None, :] - predator_pos
    d2 = jnp.sum(jnp.square(diff), axis=-1, keepdims=True) + 1e-6
    flee = jnp.sum(diff / d2, axis=0)
    flee = flee / (jnp.linalg.norm(flee) + 1e-6)
    over = jnp.clip((jnp.abs(prey_pos) - edge) / (1.0 - edge), 0.0, None)
    wall = -jnp.sign(prey_pos) * over * wall_gain
    direction = flee + wall
    return direction / (jnp.linalg.norm(direction) + 1e-6)


class PredatorPreyMixin:
    """Shared by tag and world (predators learn, prey are scripted or a fixed network): needs
    ``_obs(p_pos, p_vel, idx)``, ``learner_idx``, ``scripted_idx``, ``n_adv``, ``prey_params``."""

    def _learner_obs(self, p_pos, p_vel):
        return self._obs(p_pos, p_vel, self.learner_idx)

    def prey_obs(self, state) -> jax.Array:
        """Observations [n_prey, prey_obs_dim] of the prey (scripted agents)."""
        return self._obs(state.p_pos, state.p_vel, self.scripted_idx)

    def _scripted_actions(self, state, key):
        if self.prey_params is not None:
            return prey_policy_apply(self.prey_params, self.prey_obs(state))
        pred = state.p_pos[: self.n_adv]
        return jnp.stack([scripted_prey_action(state.p_pos[i], pred) for i in self.scripted_idx])
