"""OMAR (Pan et al. 2022): CQL critics + an actor regularised toward a zeroth-order search.

Per agent j, following OMAR's public code (``ling-pan/OMAR``, ``algorithms/maddpg.py``):

  critic: exactly MA-CQL's (``losses.critic_loss``: TD + zeta * CQL(H), 10 uniform actions).
  search: a_s = zeroth-order maximisation of Q_1(o, .) (on the freshly updated critic, no
          gradient), started from N(mu0, sigma0^2) with mu0 = 0 (or the current action):
            "gaussian" (OMAR's MPE code): each of ``search_iters`` iterations draws
                ``search_samples`` clipped samples, refits mu = softmax(Q / T)-weighted mean
                of the samples and sigma = their RMS deviation from the new mu;
            "cem" (OMAR's MuJoCo code): each iteration keeps the top-``search_elites``
                samples (elites of the previous iteration compete again), refits mu and
                sigma (unbiased std) to them.
          a_s = the best sample of the last iteration.
  a_hat = argmax over {pi(o), a_s} of Q_1 (the current action is kept when it is better).
  actor: L(theta) = c * E mean_d (pi(o) - sg(a_hat))^2 - (1 - c) E Q_1(o, pi(o))
                    + act_reg * E mean_d pi(o)^2.
  targets: soft updates with rate rho; no target smoothing, no delay (OMAR's TD3).

``gaussian_search`` and ``cem_search`` are pure functions of a Q function, usable on their own.
c is OMAR's tuned ``omar_coe`` per task and quality (experiments/configs/omar.py).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Dict, Tuple

import jax
import jax.numpy as jnp

from dom2_jax.algos import td3_family
from dom2_jax.algos.common import make_coef  # noqa: F401  (make_coef(hp, **overrides))
from dom2_jax.algos.td3_family import ActorCriticState

Array = jax.Array
State = ActorCriticState
SEARCHES = ("gaussian", "cem")


@dataclasses.dataclass(frozen=True)
class Hparams(td3_family.CQLHparams):
    """OMAR: MA-CQL's fields and defaults (OMAR code's MuJoCo values; MPE values and the
    per-task c and zeta in experiments/configs/omar.py) plus the zeroth-order search."""

    NAME = "OMAR"
    COEF_NAMES = ("c", "zeta", "rho", "gamma")

    c: float = 0.7                       # OMAR's omar_coe: weight of the imitation term
    # Zeroth-order search (OMAR code: MPE gaussian 3 iters x 10 samples; MuJoCo CEM 2 x 20,
    # 5 elites; mu0 0, sigma0 2 for both).
    search: str = "cem"                  # "cem" (MuJoCo code) or "gaussian" (MPE code)
    search_init: str = "zero"            # "zero" (OMAR) or "policy" (start at pi(o))
    search_sigma0: float = 2.0
    search_iters: int = 2
    search_samples: int = 20
    search_elites: int = 5               # used by "cem"
    search_temperature: float = 1.0      # used by "gaussian": softmax(Q / T) refit

    def checks(self):
        return super().checks() + [
            (0.0 <= self.c <= 1.0, f"c must be in [0, 1], got {self.c}"),
            (self.search in SEARCHES, f"search must be one of {SEARCHES}, got {self.search!r}"),
            (self.search_init in ("zero", "policy"), "search_init must be 'zero' or 'policy'"),
            (self.search_iters >= 1 and self.search_samples >= 1,
             "search_iters and search_samples must be >= 1"),
            (self.search != "cem" or 1 <= self.search_elites <= self.search_samples,
             "search_elites must be in [1, search_samples]"),
            (self.search_sigma0 > 0 and self.search_temperature > 0,
             "search_sigma0 and search_temperature must be > 0"),
        ]


def default_config():
    """The fields of ``Hparams`` with their defaults, as a ConfigDict."""
    return Hparams.default_config()


# ----------------------------------------------------------------------------- search
QFn = Callable[[Array], Array]  # actions [..., M, d] -> Q [..., M]


def _draw(key, mu, sigma, num_samples, lo, hi):
    eps = jax.random.normal(key, mu.shape[:-1] + (num_samples,) + mu.shape[-1:], mu.dtype)
    return jnp.clip(mu[..., None, :] + sigma[..., None, :] * eps, lo, hi)


def _best(samples, q) -> Tuple[Array, Array]:
    i = jnp.argmax(q, axis=-1)
    a = jnp.take_along_axis(samples, i[..., None, None], axis=-2)[..., 0, :]
    return a, jnp.take_along_axis(q, i[..., None], axis=-1)[..., 0]


def gaussian_search(q_fn: QFn, mu0: Array, sigma0, key: Array, num_samples: int = 10,
                    num_iters: int = 3, temperature: float = 1.0, lo: float = -1.0,
                    hi: float = 1.0) -> Tuple[Array, Array]:
    """OMAR's MPE search: iterated Gaussian sampling with a softmax(Q / T)-weighted refit.

    mu0 [..., d]; sigma0 scalar or [..., d]. Returns (best action [..., d], its Q [...]) among
    the samples of the last iteration. Pure and jittable; no gradient flows through it.
    """
    mu = jax.lax.stop_gradient(mu0)
    sigma = jnp.broadcast_to(jnp.asarray(sigma0, mu.dtype), mu.shape)
    samples = q = None
    for k in jax.random.split(key, num_iters):
        samples = _draw(k, mu, sigma, num_samples, lo, hi)              # [..., M, d]
        q = jax.lax.stop_gradient(q_fn(samples))                         # [..., M]
        w = jax.nn.softmax(q / temperature, axis=-1)[..., None]
        mu = jnp.sum(w * samples, axis=-2)
        sigma = jnp.sqrt(jnp.mean(jnp.square(samples - mu[..., None, :]), axis=-2))
    return _best(samples, q)


def cem_search(q_fn: QFn, mu0: Array, sigma0, key: Array, num_samples: int = 20,
               num_elites: int = 5, num_iters: int = 2, lo: float = -1.0,
               hi: float = 1.0) -> Tuple[Array, Array]:
    """OMAR's MuJoCo search: cross-entropy method; the previous elites compete again in each
    later iteration. Returns (best action [..., d], its Q [...]) of the last candidate set."""
    mu = jax.lax.stop_gradient(mu0)
    sigma = jnp.broadcast_to(jnp.asarray(sigma0, mu.dtype), mu.shape)
    elites = elite_q = None
    for it, k in enumerate(jax.random.split(key, num_iters)):
        samples = _draw(k, mu, sigma, num_samples, lo, hi)
        q = jax.lax.stop_gradient(q_fn(samples))
        if it > 0:
            samples = jnp.concatenate([samples, elites], axis=-2)
            q = jnp.concatenate([q, elite_q], axis=-1)
        elite_q, idx = jax.lax.top_k(q, num_elites)
        elites = jnp.take_along_axis(samples, idx[..., None], axis=-2)   # [..., K, d]
        mu = jnp.mean(elites, axis=-2)
        sigma = jnp.std(elites, axis=-2, ddof=1) if num_elites > 1 else jnp.zeros_like(mu)
    return elites[..., 0, :], elite_q[..., 0]   # top_k is sorted: index 0 is the best


def search_actions(hp: Hparams, critic_params, obs: Array, pi: Array, key: Array):
    """The configured search on Q_1(obs, .) of one agent's critic. obs [B, obs_dim]."""
    params = jax.lax.stop_gradient(critic_params)
    q_fn = lambda a: td3_family.q1_of(hp, params, obs, a)
    mu0 = jax.lax.stop_gradient(pi) if hp.search_init == "policy" else jnp.zeros_like(pi)
    if hp.search == "gaussian":
        return gaussian_search(q_fn, mu0, hp.search_sigma0, key, hp.search_samples,
                               hp.search_iters, hp.search_temperature)
    return cem_search(q_fn, mu0, hp.search_sigma0, key, hp.search_samples, hp.search_elites,
                      hp.search_iters)


# ----------------------------------------------------------------------------- losses
def actor_loss(hp: Hparams, coef, actor_params, critic_params, batch, key: Array):
    obs = batch["obs"]
    pi = hp.actor_module.apply(actor_params, obs)
    q_pi = td3_family.q1_of(hp, critic_params, obs, pi)
    a_s, q_s = search_actions(hp, critic_params, obs, pi, key)
    keep_pi = jax.lax.stop_gradient(q_pi) >= q_s        # torch.max: first index wins ties
    a_hat = jax.lax.stop_gradient(jnp.where(keep_pi[:, None], pi, a_s))
    mimic = jnp.mean(jnp.square(pi - a_hat))
    loss = (coef["c"] * mimic - (1.0 - coef["c"]) * jnp.mean(q_pi)
            + hp.act_reg * jnp.mean(jnp.square(pi)))
    return loss, {"actor_q": jnp.mean(q_pi), "actor_mimic": mimic, "search_q": jnp.mean(q_s),
                  "search_better_frac": 1.0 - jnp.mean(keep_pi.astype(jnp.float32))}


# ----------------------------------------------------------------------------- learner
def init(key: Array, config, num_agents: int, obs_dim: int, act_dim: int) -> State:
    """Training state (agents on axis 0) from a config or an ``Hparams``."""
    return td3_family.init(key, Hparams.resolve(config, num_agents, obs_dim, act_dim))


def update(state: State, batch: Dict[str, Array], key: Array):
    """One update of all agents (TD3 family, this module's actor loss); batch [A, B, ...]."""
    return td3_family.update(state, batch, key, actor_loss)


def act(state: State, obs: Array, key: Array = None) -> Array:
    """a = pi_j(o_j): [..., A, obs_dim] -> [..., A, act_dim]."""
    return td3_family.act(state, obs, key)
