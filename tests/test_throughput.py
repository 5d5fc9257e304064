"""The eager PyTorch DOM2 reference used by benchmarks/throughput.py, and the benchmark's
--quick run. Skipped when torch (the optional ``bench`` extra) is not installed."""
import json
import os

import numpy as np
import pytest

# Before torch loads OpenMP: spin-waiting threads crawl on a shared machine (see throughput.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
torch = pytest.importorskip("torch")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from benchmarks import throughput, torch_dom2  # noqa: E402
from dom2_jax.algos import dom2  # noqa: E402

# The --quick spread sizes: 3 agents, obs 18, act 2; noise net (8,), critics (16, 16), N = 2.
_S = throughput.SETTINGS["spread"]
A, O, D, B = _S["agents"], _S["obs"], _S["act"], throughput.QUICK["batch_size"]


def _config():
    return throughput.make_config("spread", quick=True)


@pytest.fixture(scope="module", autouse=True)
def fast_compile():
    """XLA optimisations off for this module: compiles take about half as long."""
    prev = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", prev)


@pytest.fixture(scope="module")
def jax_state():
    return throughput.init_state("spread", True)[2]  # shared with the --quick run below


def _batch(seed=3):
    k = jax.random.split(jax.random.PRNGKey(seed), 4)
    return {"obs": jax.random.normal(k[0], (B, O)),
            "actions": jax.random.uniform(k[1], (B, D), minval=-1, maxval=1),
            "rewards": jax.random.normal(k[2], (B,)),
            "next_obs": jax.random.normal(k[3], (B, O)), "dones": jnp.zeros((B,))}


def _t(x):
    return torch.as_tensor(np.array(x))


def test_param_counts_match_and_same_noise_gives_same_losses(jax_state):
    """Same init (JAX parameters copied in) + the same random draws -> the torch update's
    losses and gradient norms equal ours to float32 rounding."""
    model = torch_dom2.TorchDOM2(_config(), A, O, D)
    counts = {"actor": throughput.param_count(jax_state.actor.params) // A,
              "critic": throughput.param_count(jax_state.critic.params) // A}
    assert model.num_params() == counts
    torch_dom2.load_jax_state(model, jax_state)

    hp, key, batch = jax_state.hp, jax.random.PRNGKey(7), _batch()
    params = {f: jax.tree.map(lambda x: x[0], getattr(jax_state, f)) for f in dom2._FIELDS}
    _, met = jax.jit(lambda p, b, k: dom2.agent_update(hp, jax_state.coef, p, b, k))(
        params, batch, key)
    # The draws dom2.agent_update makes from `key`, replayed for torch.
    k_next, k_cql, k_actor = jax.random.split(key, 3)
    k_bc, k_pi = jax.random.split(k_actor)
    k_t, k_eps = jax.random.split(k_bc)
    noise = {"x_T_next": _t(jax.random.normal(k_next, (B, D))),
             "rand_a": _t(jax.random.uniform(k_cql, (hp.num_cql_actions, B, D), minval=-1.0,
                                             maxval=1.0)),
             "t": _t(jax.random.uniform(k_t, (B,), minval=hp.t_end, maxval=1.0)),
             "eps": _t(jax.random.normal(k_eps, (B, D))),
             "x_T_pi": _t(jax.random.normal(k_pi, (B, D)))}
    out = model.agent_update(0, {k: _t(v) for k, v in batch.items()}, noise)
    for name in ("critic_loss", "actor_loss", "actor_bc", "critic_grad_norm", "actor_grad_norm"):
        np.testing.assert_allclose(float(out[name]), float(met[name]), rtol=2e-4, err_msg=name)


def test_torch_update_reduces_critic_loss_on_fixed_batch():
    cfg = _config()
    cfg.critic_lr = 3e-3
    model = torch_dom2.TorchDOM2(cfg, A, O, D, seed=1)
    g = torch.Generator().manual_seed(0)
    batch = {"obs": torch.randn(A, B, O, generator=g),
             "actions": torch.rand(A, B, D, generator=g) * 2 - 1,
             "rewards": torch.randn(A, B, generator=g),
             "next_obs": torch.randn(A, B, O, generator=g), "dones": torch.zeros(A, B)}
    losses = []
    for _ in range(80):
        out = model.update(batch)
        losses.append(np.mean([float(m["critic_loss"]) for m in out]))
        assert all(np.isfinite(float(m["actor_loss"])) for m in out)
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses


def test_quick_end_to_end_writes_documented_files(tmp_path):
    res = throughput.run(throughput.Options(quick=True, seeds_list="1", out=str(tmp_path)))
    with open(tmp_path / "throughput_quick.json") as f:
        saved = json.load(f)
    assert set(throughput.RESULT_KEYS) <= set(saved)
    r = saved["settings"]["spread"]
    assert r["params_equal"] and r["torch"]["params_per_agent"] == r["params_per_agent"]
    for k in ("ms_per_update", "updates_per_s", "compile_s"):
        assert r["jax"][k] > 0
    assert r["torch"]["updates_per_s"] > 0 and r["ratio"] > 0
    assert r["flops_per_update"] > 0 and 0 < r["peak_share"]
    # XLA's count (solver unrolled) agrees with the analytic matmul count to within 2x.
    assert 0.5 < r["xla_flops"] / r["analytic_flops"] < 2.0
    assert saved["system"]["cpu_model"] and saved["system"]["jax_devices"]
    assert saved["seeds"][0]["seeds"] == 1
    assert os.path.exists(tmp_path / "throughput_quick.md")
    assert os.path.exists(tmp_path / "throughput_quick.png")
    assert res["settings"]["spread"]["ratio"] == pytest.approx(r["ratio"])
