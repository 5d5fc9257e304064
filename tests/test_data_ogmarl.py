"""OG-MARL vault importer: writes a small vault with flashbax, imports it, checks transitions."""
import numpy as np
import pytest

from dom2_jax.data import DatasetError
from dom2_jax.data.ogmarl import import_vault

A, OBS, ACT = 2, 3, 2


def write_vault(root, ends, terminal_at_end=True, tail=0):
    """One-stream vault; episodes end at step indices ``ends``; ``tail`` extra unfinished steps."""
    fbx = pytest.importorskip("flashbax")  # noqa: F841
    import jax.numpy as jnp
    from flashbax.buffers.trajectory_buffer import TrajectoryBufferState
    from flashbax.vault import Vault

    t = ends[-1] + 1 + tail
    obs = np.broadcast_to(np.arange(t, dtype=np.float32)[:, None, None], (t, A, OBS)).copy()
    rew = np.tile(np.arange(t, dtype=np.float32)[:, None], (1, A))
    rew[:, 1] *= 3.0                                    # per-agent rewards differ
    flags = np.zeros((t, A), bool)
    flags[list(ends)] = True
    exp = {
        "observations": obs, "actions": np.full((t, A, ACT), 0.5, np.float32), "rewards": rew,
        "terminals": flags if terminal_at_end else np.zeros_like(flags),
        "truncations": np.zeros_like(flags) if terminal_at_end else flags,
        "infos": {"state": np.zeros((t, 5), np.float32),
                  "legals": np.ones((t, A, ACT), np.float32)},
    }
    exp = {k: ({kk: jnp.asarray(vv)[None] for kk, vv in v.items()} if isinstance(v, dict)
               else jnp.asarray(v)[None]) for k, v in exp.items()}
    state = TrajectoryBufferState(experience=exp, current_index=jnp.array(t),
                                  is_full=jnp.array(False))
    vault = Vault("toy.vlt", experience_structure=exp, rel_dir=str(root), vault_uid="Medium",
                  metadata={"note": "test"})
    assert vault.write(state) == t
    return obs, rew


def test_import_true_terminations(tmp_path):
    obs, rew = write_vault(tmp_path, ends=[2, 4, 8], tail=2)
    ds = import_vault(str(tmp_path), "toy.vlt", "Medium", env="toy_env", terminations="keep")
    assert ds.env == "toy_env" and ds.quality == "medium"
    np.testing.assert_array_equal(ds.episode_lengths, [3, 2, 4])   # all steps kept
    # next_obs = following step inside an episode; last step is a placeholder masked by done
    np.testing.assert_array_equal(ds.obs[:, 0, 0], np.arange(9))
    np.testing.assert_array_equal(ds.next_obs[:, 0, 0], [1, 2, 2, 4, 4, 6, 7, 8, 8])
    np.testing.assert_array_equal(ds.dones[:, 0], [0, 0, 1, 0, 1, 0, 0, 0, 1])
    # score "mean": mean over agents of summed rewards (agent 1 gets 3x)
    sums = np.array([0 + 1 + 2, 3 + 4, 5 + 6 + 7 + 8], np.float32)
    np.testing.assert_allclose(ds.episode_returns, sums * 2.0)
    g = ds.meta["generator"]
    assert g["dropped_incomplete_tail_steps"] == 2 and g["vault_metadata"]["note"] == "test"
    ds0 = import_vault(str(tmp_path), "toy", "Medium", env="toy_env", terminations="keep",
                       score=0)
    np.testing.assert_allclose(ds0.episode_returns, sums)


def test_import_truncations_drop_last_step(tmp_path):
    write_vault(tmp_path, ends=[2, 4, 5, 8], terminal_at_end=False)
    ds = import_vault(str(tmp_path), "toy.vlt", "Medium", env="mpe_spread",
                      reference_returns={"random": 0.0, "expert": 1.0})
    # truncated episodes lose their last step (no next obs); the 1-step episode is dropped
    np.testing.assert_array_equal(ds.episode_lengths, [2, 1, 2])
    np.testing.assert_array_equal(ds.obs[:, 0, 0], [0, 1, 3, 6, 7])
    np.testing.assert_array_equal(ds.next_obs[:, 0, 0], [1, 2, 4, 7, 8])
    assert not ds.dones.any()
    # scores still count every reward of the episode
    np.testing.assert_allclose(ds.episode_returns, [6.0, 14.0, 42.0])
    assert ds.meta["generator"]["dropped_empty_episodes"] == 1


def test_import_auto_treats_mpe_terminals_as_time_limits(tmp_path):
    write_vault(tmp_path, ends=[2, 5], terminal_at_end=True)
    ds = import_vault(str(tmp_path), "toy.vlt", "Medium", env="mpe_spread")
    assert ds.meta["generator"]["terminations"] == "ignore"
    assert not ds.dones.any() and ds.num_transitions == 4


def test_import_missing_vault(tmp_path):
    with pytest.raises(DatasetError, match="vault not found"):
        import_vault(str(tmp_path), "nope.vlt", "Medium", env="mpe_spread")
