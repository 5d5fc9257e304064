"""render_mpe_episode writes a GIF with one frame per state, from any accepted input form."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from dom2_jax.envs import make
from dom2_jax.envs.mpe.base import MPEState
from dom2_jax.envs.render import render_frames, render_mpe_episode


def fake_states(env, episodes=None, t=6, seed=0):
    rng = np.random.default_rng(seed)
    lead = (t,) if episodes is None else (episodes, t)
    n = env.spec.n_entities
    return MPEState(p_pos=rng.uniform(-1, 1, lead + (n, 2)).astype(np.float32),
                    p_vel=np.zeros(lead + (n, 2), np.float32),
                    t=np.zeros(lead, np.int32),
                    speed=np.ones(lead + (env.spec.n_agents,), np.float32))


@pytest.mark.parametrize("name", ["mpe_spread", "mpe_tag", "mpe_world"])
def test_gif_from_state_with_time_axis(name, tmp_path):
    env = make(name)
    path = render_mpe_episode(env, fake_states(env), str(tmp_path / f"{name}.gif"), fps=5)
    with Image.open(path) as im:
        assert im.n_frames == 6 and im.size == (320, 320)


def test_other_input_forms(tmp_path):
    env = make("mpe_tag")
    states = fake_states(env, episodes=2, t=4)
    out = {"states": states,
           "initial_state": MPEState(p_pos=states.p_pos[:, 0], p_vel=states.p_vel[:, 0],
                                     t=states.t[:, 0], speed=states.speed[:, 0])}
    frames = render_frames(env, out, size_px=160)
    assert len(frames) == 5 and frames[0].shape == (160, 160, 3)
    assert frames[0].dtype == np.uint8 and frames[0].std() > 0
    as_list = [env.state_from_positions(p) for p in states.p_pos[0]]
    assert len(render_frames(env, as_list, size_px=96)) == 4
    with pytest.raises(ValueError, match="return_states"):
        render_frames(env, {"score": np.zeros(2)})
    with pytest.raises(ValueError, match="entities"):
        render_frames(env, np.zeros((3, 5, 2)))
