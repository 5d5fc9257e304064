"""MLPs, critics and deterministic actors shared by DOM2 and the baselines."""
from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


class MLP(nn.Module):
    """Dense layers with an activation between them (none after the last)."""

    features: Sequence[int]
    activation: Callable = nn.relu
    final_activation: Callable | None = None

    @nn.compact
    def __call__(self, x):
        for i, f in enumerate(self.features):
            x = nn.Dense(f)(x)
            if i < len(self.features) - 1:
                x = self.activation(x)
        return self.final_activation(x) if self.final_activation is not None else x


class QNetwork(nn.Module):
    """Q(o, a) -> [...] from concat(o, a)."""

    hidden_dims: Sequence[int] = (256, 256, 256)

    @nn.compact
    def __call__(self, obs, actions):
        x = jnp.concatenate([obs, actions], axis=-1)
        return MLP(tuple(self.hidden_dims) + (1,))(x)[..., 0]


class DoubleCritic(nn.Module):
    """Two independent Q networks (clipped double-Q); returns [2, ...]."""

    hidden_dims: Sequence[int] = (256, 256, 256)

    @nn.compact
    def __call__(self, obs, actions):
        q1 = QNetwork(self.hidden_dims, name="q1")(obs, actions)
        q2 = QNetwork(self.hidden_dims, name="q2")(obs, actions)
        return jnp.stack([q1, q2])


class DeterministicActor(nn.Module):
    """a = tanh(MLP(o)) in [-1, 1]^act_dim (TD3-style actors of the baselines)."""

    act_dim: int
    hidden_dims: Sequence[int] = (256, 256)

    @nn.compact
    def __call__(self, obs):
        return MLP(tuple(self.hidden_dims) + (self.act_dim,), final_activation=jnp.tanh)(obs)
