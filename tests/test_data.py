"""Tests of dom2_jax.data: format round trip, validation errors, atomic writes, transforms."""
import json
import os

import numpy as np
import pytest

from dom2_jax import data
from dom2_jax.data import DatasetError
from dom2_jax.data import format as fmt

A, OBS, ACT = 2, 3, 2


def make_dataset(lengths=(3, 2, 4), returns=(1.0, 5.0, 10.0), env="mpe_spread",
                 quality="medium", seed=0, dones_last=False):
    rng = np.random.default_rng(seed)
    n = int(sum(lengths))
    # obs[t] encodes the transition index so gathers are checkable
    obs = np.broadcast_to(np.arange(n, dtype=np.float32)[:, None, None], (n, A, OBS)).copy()
    dones = np.zeros((n, A), bool)
    if dones_last:
        dones[n - 1] = True
    return data.build_dataset(
        obs=obs, actions=rng.uniform(-1, 1, (n, A, ACT)), rewards=rng.normal(size=(n, A)),
        next_obs=obs + 1, dones=dones, episode_lengths=lengths, episode_returns=returns,
        env=env, quality=quality, env_kwargs={"k": 1}, generator={"cmd": "test"},
        reference_returns={"random": 0.0, "expert": 10.0})


@pytest.fixture
def saved(tmp_path):
    ds = make_dataset(dones_last=True)
    path = str(tmp_path / "ds")
    data.save(ds, path)
    return ds, path


# ---------------------------------------------------------------------------------------------
# Round trip
# ---------------------------------------------------------------------------------------------


def test_round_trip(saved):
    ds, path = saved
    assert sorted(os.listdir(path)) == sorted([f"{k}.npy" for k in fmt.ARRAY_NAMES] +
                                              ["meta.json"])
    for mmap in (False, True):
        back = data.load(path, expected_env="mpe_spread",
                         expected_shapes={"num_agents": A, "obs_dim": OBS, "act_dim": ACT},
                         mmap=mmap)
        for k in fmt.ARRAY_NAMES:
            got, want = getattr(back, k), getattr(ds, k)
            assert got.dtype == want.dtype and got.shape == want.shape
            np.testing.assert_array_equal(got, want)
    m = back.meta
    assert m["format_version"] == 1 and m["env"] == "mpe_spread" and m["quality"] == "medium"
    assert (m["num_transitions"], m["num_episodes"], m["num_agents"], m["obs_dim"],
            m["act_dim"]) == (9, 3, A, OBS, ACT)
    assert set(m["sha256"]) == set(fmt.ARRAY_NAMES) and m["env_kwargs"] == {"k": 1}
    assert back.reference_returns == {"random": 0.0, "expert": 10.0}
    np.testing.assert_array_equal(back.episode_starts, [0, 3, 5])
    ep = back.episode(1)
    assert ep["obs"].shape == (2, A, OBS) and ep["score"] == 5.0
    assert "9 transitions" in back.summary()
    # no stray temp dirs left behind
    assert [d for d in os.listdir(os.path.dirname(path)) if ".tmp-" in d] == []


def test_save_refuses_existing_then_overwrites(saved):
    ds, path = saved
    with pytest.raises(FileExistsError):
        data.save(ds, path)
    other = make_dataset(lengths=(2, 2), returns=(0.0, 1.0), quality="expert")
    data.save(other, path, overwrite=True)
    back = data.load(path)
    assert back.quality == "expert" and back.num_transitions == 4
    assert [d for d in os.listdir(os.path.dirname(path)) if d != "ds"] == []


def test_from_episodes_default_score():
    eps = []
    for t in (2, 3):
        eps.append({"obs": np.zeros((t, A, OBS)), "actions": np.zeros((t, A, ACT)),
                    "rewards": np.ones((t, A)), "next_obs": np.zeros((t, A, OBS)),
                    "dones": np.zeros((t, A))})
    eps[1]["score"] = -7.0
    ds = data.Dataset.from_episodes(eps, env="mpe_tag", quality="random")
    np.testing.assert_allclose(ds.episode_returns, [2.0, -7.0])
    np.testing.assert_array_equal(ds.episode_starts, [0, 2])
    assert ds.dones.dtype == bool and ds.obs.dtype == np.float32


# ---------------------------------------------------------------------------------------------
# Validation failures: each raises DatasetError naming the problem
# ---------------------------------------------------------------------------------------------


def _rewrite_npy(path, name, array):
    """Replaces one array file and refreshes its checksum (so only the intended check fires)."""
    fpath = os.path.join(path, f"{name}.npy")
    np.save(fpath, array, allow_pickle=False)
    with open(os.path.join(path, "meta.json")) as f:
        meta = json.load(f)
    meta["sha256"][name] = fmt._sha256_file(fpath)
    with open(os.path.join(path, "meta.json"), "w") as f:
        json.dump(meta, f)


def _edit_meta(path, **changes):
    with open(os.path.join(path, "meta.json")) as f:
        meta = json.load(f)
    meta.update(changes)
    with open(os.path.join(path, "meta.json"), "w") as f:
        json.dump(meta, f)


def test_missing_directory(tmp_path):
    with pytest.raises(DatasetError, match="dataset directory not found"):
        data.load(str(tmp_path / "nope"))


def test_missing_file(saved):
    _, path = saved
    os.remove(os.path.join(path, "actions.npy"))
    with pytest.raises(DatasetError, match=r"actions\.npy: missing"):
        data.load(path)


def test_missing_meta(saved):
    _, path = saved
    os.remove(os.path.join(path, "meta.json"))
    with pytest.raises(DatasetError, match=r"meta\.json: missing"):
        data.load(path)


def test_truncated_file(saved):
    _, path = saved
    fpath = os.path.join(path, "obs.npy")
    with open(fpath, "rb") as f:
        raw = f.read()
    with open(fpath, "wb") as f:
        f.write(raw[:-10])
    with pytest.raises(DatasetError, match=r"obs\.npy: truncated"):
        data.load(path)
    with open(fpath, "wb") as f:  # cut inside the header
        f.write(raw[:20])
    with pytest.raises(DatasetError, match=r"obs\.npy: not a readable \.npy file"):
        data.load(path)


def test_checksum_mismatch(saved):
    _, path = saved
    fpath = os.path.join(path, "rewards.npy")
    with open(fpath, "r+b") as f:  # flip one byte of data, keep the size
        f.seek(-1, os.SEEK_END)
        b = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(bytes([b[0] ^ 0xFF]))
    with pytest.raises(DatasetError, match=r"rewards\.npy: checksum mismatch"):
        data.load(path)
    data.load(path, verify_checksums=False)  # the check can be skipped


def test_wrong_env(saved):
    _, path = saved
    with pytest.raises(DatasetError, match=r"made for env 'mpe_spread'.*uses 'mpe_tag'"):
        data.load(path, expected_env="mpe_tag")


def test_wrong_shapes_for_run(saved):
    _, path = saved
    with pytest.raises(DatasetError, match=r"obs_dim is 3 but the environment needs 18"):
        data.load(path, expected_shapes={"obs_dim": 18})


def test_shape_mismatch_between_arrays(saved):
    _, path = saved
    _rewrite_npy(path, "next_obs", np.zeros((9, A, OBS + 1), np.float32))
    with pytest.raises(DatasetError, match=r"next_obs\.npy: shape \(9, 2, 4\) is inconsistent"):
        data.load(path)


def test_shape_mismatch_with_meta(saved):
    _, path = saved
    _edit_meta(path, num_agents=3)
    with pytest.raises(DatasetError, match=r"num_agents = 3 but the arrays have 2"):
        data.load(path)


def test_wrong_dtype(saved):
    _, path = saved
    _rewrite_npy(path, "rewards", np.zeros((9, A), np.float64))
    with pytest.raises(DatasetError, match=r"rewards\.npy: dtype float64, expected float32"):
        data.load(path)


def test_nan(saved):
    _, path = saved
    obs = np.zeros((9, A, OBS), np.float32)
    obs[4, 1, 2] = np.nan
    obs[6, 0, 0] = np.inf
    _rewrite_npy(path, "obs", obs)
    with pytest.raises(DatasetError, match=r"obs\.npy: 2 non-finite.*first at index \(4, 1, 2\)"):
        data.load(path)


def test_unknown_version(saved):
    _, path = saved
    _edit_meta(path, format_version=2)
    with pytest.raises(DatasetError, match=r"unknown format_version 2"):
        data.load(path)


def test_corrupt_meta(saved):
    _, path = saved
    with open(os.path.join(path, "meta.json"), "w") as f:
        f.write('{"format_version": 1, ')
    with pytest.raises(DatasetError, match=r"meta\.json: not valid JSON"):
        data.load(path)


def test_bad_episode_bookkeeping(saved):
    _, path = saved
    _rewrite_npy(path, "episode_lengths", np.array([3, 2, 3], np.int64))
    with pytest.raises(DatasetError, match=r"episode_lengths\.npy: lengths sum to 8 but there "
                                           r"are 9 transitions"):
        data.load(path)
    _rewrite_npy(path, "episode_lengths", np.array([3, 2, 4], np.int64))
    _rewrite_npy(path, "episode_starts", np.array([0, 2, 5], np.int64))
    with pytest.raises(DatasetError, match=r"episode_starts\.npy: episode 1 starts at 2, "
                                           r"expected 3"):
        data.load(path)
    _rewrite_npy(path, "episode_starts", np.array([0, 3, 5], np.int64))
    _rewrite_npy(path, "episode_returns", np.zeros(2, np.float32))
    with pytest.raises(DatasetError, match=r"episode_returns\.npy: 2 entries"):
        data.load(path)


def test_done_before_episode_end():
    dones = np.zeros((4, A), bool)
    dones[1, 0] = True                               # last step of episode 0: fine
    dones[2, 1] = True                               # first step of episode 1: not fine
    with pytest.raises(DatasetError, match=r"dones: done at transition 2, before the end of "
                                           r"episode 1"):
        data.build_dataset(np.zeros((4, A, OBS)), np.zeros((4, A, ACT)), np.zeros((4, A)),
                           np.zeros((4, A, OBS)), dones, [2, 2], [0, 0], env="e", quality="q")


def test_build_rejects_nan_and_save_refuses_invalid(tmp_path):
    with pytest.raises(DatasetError, match=r"rewards: 1 non-finite"):
        data.build_dataset(np.zeros((2, A, OBS)), np.zeros((2, A, ACT)), [[0, np.nan], [0, 0]],
                           np.zeros((2, A, OBS)), np.zeros((2, A)), [2], [0], env="e",
                           quality="q")
    good = make_dataset()
    bad = fmt.Dataset(**{**good.arrays(), "episode_lengths": np.array([3, 2, 3], np.int64)},
                      meta=good.meta)
    with pytest.raises(DatasetError, match="lengths sum to 8"):
        data.save(bad, str(tmp_path / "bad"))
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# Atomic write
# ---------------------------------------------------------------------------------------------


def test_crash_mid_write_leaves_no_partial_dataset(tmp_path, monkeypatch):
    ds = make_dataset()
    path = str(tmp_path / "ds")
    real = fmt._write_npy
    calls = []

    def crashing(p, a):
        calls.append(p)
        if len(calls) == 4:
            # the final path must never hold a partial dataset, even mid-write
            assert not os.path.exists(path)
            raise KeyboardInterrupt("simulated crash")
        return real(p, a)

    monkeypatch.setattr(fmt, "_write_npy", crashing)
    with pytest.raises(KeyboardInterrupt):
        data.save(ds, path)
    assert not os.path.exists(path)
    assert os.listdir(tmp_path) == []  # temp dir cleaned up
    with pytest.raises(DatasetError, match="not found"):
        data.load(path)


def test_crash_during_overwrite_keeps_old_dataset(tmp_path, monkeypatch):
    old = make_dataset(quality="old")
    path = str(tmp_path / "ds")
    data.save(old, path)
    real = fmt._write_npy
    calls = []

    def crashing(p, a):
        calls.append(p)
        if len(calls) == 5:
            raise OSError("disk full")
        return real(p, a)

    monkeypatch.setattr(fmt, "_write_npy", crashing)
    with pytest.raises(OSError, match="disk full"):
        data.save(make_dataset(quality="new"), path, overwrite=True)
    assert data.load(path).quality == "old"
    assert os.listdir(tmp_path) == ["ds"]


def test_killed_process_leftover_is_ignored(tmp_path):
    """A hard kill after some files leaves only a *.tmp-* sibling; load names the leftover."""
    path = str(tmp_path / "ds")
    os.mkdir(path + ".tmp-deadbeef")
    np.save(os.path.join(path + ".tmp-deadbeef", "obs.npy"), np.zeros(3, np.float32))
    with pytest.raises(DatasetError, match=r"unfinished write left .*ds\.tmp-deadbeef"):
        data.load(path)


# ---------------------------------------------------------------------------------------------
# Augmentation (Alg. 1)
# ---------------------------------------------------------------------------------------------


def test_augment_counts_and_order():
    ds = make_dataset(lengths=(3, 2, 4), returns=(1.0, 5.0, 10.0))
    aug = data.augment(ds, [5.0, 8.0])
    # episode 0 (return 1): 1 copy; episode 1 (return 5 >= 5): 2; episode 2 (10): 3
    np.testing.assert_array_equal(data.augmentation_counts(ds, [5.0, 8.0]), [0, 1, 2])
    assert aug.num_episodes == 3 + 2 + 1
    assert aug.num_transitions == 9 + (2 + 4) + 4
    np.testing.assert_array_equal(aug.episode_returns, [1, 5, 10, 5, 10, 10])
    np.testing.assert_array_equal(aug.episode_lengths, [3, 2, 4, 2, 4, 4])
    np.testing.assert_array_equal(aug.episode_starts, [0, 3, 5, 9, 11, 15])
    # transitions are copied whole and in order (obs encodes the source transition index)
    src = [0, 1, 2, 3, 4, 5, 6, 7, 8, 3, 4, 5, 6, 7, 8, 5, 6, 7, 8]
    np.testing.assert_array_equal(aug.obs[:, 0, 0], src)
    np.testing.assert_array_equal(aug.actions, ds.actions[src])
    np.testing.assert_array_equal(aug.rewards, ds.rewards[src])
    rec = aug.meta["augmentations"][-1]
    assert rec["thresholds"] == [5.0, 8.0] and rec["episodes_added_per_threshold"] == [2, 1]
    assert aug.meta["num_transitions"] == 19 and "sha256" not in aug.meta
    # identical thresholds count separately; nothing above -> unchanged
    assert data.augment(ds, [10.0, 10.0]).num_episodes == 5
    assert data.augment(ds, [100.0]).num_transitions == 9
    assert data.augment(ds, []).num_transitions == 9


def test_augment_survives_save(tmp_path):
    ds = make_dataset()
    aug = data.augment(ds, data.default_thresholds(ds, quantiles=(0.5,)))
    data.save(aug, str(tmp_path / "aug"))
    back = data.load(str(tmp_path / "aug"))
    assert back.num_transitions == aug.num_transitions
    assert back.meta["augmentations"][0]["thresholds"] == [5.0]


def test_default_thresholds():
    ds = make_dataset(lengths=(1,) * 5, returns=(0, 1, 2, 3, 4))
    assert data.default_thresholds(ds, quantiles=(0.5, 0.75)) == [2.0, 3.0]
    assert len(data.default_thresholds(ds)) == 3
    with pytest.raises(ValueError):
        data.default_thresholds(ds, quantiles=(1.5,))


# ---------------------------------------------------------------------------------------------
# Subsampling
# ---------------------------------------------------------------------------------------------


def test_subsample_whole_trajectories_deterministic():
    lengths = tuple(range(1, 21))                     # 20 episodes, 210 transitions
    ds = make_dataset(lengths=lengths, returns=tuple(float(i) for i in range(20)))
    sub = data.subsample(ds, 0.3, 7)
    again = data.subsample(ds, 0.3, 7)
    np.testing.assert_array_equal(sub.obs, again.obs)
    assert abs(sub.num_transitions - 63) <= 20      # within one trajectory of the target
    # whole trajectories: every kept episode matches its source exactly
    for i in range(sub.num_episodes):
        src = int(sub.episode_returns[i])
        assert sub.episode_lengths[i] == lengths[src]
        np.testing.assert_array_equal(sub.episode(i)["obs"], ds.episode(src)["obs"])
    assert list(sub.episode_returns) == sorted(sub.episode_returns)  # original order kept
    assert sub.meta["subsample"]["fraction"] == 0.3
    # tiny fraction -> at least one trajectory; 1.0 -> everything
    assert data.subsample(ds, 1e-6, 0).num_episodes == 1
    assert data.subsample(ds, 1.0, 0).num_transitions == 210
    # nested: same seed, smaller fraction is a subset
    big = set(data.subsample(ds, 0.5, 3).episode_returns.tolist())
    small = set(data.subsample(ds, 0.1, 3).episode_returns.tolist())
    assert small <= big
    with pytest.raises(ValueError):
        data.subsample(ds, 0.0, 0)


def test_subsample_accepts_jax_key():
    import jax
    ds = make_dataset(lengths=(2,) * 10, returns=tuple(range(10)))
    a = data.subsample(ds, 0.5, jax.random.PRNGKey(1))
    b = data.subsample(ds, 0.5, jax.random.key(1))
    assert a.num_episodes == 5
    np.testing.assert_array_equal(a.episode_returns, b.episode_returns)


# ---------------------------------------------------------------------------------------------
# Concatenation, scores
# ---------------------------------------------------------------------------------------------


def test_concatenate():
    med = make_dataset(quality="medium")
    exp = make_dataset(lengths=(2, 2), returns=(20.0, 30.0), quality="expert", seed=1)
    me = data.concatenate([med, exp])
    assert me.quality == "medium-expert" and me.num_transitions == 13 and me.num_episodes == 5
    np.testing.assert_array_equal(me.episode_starts, [0, 3, 5, 9, 11])
    np.testing.assert_array_equal(me.actions[9:], exp.actions)
    assert [s["quality"] for s in me.meta["sources"]] == ["medium", "expert"]
    with pytest.raises(DatasetError, match="env"):
        data.concatenate([med, make_dataset(env="mpe_tag")])


def test_normalized_score():
    refs = {"random": 100.0, "expert": 300.0}
    assert data.normalized_score(200.0, refs) == 50.0
    np.testing.assert_allclose(data.normalized_score(np.array([100.0, 300.0]), refs), [0, 100])
    assert data.normalized_score(5.0, make_dataset()) == 50.0
    with pytest.raises(DatasetError, match=r"lacks \['expert'\]"):
        data.normalized_score(1.0, {"random": 0.0})


# ---------------------------------------------------------------------------------------------
# Device side
# ---------------------------------------------------------------------------------------------


def test_to_device_and_sample_batch():
    import jax
    import jax.numpy as jnp
    ds = make_dataset(dones_last=True)
    arrays = data.to_device(ds)
    assert arrays["obs"].shape == (9, A, OBS) and arrays["dones"].dtype == jnp.float32
    key = jax.random.PRNGKey(0)
    b = data.sample_batch(arrays, key, 16)
    assert b["obs"].shape == (A, 16, OBS) and b["next_obs"].shape == (A, 16, OBS)
    assert b["actions"].shape == (A, 16, ACT)
    assert b["rewards"].shape == (A, 16) and b["dones"].shape == (A, 16)
    assert b["dones"].dtype == jnp.float32
    b2 = data.sample_batch(arrays, key, 16)
    for k in b:
        np.testing.assert_array_equal(b[k], b2[k])
    # same transition index for every agent (joint transitions)
    idx = np.asarray(b["obs"][:, :, 0]).astype(int)          # obs encodes transition index
    np.testing.assert_array_equal(idx[0], idx[1])
    np.testing.assert_array_equal(np.asarray(b["actions"]), np.swapaxes(ds.actions[idx[0]], 0, 1))
    np.testing.assert_array_equal(np.asarray(b["dones"][:, idx[0] == 8]), 1.0)
    # usable inside jit
    f = jax.jit(lambda arr, k: data.sample_batch(arr, k, 4)["rewards"].sum())
    assert np.isfinite(float(f(arrays, key)))
    assert not np.array_equal(data.sample_batch(arrays, jax.random.PRNGKey(1), 16)["obs"],
                              b["obs"])
