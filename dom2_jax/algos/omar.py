"""OMAR (Pan et al. 2022): CQL critics + an actor regularised toward a zeroth-order search.

Per agent j, following OMAR's public code (``ling-pan/OMAR``, ``algorithms/maddpg.py``):

  critic: exactly MA-CQL's (``common.critic_loss``: TD + zeta * CQL(H), 10 uniform actions).
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
import functools
from typing import Callable, Dict, Tuple

import jax
import jax.numpy as jnp
import ml_collections

from dom2_jax.algos import common
from dom2_jax.algos.common import ActorCriticState

Array = jax.Array
State = ActorCriticState
SEARCHES = ("gaussian", "cem")


def default_config() -> ml_collections.ConfigDict:
    """OMAR hyper-parameters (OMAR code's MuJoCo values; MPE values in the config file)."""
    c = ml_collections.ConfigDict()
    c.c = 0.7                    # OMAR's omar_coe (tuned per task/quality; config file)
    c.zeta = 1.0                 # CQL weight (OMAR's cql_alpha)
    c.rho = 0.005
    c.gamma = 0.99
    c.actor_hidden = (256, 256)
    c.critic_hidden = (256, 256)
    c.num_cql_actions = 10
    c.cql_density_correction = True
    c.cql_policy_noise = 0.0     # > 0: also noisy pi(o), pi(o') in the logsumexp (OMAR MuJoCo: 0.2)
    c.act_reg = 1e-3
    c.policy_noise = 0.0
    c.noise_clip = 0.5
    c.policy_delay = 1
    c.batch_size = 256
    c.actor_lr = 3e-4
    c.critic_lr = 3e-4
    c.grad_clip = 0.5
    # Zeroth-order search (OMAR code: MPE gaussian 3 iters x 10 samples; MuJoCo CEM 2 x 20,
    # 5 elites; mu0 0, sigma0 2 for both).
    c.search = "cem"
    c.search_init = "zero"       # "zero" (OMAR) or "policy" (start at the current action)
    c.search_sigma0 = 2.0
    c.search_iters = 2
    c.search_samples = 20
    c.search_elites = 5          # used by "cem"
    c.search_temperature = 1.0   # used by "gaussian": softmax(Q / T) refit (OMAR: T = 1)
    return c


@dataclasses.dataclass(frozen=True)
class Hparams(common.CQLHparams):
    NAME = "OMAR"
    COEF_NAMES = ("c", "zeta", "rho", "gamma")

    c: float
    search: str
    search_init: str
    search_sigma0: float
    search_iters: int
    search_samples: int
    search_elites: int
    search_temperature: float

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
    q_fn = lambda a: common.q1_of(hp, params, obs, a)
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
    q_pi = common.q1_of(hp, critic_params, obs, pi)
    a_s, q_s = search_actions(hp, critic_params, obs, pi, key)
    keep_pi = jax.lax.stop_gradient(q_pi) >= q_s        # torch.max: first index wins ties
    a_hat = jax.lax.stop_gradient(jnp.where(keep_pi[:, None], pi, a_s))
    mimic = jnp.mean(jnp.square(pi - a_hat))
    loss = (coef["c"] * mimic - (1.0 - coef["c"]) * jnp.mean(q_pi)
            + hp.act_reg * jnp.mean(jnp.square(pi)))
    return loss, {"actor_q": jnp.mean(q_pi), "actor_mimic": mimic, "search_q": jnp.mean(q_s),
                  "search_better_frac": 1.0 - jnp.mean(keep_pi.astype(jnp.float32))}


# ----------------------------------------------------------------------------- learner API
# The shared TD3-style learner (dom2_jax.algos.common) with this module's Hparams and actor loss.
make_coef = common.make_coef
act = common.deterministic_act  # a = pi_j(o_j): [..., A, obs_dim] -> [..., A, act_dim]
agent_update = functools.partial(common.actor_critic_agent_update, actor_loss_fn=actor_loss)


def init(key: Array, config, num_agents: int, obs_dim: int, act_dim: int) -> State:
    """Training state (agents on axis 0) from a config or an ``Hparams``."""
    return common.init_actor_critic(key, Hparams.resolve(config, num_agents, obs_dim, act_dim))


def update(state: State, batch: Dict[str, Array], key: Array):
    """One update of all agents (vmap of ``agent_update``); batch arrays [A, B, ...]."""
    return common.update_agents(state, batch, key, agent_update, common.AC_FIELDS)
