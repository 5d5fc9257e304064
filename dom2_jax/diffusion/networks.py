"""Noise (score) networks eps_theta(a_t, obs, t) as pure Flax modules.

``ResidualNoiseNet`` is the paper's noise network (its Fig. 8, after SfBC, Chen et al. 2022): a
Gaussian-Fourier time embedding and an observation embedding form a condition vector that is
injected into every residual block of a U-Net-shaped MLP (down widths, then the mirrored up
widths, each up block concatenating the matching down activation). ``MLPNoiseNet`` is the plain
MLP of Diffusion-QL used for the paper's "MLP noise net" ablation.

Both are called as ``net.apply(params, a_t, obs, t)`` with a_t [..., act_dim], obs [..., obs_dim],
t [...] and return [..., act_dim].
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


class GaussianFourierProjection(nn.Module):
    """[sin(2 pi t W), cos(2 pi t W)] with fixed random W ~ N(0, scale^2) (not trained)."""

    embed_dim: int = 32
    scale: float = 30.0

    @nn.compact
    def __call__(self, t):
        w = self.param("W", nn.initializers.normal(stddev=self.scale), (self.embed_dim // 2,))
        w = jax.lax.stop_gradient(w)
        proj = t[..., None] * w * (2.0 * np.pi)
        return jnp.concatenate([jnp.sin(proj), jnp.cos(proj)], axis=-1)


class SinusoidalEmbedding(nn.Module):
    """Transformer-style sinusoidal embedding of t (Diffusion-QL's time embedding)."""

    dim: int = 16

    @nn.compact
    def __call__(self, t):
        half = self.dim // 2
        freqs = jnp.exp(-np.log(10000.0) * jnp.arange(half) / (half - 1))
        # t lives in [0, 1]; scale to the usual [0, 1000] range of discrete diffusion steps.
        args = (1000.0 * t)[..., None] * freqs
        return jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)


class ResidualBlock(nn.Module):
    """Dense -> +cond -> act -> Dense, plus a (projected) identity skip, then act."""

    features: int

    @nn.compact
    def __call__(self, x, cond):
        h = nn.Dense(self.features)(x) + nn.Dense(self.features)(cond)
        h = nn.silu(h)
        h = nn.Dense(self.features)(h)
        skip = x if x.shape[-1] == self.features else nn.Dense(self.features, use_bias=False)(x)
        return nn.silu(h + skip)


class ResidualNoiseNet(nn.Module):
    """SfBC-style U-Net of residual MLP blocks.

    With ``hidden_dims=(512, 256, 128)`` the widths are 512-256-128 | 128-256-512 (SfBC's).
    """

    act_dim: int
    hidden_dims: Sequence[int] = (512, 256, 128)
    time_embed_dim: int = 32
    time_scale: float = 30.0
    obs_embed_dim: int = 32
    cond_dim: int = 128

    @nn.compact
    def __call__(self, a_t, obs, t):
        t_emb = nn.silu(nn.Dense(self.time_embed_dim)(
            GaussianFourierProjection(self.time_embed_dim, self.time_scale)(t)))
        o_emb = nn.silu(nn.Dense(self.obs_embed_dim)(obs))
        cond = nn.silu(nn.Dense(self.cond_dim)(jnp.concatenate([t_emb, o_emb], axis=-1)))
        h = a_t
        skips = []
        for width in self.hidden_dims:
            h = ResidualBlock(width)(h, cond)
            skips.append(h)
        for width, skip in zip(reversed(self.hidden_dims), reversed(skips)):
            h = ResidualBlock(width)(jnp.concatenate([h, skip], axis=-1), cond)
        return nn.Dense(self.act_dim)(h)


class MLPNoiseNet(nn.Module):
    """Diffusion-QL's MLP: [a_t, obs, emb(t)] -> mish MLP -> eps."""

    act_dim: int
    hidden_dims: Sequence[int] = (256, 256, 256)
    time_embed_dim: int = 16

    @nn.compact
    def __call__(self, a_t, obs, t):
        t_emb = SinusoidalEmbedding(self.time_embed_dim)(t)
        t_emb = nn.Dense(self.time_embed_dim)(jax.nn.mish(nn.Dense(2 * self.time_embed_dim)(t_emb)))
        h = jnp.concatenate([a_t, obs, t_emb], axis=-1)
        for width in self.hidden_dims:
            h = jax.nn.mish(nn.Dense(width)(h))
        return nn.Dense(self.act_dim)(h)


NOISE_NETS = ("residual", "mlp")


def make_noise_net(kind: str, act_dim: int, hidden_dims: Sequence[int] | None = None,
                   **kwargs) -> nn.Module:
    """Builds a noise network by name: "residual" (the paper's) or "mlp" (ablation)."""
    if kind == "residual":
        return ResidualNoiseNet(act_dim=act_dim, hidden_dims=tuple(hidden_dims or (512, 256, 128)),
                                **kwargs)
    if kind == "mlp":
        return MLPNoiseNet(act_dim=act_dim, hidden_dims=tuple(hidden_dims or (256, 256, 256)),
                           **kwargs)
    raise ValueError(f"unknown noise network {kind!r}; expected one of {NOISE_NETS}")
