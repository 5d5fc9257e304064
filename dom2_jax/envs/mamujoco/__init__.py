"""MAMuJoCo HalfCheetah 2x3: MJX env (``halfcheetah``), C-MuJoCo batch path (``cpu``),
shared layout / shifts / reward (``common``) and GIF / frame rendering (``render``).

    from dom2_jax.envs import make
    env = make("mamujoco_halfcheetah_2x3", obsk=0, shift=None)      # MJX, jittable
    from dom2_jax.envs.mamujoco import make_batch_env
    batch = make_batch_env(64, backend="auto")                        # numpy batch API
"""
from __future__ import annotations

import importlib

_LAZY = {
    "HalfCheetah2x3": "halfcheetah", "HalfCheetahState": "halfcheetah",
    "make_halfcheetah_2x3": "halfcheetah",
    "HalfCheetahCPU": "cpu", "HalfCheetahMJXBatch": "cpu", "make_batch_env": "cpu",
    "select_backend": "cpu",
    "render_gif": "render", "render_frames": "render", "FrameRenderer": "render",
    "HalfCheetahConfig": "common", "SHIFT_RANGES": "common", "NOMINAL": "common",
}


def __getattr__(name):
    if name in _LAZY:
        module = importlib.import_module(f"dom2_jax.envs.mamujoco.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(name)


__all__ = sorted(_LAZY)
