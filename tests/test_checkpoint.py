"""Checkpoints: a damaged newest step falls back to the next older one; checkpoints written
before the learners held TrainStates restore into the TrainState layout."""
import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dom2_jax import envs, registry
from dom2_jax.training.checkpoint import (Checkpointer, CheckpointError, from_legacy_layout,
                                          legacy_layout)
from dom2_jax.training.trainer import init_carry
from experiments.train import resolve_config


def _carry(algo="dom2", seeds=2):
    config, _ = resolve_config(algo, "mpe_spread", "expert", "smoke")
    env = envs.make("mpe_spread")
    module = registry.algo_module(algo)
    return jax.vmap(lambda k: init_carry(module, config.agent, env, k))(
        jax.random.split(jax.random.PRNGKey(0), seeds))


def _leaves_equal(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y))
                                      for x, y in zip(la, lb))


@pytest.mark.parametrize("algo", ["dom2", "omar"])
def test_pre_trainstate_checkpoint_restores_into_trainstates(tmp_path, algo):
    """The old on-disk layout (state.actor = params, state.actor_opt = optimiser state, ...;
    what ``legacy_layout`` writes, checked by hand against a real pre-TrainState run) comes
    back as TrainStates holding the same arrays; their step counters take the state's step."""
    carry = _carry(algo)
    carry = carry.replace(state=carry.state.replace(step=jnp.array([7, 9], jnp.int32)))
    old = legacy_layout(carry)
    assert set(old["state"]) >= {"actor", "actor_opt", "critic", "critic_opt", "actor_target"}
    ckpt = Checkpointer(str(tmp_path / "ckpt"))
    ckpt.save(3, old)
    template = _carry(algo)  # other values, same shapes
    restored = Checkpointer(str(tmp_path / "ckpt")).restore(template)
    for net in ("actor", "critic"):
        ts, ref = getattr(restored.state, net), getattr(carry.state, net)
        assert _leaves_equal(ts.params, ref.params) and _leaves_equal(ts.opt_state, ref.opt_state)
        np.testing.assert_array_equal(ts.step, np.broadcast_to([[7], [9]], ts.step.shape))
        assert ts.tx is ref.tx and ts.apply_fn == ref.apply_fn
    assert _leaves_equal(restored.state.actor_target, carry.state.actor_target)
    assert _leaves_equal(restored.state.coef, carry.state.coef)
    assert _leaves_equal((restored.key, restored.chunk), (carry.key, carry.chunk))
    # the round trip without disk
    back = from_legacy_layout(template, old)
    assert _leaves_equal(back.state.critic.params, carry.state.critic.params)
    assert legacy_layout({"a": 1}) is None


def _damage(step_dir):
    for root, _, files in os.walk(step_dir):
        for name in files:
            if name not in ("_CHECKPOINT_METADATA", "commit_success.txt"):
                with open(os.path.join(root, name), "wb") as f:
                    f.write(b"\x00garbage")


@pytest.mark.parametrize("set_aside", [True, False])
def test_damaged_newest_checkpoint_falls_back_to_the_next_older(tmp_path, set_aside):
    d = str(tmp_path / "ckpt")
    ckpt = Checkpointer(d)
    for s in (1, 2):
        ckpt.save(s, {"a": jnp.full((3,), float(s)), "n": jnp.array(s)})
    ckpt.close()
    _damage(os.path.join(d, "2"))
    template = {"a": jnp.zeros(3), "n": jnp.array(0)}
    ckpt = Checkpointer(d)
    with pytest.warns(RuntimeWarning, match="checkpoint step 2 .* could not be restored"):
        carry = ckpt.restore(template, set_aside=set_aside)
    np.testing.assert_array_equal(carry["a"], [1.0, 1.0, 1.0])
    assert ckpt.restored_step == 1
    assert os.path.isdir(os.path.join(d, "damaged", "2")) == set_aside
    if set_aside:  # the launcher writes step 2 again
        ckpt.save(2, {"a": jnp.full((3,), 5.0), "n": jnp.array(2)})
        assert ckpt.all_steps() == [1, 2]
        np.testing.assert_array_equal(Checkpointer(d).restore(template)["a"], [5.0] * 3)
        return
    with pytest.raises(Exception):  # an explicit step is restored or raises
        Checkpointer(d).restore(template, step=2)
    _damage(os.path.join(d, "1"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(CheckpointError, match="step 2: .*; step 1: "):
            Checkpointer(d).restore(template)


def test_process_checkpointer_saves_keeps_and_falls_back(tmp_path):
    """The per-process checkpoints of a multi-process run (flax msgpack, atomic): restore
    equals what was saved, only the newest max_to_keep stay, a damaged newest step falls back
    to the older one (moved aside with set_aside), a template of other shapes is refused."""
    from dom2_jax.training.checkpoint import ProcessCheckpointer
    c = ProcessCheckpointer(str(tmp_path / "p"), max_to_keep=2)
    assert c.latest_step() is None
    carry = {"a": jnp.arange(4.0), "b": {"c": jnp.ones((2, 3), jnp.int32)}}
    for step in (1, 2, 3):
        c.save(step, jax.tree.map(lambda x: x * step, carry))
    assert c.all_steps() == [2, 3]
    got = c.restore(carry)
    assert c.restored_step == 3
    np.testing.assert_array_equal(got["a"], np.arange(4.0) * 3)
    assert got["b"]["c"].dtype == jnp.int32 and got["a"].devices() == {jax.local_devices()[0]}
    (tmp_path / "p" / "3.msgpack").write_bytes(b"\x00garbage")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = c.restore(carry, set_aside=True)
    assert c.restored_step == 2 and "step 3" in str(caught[0].message)
    assert (tmp_path / "p" / "damaged" / "3.msgpack").exists() and c.all_steps() == [2]
    with pytest.raises(CheckpointError, match="shapes or dtypes differ"):
        c.restore({"a": jnp.zeros(5), "b": {"c": jnp.ones((2, 3), jnp.int32)}})
