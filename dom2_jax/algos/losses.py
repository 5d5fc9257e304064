"""The critic losses and targets the learners share (pure functions of parameters and a batch).

  * ``critic_loss``: CQL(H) double-critic loss (DOM2's Eq. 1; MA-CQL's and OMAR's critic),
    optionally with proposals near the policy (``noisy_proposals``) in its logsumexp;
  * ``td_critic_loss``: the clipped double-Q TD loss without the CQL term (TD3+BC, MA-SfBC,
    the online TD3);
  * ``td_target``: y = r + gamma (1 - done) min_k Qbar_k(o', a');
  * ``expectile_loss``: IQL's asymmetric square (MA-SfBC's value).

``hp`` arguments need only the fields each function names (``critic_module``,
``num_cql_actions``, ``cql_density_correction``, ``act_dim``); ``coef`` is the state's dict of
dynamic coefficients.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def critic_loss(hp, coef, critic_params, batch, target_q: Array, key: Array,
                extra_actions=None):
    """CQL(H) double-critic loss for one agent (DOM2 Eq. 1, MA-CQL, OMAR).

      sum_k E[(y - Q_k(o, a))^2]
      + zeta sum_k E[logsumexp_m (Q_k(o, a~_m) - log 0.5^d) - log M - Q_k(o, a)],
      a~_m ~ U[-1, 1]^d, m = 1..M.

    batch arrays [B, ...]; target_q [B] (no gradient); ``coef["zeta"]`` weighs the CQL term.
    ``extra_actions``: optional ``(actions [K, B, d], log_density [K, B])`` that join the
    uniform ones in the logsumexp (with ``- log_density`` under the density correction;
    ``- log(M + K)`` replaces ``- log M``): CQL's proposals near the policy
    (``noisy_proposals``). Without them the loss is Eq. 1 as printed.
    """
    critic = hp.critic_module
    obs, actions = batch["obs"], batch["actions"]
    q_data = critic.apply(critic_params, obs, actions)  # [2, B]
    td = jnp.mean(jnp.square(q_data - target_q[None]), axis=-1)  # [2]
    m = hp.num_cql_actions
    rand_a = jax.random.uniform(key, (m,) + actions.shape, actions.dtype, -1.0, 1.0)  # [M, B, d]
    # log density of each sampled action under its proposal: uniform on [-1, 1]^d, or given
    log_p = jnp.full(rand_a.shape[:2], hp.act_dim * jnp.log(0.5))  # [M, B]
    if extra_actions is not None:
        rand_a = jnp.concatenate([rand_a, extra_actions[0]], axis=0)  # [M + K, B, d]
        log_p = jnp.concatenate([log_p, extra_actions[1]], axis=0)
    q_all = jax.vmap(lambda a: critic.apply(critic_params, obs, a))(rand_a)  # [M + K, 2, B]
    if hp.cql_density_correction:
        q_all = q_all - log_p[:, None] - jnp.log(q_all.shape[0])
    q_rand = q_all[:m]  # the uniform actions' terms (metrics)
    lse = jax.scipy.special.logsumexp(q_all, axis=0)  # [2, B]
    cql = jnp.mean(lse - q_data, axis=-1)  # [2]
    loss = jnp.sum(td) + coef["zeta"] * jnp.sum(cql)
    aux = {"critic_td": jnp.mean(td), "critic_cql": jnp.mean(cql),
           "q_data": jnp.mean(q_data), "q_random": jnp.mean(q_rand),
           "cql_gap": jnp.mean(jnp.mean(q_rand, 0) - q_data)}
    return loss, aux


def td_critic_loss(hp, coef, critic_params, batch, target_q: Array, key: Array = None):
    """Plain clipped double-Q TD loss sum_k E[(y - Q_k(o, a))^2] (same signature as
    ``critic_loss``; ``coef`` and ``key`` are unused)."""
    del coef, key
    q_data = hp.critic_module.apply(critic_params, batch["obs"], batch["actions"])  # [2, B]
    td = jnp.mean(jnp.square(q_data - target_q[None]), axis=-1)
    return jnp.sum(td), {"critic_td": jnp.mean(td), "q_data": jnp.mean(q_data)}


def td_target(critic_module, target_params, batch, next_actions: Array, gamma) -> Array:
    """y = r + gamma (1 - done) min_k Qbar_k(o', a') with no gradient; [B]."""
    q_next = critic_module.apply(target_params, batch["next_obs"], next_actions)
    y = batch["rewards"] + gamma * (1.0 - batch["dones"]) * jnp.min(q_next, axis=0)
    return jax.lax.stop_gradient(y)


def noisy_proposals(pi: Array, key: Array, m: int, sigma: float):
    """m noisy copies pi + N(0, sigma^2), clipped to [-1, 1], of each of the P policy actions
    ``pi`` [P, B, d], with the log density of their noise. Returns (actions [P m, B, d],
    log_density [P m, B]) without gradient (CQL proposals must not train the actor)."""
    p = pi.shape[0]
    noise = sigma * jax.random.normal(key, (p, m) + pi.shape[1:])  # [P, m, B, d]
    acts = jnp.clip(pi[:, None] + noise, -1.0, 1.0).reshape((p * m,) + pi.shape[1:])
    log_density = jnp.sum(jax.scipy.stats.norm.logpdf(noise, scale=sigma), axis=-1)
    return jax.lax.stop_gradient((acts, log_density.reshape((p * m,) + pi.shape[1:2])))


def expectile_loss(u: Array, tau) -> Array:
    """E |tau - 1(u < 0)| u^2 (IQL)."""
    w = jnp.where(u < 0, 1.0 - tau, tau)
    return jnp.mean(w * jnp.square(u))
