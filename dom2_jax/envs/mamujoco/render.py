"""Render HalfCheetah episodes (sequences of qpos) to frames or a GIF with ``mujoco.Renderer``.

    out = rollout(env, policy_fn, params, key, 1, return_states=True)
    render_gif(out["states"].qpos[0], "episode.gif")   # qpos [T, 9]

Needs an OpenGL backend: MuJoCo picks it from ``MUJOCO_GL`` when ``mujoco`` is first imported
(``egl`` for headless GPUs/Mesa, ``osmesa`` for software). If rendering fails in this process
and ``MUJOCO_GL`` is unset, ``render_gif`` retries in a subprocess with ``MUJOCO_GL=egl`` and
then ``osmesa``; if nothing works it warns with the reason and returns None (no exception), so
callers such as evaluation scripts can skip rendering gracefully.

CLI (used for that retry): ``python -m dom2_jax.envs.mamujoco.render QPOS.npy OUT.gif``.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import warnings
from typing import Optional

import imageio.v3 as iio
import mujoco
import numpy as np

from dom2_jax.envs.mamujoco import common

DEFAULT_FPS = 20  # 1 / dt with frame_skip 5


class RenderingUnavailable(RuntimeError):
    """No working OpenGL backend for ``mujoco.Renderer`` in this process."""


def render_frames(qpos, *, width: int = 320, height: int = 240, camera: str = "track"
                  ) -> np.ndarray:
    """qpos [T, 9] -> uint8 frames [T, height, width, 3] (kinematics only: mj_forward).

    Raises ``RenderingUnavailable`` (with the underlying error) when no GL context works.
    """
    qpos = np.asarray(qpos, np.float64)
    if qpos.ndim != 2 or qpos.shape[1] != common.NQ:
        raise ValueError(f"qpos must have shape [T, {common.NQ}], got {qpos.shape}")
    model = common.load_model()
    model.vis.global_.offwidth = max(model.vis.global_.offwidth, width)
    model.vis.global_.offheight = max(model.vis.global_.offheight, height)
    data = mujoco.MjData(model)
    try:
        with warnings.catch_warnings():  # glfw warns (no DISPLAY) before failing
            warnings.simplefilter("ignore")
            renderer = mujoco.Renderer(model, height, width)
    except Exception as err:  # mujoco raises FatalError / RuntimeError / OSError variants
        raise RenderingUnavailable(
            f"mujoco.Renderer could not create an OpenGL context "
            f"(MUJOCO_GL={os.environ.get('MUJOCO_GL', '<unset>')}): {err}") from err
    frames = []
    try:
        for q in qpos:
            data.qpos[:] = q
            mujoco.mj_forward(model, data)
            renderer.update_scene(data, camera=camera)
            frames.append(renderer.render().copy())
    finally:
        renderer.close()
    return np.stack(frames)


def _write_gif(frames: np.ndarray, path: str, fps: float):
    iio.imwrite(path, frames, extension=".gif", duration=int(round(1000.0 / fps)), loop=0)


def render_gif(qpos, path: str, *, fps: float = DEFAULT_FPS, width: int = 320,
               height: int = 240, camera: str = "track") -> Optional[str]:
    """Writes the episode qpos [T, 9] as a GIF at ``path``; returns ``path``, or None (after
    a warning that says why) when no OpenGL backend is available."""
    try:
        frames = render_frames(qpos, width=width, height=height, camera=camera)
    except RenderingUnavailable as err:
        if os.environ.get("MUJOCO_GL"):
            warnings.warn(f"rendering skipped: {err}")
            return None
        return _render_in_subprocess(qpos, path, fps, width, height, camera, first_error=err)
    _write_gif(frames, path, fps)
    return path


def _render_in_subprocess(qpos, path, fps, width, height, camera, first_error):
    errors = [f"in-process: {first_error}"]
    with tempfile.TemporaryDirectory() as tmp:
        qfile = os.path.join(tmp, "qpos.npy")
        np.save(qfile, np.asarray(qpos, np.float64))
        for backend in ("egl", "osmesa"):
            env = dict(os.environ, MUJOCO_GL=backend)
            if backend == "osmesa":
                env.setdefault("PYOPENGL_PLATFORM", "osmesa")
            cmd = [sys.executable, "-m", "dom2_jax.envs.mamujoco.render", qfile, path,
                   "--fps", str(fps), "--width", str(width), "--height", str(height),
                   "--camera", camera]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
            if proc.returncode == 0 and os.path.exists(path):
                return path
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
            errors.append(f"MUJOCO_GL={backend}: {tail[0]}")
    warnings.warn("rendering skipped: no OpenGL backend works for mujoco.Renderer "
                  "(set MUJOCO_GL=egl or osmesa and install libEGL / libOSMesa); "
                  + "; ".join(errors))
    return None


def _main(argv=None):
    parser = argparse.ArgumentParser(description="Render a HalfCheetah qpos sequence to GIF.")
    parser.add_argument("qpos", help=".npy file with qpos [T, 9]")
    parser.add_argument("out", help="output .gif path")
    parser.add_argument("--fps", type=float, default=DEFAULT_FPS)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--camera", default="track")
    args = parser.parse_args(argv)
    frames = render_frames(np.load(args.qpos), width=args.width, height=args.height,
                           camera=args.camera)
    _write_gif(frames, args.out, args.fps)


if __name__ == "__main__":
    _main()
