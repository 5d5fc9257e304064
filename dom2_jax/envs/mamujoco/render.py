"""Render HalfCheetah episodes (sequences of qpos) to frames or a GIF with ``mujoco.Renderer``.

    out = rollout(env, policy_fn, params, key, 1, return_states=True)
    render_gif(out["states"].qpos[0], "episode.gif")   # qpos [T, 9]

    renderer = FrameRenderer()                          # one frame at a time (env.render())
    frame = renderer(qpos_t)                            # qpos [9] -> uint8 [240, 320, 3]

Needs an OpenGL backend: MuJoCo picks it from ``MUJOCO_GL`` when ``mujoco`` is first imported
(``egl`` for headless GPUs/Mesa, ``osmesa`` for software). With ``MUJOCO_GL`` unset on a Linux
host without a display (where MuJoCo's default, GLFW, cannot work), the renderer opens an EGL,
then an OSMesa context itself, in this process (the same MuJoCo calls as ``mujoco.Renderer``,
identical pixels). If that fails too, ``render_gif`` retries in a subprocess with
``MUJOCO_GL=egl`` and then ``osmesa``; if nothing works it warns with the reason and returns
None (no exception), so callers such as evaluation scripts can skip rendering gracefully.

CLI (used for that retry): ``python -m dom2_jax.envs.mamujoco.render QPOS.npy OUT.gif``.
"""
from __future__ import annotations

import argparse
import atexit
import os
import subprocess
import sys
import tempfile
import warnings
import weakref
from typing import Optional

import imageio.v3 as iio
import mujoco
import numpy as np

from dom2_jax.envs.mamujoco import common

DEFAULT_FPS = 20  # 1 / dt with frame_skip 5


class RenderingUnavailable(RuntimeError):
    """No working OpenGL backend for ``mujoco.Renderer`` in this process."""


# Set once an MjrContext could not be made in this process: MuJoCo's GL loader is then left
# half-initialised and a second attempt aborts the whole process (libc++abi "recursive
# initialization"), so later attempts raise RenderingUnavailable instead.
_GL_BROKEN = None


def _make_mjr_context(model):
    global _GL_BROKEN
    try:
        return mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_150)
    except Exception as err:
        _GL_BROKEN = f"{type(err).__name__}: {err}"
        raise


class _ContextRenderer:
    """``mujoco.Renderer``'s offscreen RGB path on a GL context we open ourselves (EGL or
    OSMesa): the same calls (``mjv_updateScene``, ``mjr_render``, ``mjr_readPixels``, rows
    flipped), for headless processes where MuJoCo's import-time choice (GLFW) has no display."""

    def __init__(self, model, height: int, width: int, gl_context):
        self._model = model
        self._gl = gl_context
        try:
            self._gl.make_current()
            self._scene = mujoco.MjvScene(model, maxgeom=10000)
            self._option = mujoco.MjvOption()
            self._mjr = _make_mjr_context(model)
            mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._mjr)
        except Exception:
            self._gl.free()
            raise
        self._rect = mujoco.MjrRect(0, 0, width, height)
        self._shape = (height, width, 3)
        _register_for_exit(self)

    def update_scene(self, data, camera: str):
        cam = mujoco.MjvCamera()
        cam.fixedcamid = mujoco.mj_name2id(self._model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
        if cam.fixedcamid < 0:
            raise ValueError(f'The camera "{camera}" does not exist.')
        cam.type = mujoco.mjtCamera.mjCAMERA_FIXED
        mujoco.mjv_updateScene(self._model, data, self._option, None, cam,
                               mujoco.mjtCatBit.mjCAT_ALL, self._scene)

    def render(self) -> np.ndarray:
        self._gl.make_current()
        mujoco.mjr_render(self._rect, self._scene, self._mjr)
        out = np.empty(self._shape, np.uint8)
        mujoco.mjr_readPixels(out, None, self._rect, self._mjr)
        return np.flipud(out)

    def close(self):
        if self._gl is None:
            return
        self._gl.make_current()  # the MjrContext's GL objects live in this context
        self._mjr.free()
        self._mjr = None
        self._gl.free()
        self._gl = None


_OPEN_RENDERERS = weakref.WeakSet()
_EXIT_HOOK = []


def _close_open_renderers():
    for renderer in list(_OPEN_RENDERERS):
        renderer.close()


def _register_for_exit(renderer):
    """Renderers still open at exit are closed before EGL's own exit hook (registered when its
    first context was made; exit hooks run last-in first-out) terminates the display, which
    would otherwise make their contexts' ``__del__`` print errors at shutdown."""
    if not _EXIT_HOOK:
        _EXIT_HOOK.append(atexit.register(_close_open_renderers))
    _OPEN_RENDERERS.add(renderer)


def _headless_default() -> bool:
    """True where MuJoCo's default GL (GLFW, ``MUJOCO_GL`` unset) cannot work: Linux with
    neither an X nor a Wayland display."""
    return (sys.platform.startswith("linux") and not os.environ.get("MUJOCO_GL")
            and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"))


def _gl_context(backend: str, width: int, height: int):
    """An EGL or OSMesa context (MuJoCo's classes). PyOpenGL binds one platform per process,
    at its first import, from PYOPENGL_PLATFORM (which MuJoCo's module sets): a backend other
    than the bound one is refused, and the variable is restored afterwards so that child
    processes (``render_gif``'s retries) still choose their own."""
    bound = sys.modules.get("OpenGL.platform")
    if bound is not None and backend not in type(bound.PLATFORM).__name__.lower():
        raise ImportError(f"PyOpenGL is already bound to {type(bound.PLATFORM).__name__} in "
                          "this process")
    saved = os.environ.get("PYOPENGL_PLATFORM")
    try:
        if backend == "egl":
            from mujoco.egl import GLContext  # (a) optional GL backend: needs libEGL
        else:
            from mujoco.osmesa import GLContext  # (a) optional GL backend: needs libOSMesa
    finally:
        if saved is None:
            os.environ.pop("PYOPENGL_PLATFORM", None)
        else:
            os.environ["PYOPENGL_PLATFORM"] = saved
    return GLContext(width, height)


def _open_renderer(model, height: int, width: int):
    """An offscreen renderer (``update_scene(data, camera)``, ``render()``, ``close()``):
    ``mujoco.Renderer`` on the GL backend MuJoCo chose, or, headless with ``MUJOCO_GL`` unset,
    a ``_ContextRenderer`` on EGL, then OSMesa. Raises ``RenderingUnavailable`` naming the
    errors."""
    global _GL_BROKEN
    if _GL_BROKEN is not None:
        raise RenderingUnavailable("an earlier OpenGL context failed in this process "
                                   f"({_GL_BROKEN}); MuJoCo cannot retry here")
    if not _headless_default():
        try:
            with warnings.catch_warnings():  # glfw warns (no DISPLAY) before failing
                warnings.simplefilter("ignore")
                return mujoco.Renderer(model, height, width)
        except Exception as err:  # mujoco raises FatalError / RuntimeError / OSError variants
            _GL_BROKEN = f"{type(err).__name__}: {err}"
            raise RenderingUnavailable(
                f"mujoco.Renderer could not create an OpenGL context "
                f"(MUJOCO_GL={os.environ.get('MUJOCO_GL', '<unset>')}): {err}") from err
    errors = []
    for backend in ("egl", "osmesa"):
        try:
            context = _gl_context(backend, width, height)
        except Exception as err:  # ImportError, missing library, no device
            errors.append(f"{backend}: {type(err).__name__}: {err}")
            continue
        try:
            return _ContextRenderer(model, height, width, context)
        except Exception as err:  # the context exists but MuJoCo cannot use it: final
            errors.append(f"{backend}: {type(err).__name__}: {err}")
            break
    raise RenderingUnavailable("no OpenGL context for MuJoCo (headless, MUJOCO_GL unset; tried "
                               "EGL then OSMesa): " + "; ".join(errors))


class FrameRenderer:
    """Renders HalfCheetah frames one at a time from qpos [9] (kinematics only: mj_forward),
    keeping its GL context, model and MjData between calls (``PettingZooParallelEnv.render``).

    Raises ``RenderingUnavailable`` (with the underlying errors) when no GL context works.
    Call ``close()`` to free the context.
    """

    def __init__(self, width: int = 320, height: int = 240, camera: str = "track"):
        model = common.load_model()
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, width)
        model.vis.global_.offheight = max(model.vis.global_.offheight, height)
        self.model = model
        self.camera = camera
        self._data = mujoco.MjData(model)
        self._renderer = _open_renderer(model, height, width)

    def __call__(self, qpos) -> np.ndarray:
        """qpos [9] -> uint8 frame [height, width, 3]."""
        qpos = np.asarray(qpos, np.float64)
        if qpos.shape != (common.NQ,):
            raise ValueError(f"qpos must have shape ({common.NQ},), got {qpos.shape}")
        if self._renderer is None:
            raise RuntimeError("FrameRenderer used after close()")
        self._data.qpos[:] = qpos
        mujoco.mj_forward(self.model, self._data)
        self._renderer.update_scene(self._data, camera=self.camera)
        return self._renderer.render().copy()

    def close(self):
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None


def render_frames(qpos, *, width: int = 320, height: int = 240, camera: str = "track"
                  ) -> np.ndarray:
    """qpos [T, 9] -> uint8 frames [T, height, width, 3] (kinematics only: mj_forward).

    Raises ``RenderingUnavailable`` (with the underlying error) when no GL context works.
    """
    qpos = np.asarray(qpos, np.float64)
    if qpos.ndim != 2 or qpos.shape[1] != common.NQ:
        raise ValueError(f"qpos must have shape [T, {common.NQ}], got {qpos.shape}")
    renderer = FrameRenderer(width=width, height=height, camera=camera)
    try:
        return np.stack([renderer(q) for q in qpos])
    finally:
        renderer.close()


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
