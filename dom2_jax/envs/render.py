"""Render MPE episodes to animated GIFs (matplotlib Agg for frames, PIL for the GIF).

    out = rollout(env, policy_fn, params, key, 1, return_states=True)
    render_mpe_episode(env, out, "episode.gif")            # episode 0 of a rollout output
    render_mpe_episode(env, states, "episode.gif")         # MPEState with a leading time axis

Entities are drawn as discs with their true radii and the MPE colours; agents are
semi-transparent and outlined, learning agents carry their index. The view is the square
[-r, r]^2 with r = max(1, largest |coordinate| of the episode) * 1.05, fixed for the episode.
"""
from __future__ import annotations

import os
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Circle


def _positions(states: Any) -> np.ndarray:
    """Accepts an MPEState with a time axis, a list of MPEStates, a rollout output dict
    (first episode; its ``initial_state`` is prepended) or an array [T, n, 2]."""
    if isinstance(states, dict):
        if "states" not in states:
            raise ValueError("a rollout output needs return_states=True to be rendered")
        pos = np.asarray(states["states"].p_pos)
        init = np.asarray(states["initial_state"].p_pos)
        if pos.ndim == 4:                       # [episodes, T, n, 2]: take episode 0
            pos, init = pos[0], init[0]
        return np.concatenate([init[None], pos], axis=0)
    if isinstance(states, (list, tuple)):
        return np.stack([np.asarray(s.p_pos) for s in states])
    pos = np.asarray(getattr(states, "p_pos", states))
    if pos.ndim == 2:
        pos = pos[None]
    if pos.ndim != 3 or pos.shape[-1] != 2:
        raise ValueError(f"expected positions of shape [T, n_entities, 2], got {pos.shape}")
    return pos


def render_frames(env, states: Any, size_px: int = 320) -> list:
    """RGB frames (uint8 [size_px, size_px, 3]) of an MPE episode."""
    matplotlib.use("Agg", force=False)

    spec = env.spec
    pos = _positions(states)
    if pos.shape[1] != spec.n_entities:
        raise ValueError(f"{env.name} has {spec.n_entities} entities, states have {pos.shape[1]}")
    r = max(1.0, float(np.abs(pos).max())) * 1.05
    dpi = 80
    fig = plt.figure(figsize=(size_px / dpi, size_px / dpi), dpi=dpi)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_xlim(-r, r)
    ax.set_ylim(-r, r)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.add_patch(plt.Rectangle((-1, -1), 2, 2, fill=False, ls=":", lw=0.8, color="0.6"))
    # landmarks first (largest at the bottom; non-colliding ones, e.g. forests, translucent),
    # then agents
    landmarks = sorted(range(spec.n_agents, spec.n_entities), key=lambda e: -spec.size[e])
    order = landmarks + list(range(spec.n_agents))
    learners = {int(i): k for k, i in enumerate(getattr(env, "learner_idx", []))}
    discs, labels = {}, {}
    for e in order:
        is_agent = e < spec.n_agents
        discs[e] = ax.add_patch(Circle(pos[0, e], float(spec.size[e]), color=spec.color[e],
                                       alpha=0.75 if is_agent else
                                       (1.0 if spec.collide[e] else 0.6),
                                       ec="k" if is_agent else "none", lw=0.6))
        if e in learners:
            labels[e] = ax.text(*pos[0, e], str(learners[e]), ha="center", va="center",
                                fontsize=7)
    title = ax.text(-r * 0.97, r * 0.92, "", fontsize=8)
    frames = []
    for t in range(pos.shape[0]):
        for e, disc in discs.items():
            disc.center = pos[t, e]
        for e, label in labels.items():
            label.set_position(pos[t, e])
        title.set_text(f"{env.name}  t={t}")
        fig.canvas.draw()
        frames.append(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy())
    plt.close(fig)
    return frames


def render_mpe_episode(env, states: Any, path: str, fps: int = 10,
                       size_px: int = 320) -> str:
    """Writes an animated GIF of an MPE episode to ``path`` and returns the path.

    Args:
      env: the MPE env the states come from (for sizes, colours, names).
      states: MPEState with a leading time axis [T, ...], a list of MPEStates, a rollout
        output made with ``return_states=True`` (episode 0), or positions [T, n, 2].
      fps: frames per second of the GIF.
    """
    from PIL import Image

    frames = render_frames(env, states, size_px)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:],
                   duration=int(1000 / fps), loop=0)
    return path


__all__ = ["render_frames", "render_mpe_episode"]
