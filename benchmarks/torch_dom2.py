"""An eager PyTorch implementation of the same DOM2 update, for the throughput comparison.

Written the way public PyTorch code for diffusion policies and offline MARL is written
(Diffusion-QL, OMAR): one set of ``nn.Module``s and ``torch.optim.Adam`` optimisers per agent,
and a Python loop over the agents, each agent doing the critic step and then the actor step with
eager ops. It computes the same update as ``dom2_jax.algos.dom2.agent_update`` (see that module
and BUILD_NOTES.md, "The DOM2 update as implemented"):

* noise net: ``ResidualNoiseNetT`` mirrors ``dom2_jax.diffusion.networks.ResidualNoiseNet`` layer
  for layer (Gaussian Fourier time embedding with a fixed W, observation embedding, condition
  vector, U-Net-shaped residual blocks with skip concatenation, SiLU); same parameter count,
  and ``load_jax_params`` copies a Flax parameter tree into it;
* critics: two ReLU MLPs on concat(o, a) (``DoubleCriticT``), as ``dom2_jax.networks.DoubleCritic``;
* sampling: first-order DPM-Solver (DDIM) on the same logSNR time grid, ``N`` network calls,
  clipped to [-1, 1] after the last step; differentiable for the actor's Q-loss, under
  ``torch.no_grad`` for the target actor;
* critic loss: clipped double-Q TD + zeta * CQL(H) with ``M`` uniform actions and the same
  log-density correction (subtract log 0.5^d and log M inside the logsumexp);
* actor loss: Eq. 3's eps loss (t ~ U(t_end, 1), mean over action dims) - eta * Q_1(o, a_theta) /
  stopgrad(mean |Q_1|);
* Adam (lr 3e-4, eps 1e-8) after global-norm clipping at 1.0 for each agent's actor and critic;
  soft target updates (rho) of actor and critics; EMA actor (decay 0.995).

Documented differences (none changes the FLOPs beyond noise):
* ``torch.nn.utils.clip_grad_norm_`` divides by (norm + 1e-6), optax by norm.
* The solver's scalar coefficients (alpha ratios, sigma (e^h - 1)) are computed once in float64
  on the host; JAX computes them in float32 inside the program (relative differences ~1e-7).
* The actor's Q term calls only Q_1 (``critic.q1``, as Diffusion-QL does); JAX applies the
  double critic and keeps Q_1, and XLA removes the unused Q_2 branch as dead code.
* The actor backward asks autograd only for the actor's parameters (``backward(inputs=...)``),
  so no critic weight gradients are formed there; JAX differentiates w.r.t. the actor only.
* Random numbers come from torch's generator (the JAX update draws from its own keys);
  ``agent_update(..., noise=...)`` accepts explicit draws so that a test can feed both
  implementations the same noise.
"""
from __future__ import annotations

import copy
import math
from typing import Dict, Sequence

import jax
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


# ----------------------------------------------------------------------------- networks
class GaussianFourierProjectionT(nn.Module):
    """[sin(2 pi t W), cos(2 pi t W)], W ~ N(0, scale^2) fixed (a parameter without gradient,
    as the Flax module's stop-gradient ``W``; it counts in the parameter total there too)."""

    def __init__(self, embed_dim: int = 32, scale: float = 30.0):
        super().__init__()
        self.W = nn.Parameter(torch.randn(embed_dim // 2) * scale, requires_grad=False)

    def forward(self, t):
        proj = t[..., None] * self.W * (2.0 * math.pi)
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)


class ResidualBlockT(nn.Module):
    """Dense -> +Dense(cond) -> SiLU -> Dense, plus a (projected, bias-free) skip, then SiLU."""

    def __init__(self, in_dim: int, features: int, cond_dim: int):
        super().__init__()
        self.fc_x = nn.Linear(in_dim, features)
        self.fc_cond = nn.Linear(cond_dim, features)
        self.fc_h = nn.Linear(features, features)
        self.skip = None if in_dim == features else nn.Linear(in_dim, features, bias=False)

    def forward(self, x, cond):
        h = F.silu(self.fc_x(x) + self.fc_cond(cond))
        h = self.fc_h(h)
        skip = x if self.skip is None else self.skip(x)
        return F.silu(h + skip)


class ResidualNoiseNetT(nn.Module):
    """PyTorch twin of ``ResidualNoiseNet`` (widths h1-h2-...-hk | hk-...-h1)."""

    def __init__(self, act_dim: int, obs_dim: int, hidden_dims: Sequence[int] = (512, 256, 128),
                 time_embed_dim: int = 32, time_scale: float = 30.0, obs_embed_dim: int = 32,
                 cond_dim: int = 128):
        super().__init__()
        self.fourier = GaussianFourierProjectionT(time_embed_dim, time_scale)
        self.time_fc = nn.Linear(time_embed_dim, time_embed_dim)
        self.obs_fc = nn.Linear(obs_dim, obs_embed_dim)
        self.cond_fc = nn.Linear(time_embed_dim + obs_embed_dim, cond_dim)
        blocks, d = [], act_dim
        for w in hidden_dims:
            blocks.append(ResidualBlockT(d, w, cond_dim))
            d = w
        for w in reversed(hidden_dims):  # up path: input = concat(h, matching down output)
            blocks.append(ResidualBlockT(d + w, w, cond_dim))
            d = w
        self.blocks = nn.ModuleList(blocks)
        self.n_down = len(hidden_dims)
        self.out = nn.Linear(d, act_dim)

    def forward(self, a_t, obs, t):
        t_emb = F.silu(self.time_fc(self.fourier(t)))
        o_emb = F.silu(self.obs_fc(obs))
        cond = F.silu(self.cond_fc(torch.cat([t_emb, o_emb], dim=-1)))
        h, skips = a_t, []
        for blk in self.blocks[:self.n_down]:
            h = blk(h, cond)
            skips.append(h)
        for blk, skip in zip(self.blocks[self.n_down:], reversed(skips)):
            h = blk(torch.cat([h, skip], dim=-1), cond)
        return self.out(h)


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int) -> nn.Sequential:
    layers, d = [], in_dim
    for w in hidden:
        layers += [nn.Linear(d, w), nn.ReLU()]
        d = w
    layers.append(nn.Linear(d, out_dim))
    return nn.Sequential(*layers)


class DoubleCriticT(nn.Module):
    """Two independent Q MLPs on concat(o, a); ``forward`` returns [2, ...]."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int] = (256, 256, 256)):
        super().__init__()
        self.q1_net = mlp(obs_dim + act_dim, hidden, 1)
        self.q2_net = mlp(obs_dim + act_dim, hidden, 1)

    def q1(self, obs, act):
        return self.q1_net(torch.cat([obs, act], dim=-1))[..., 0]

    def forward(self, obs, act):
        x = torch.cat([obs, act], dim=-1)
        return torch.stack([self.q1_net(x)[..., 0], self.q2_net(x)[..., 0]])


def num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ----------------------------------------------------------------------------- schedule
class VPScheduleT:
    """Linear-beta VP schedule (same closed forms as ``dom2_jax.diffusion.VPSchedule``)."""

    def __init__(self, beta_min=0.1, beta_max=20.0):
        self.b0, self.b1 = float(beta_min), float(beta_max)

    def log_alpha(self, t):
        return -0.25 * t**2 * (self.b1 - self.b0) - 0.5 * t * self.b0

    def log_sigma(self, t):
        if isinstance(t, torch.Tensor):
            return 0.5 * torch.log(-torch.expm1(2.0 * self.log_alpha(t)))
        return 0.5 * np.log(-np.expm1(2.0 * self.log_alpha(t)))

    def log_snr(self, t):
        return self.log_alpha(t) - self.log_sigma(t)

    def t_from_log_snr(self, lam):
        u = np.logaddexp(-2.0 * lam, 0.0)
        return 2.0 * u / (self.b0 + np.sqrt(self.b0**2 + 2.0 * (self.b1 - self.b0) * u))

    def dpm1_steps(self, num_steps: int, t_end: float, grid: str = "logsnr"):
        """[(s, a_t/a_s, sigma_t (e^h - 1))] for each first-order step s -> t (float64)."""
        if grid == "logsnr":
            lam = np.linspace(self.log_snr(1.0), self.log_snr(t_end), num_steps + 1)
            ts = self.t_from_log_snr(lam)
            ts[0], ts[-1] = 1.0, t_end
        elif grid == "time_uniform":
            ts = np.linspace(1.0, t_end, num_steps + 1)
        else:
            raise ValueError(f"unknown grid {grid!r}")
        out = []
        for s, t in zip(ts[:-1], ts[1:]):
            h = self.log_snr(t) - self.log_snr(s)
            out.append((float(s), float(np.exp(self.log_alpha(t) - self.log_alpha(s))),
                        float(np.exp(self.log_sigma(t)) * np.expm1(h))))
        return out


# ----------------------------------------------------------------------------- the update
DEFAULTS = dict(eta=1.0, zeta=1.0, rho=0.005, gamma=0.99, num_solver_steps=5, solver_order=1,
                solver_grid="logsnr", t_end=1e-3, beta_min=0.1, beta_max=20.0,
                noise_hidden=(512, 256, 128), q_for_actor="q1", ema_decay=0.995,
                critic_hidden=(256, 256, 256), num_cql_actions=10, cql_density_correction=True,
                batch_size=256, actor_lr=3e-4, critic_lr=3e-4, grad_clip=1.0, use_bc_loss=True,
                noise_net="residual")


def hparams_from(config) -> Dict:
    """A plain dict of the fields used here, from a dom2 ConfigDict / Hparams / dict."""
    get = (lambda k: getattr(config, k)) if not isinstance(config, dict) else config.__getitem__
    hp = {k: get(k) for k in DEFAULTS}
    if hp["solver_order"] != 1 or hp["noise_net"] != "residual" or not hp["use_bc_loss"]:
        raise NotImplementedError("the torch reference implements the default DOM2 update only "
                                  "(residual noise net, first-order solver, BC loss on)")
    return hp


class _Agent:
    def __init__(self, obs_dim, act_dim, hp, device):
        self.actor = ResidualNoiseNetT(act_dim, obs_dim, tuple(hp["noise_hidden"])).to(device)
        self.critic = DoubleCriticT(obs_dim, act_dim, tuple(hp["critic_hidden"])).to(device)
        self.sync_copies()
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=hp["actor_lr"], eps=1e-8)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=hp["critic_lr"], eps=1e-8)

    def sync_copies(self):
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.actor_ema = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)


def _soft_update(target: nn.Module, online: nn.Module, rate: float):
    """target <- rate * online + (1 - rate) * target."""
    tp = list(target.parameters())
    op = [p.detach() for p in online.parameters()]
    with torch.no_grad():
        torch._foreach_lerp_(tp, op, rate)


class TorchDOM2:
    """DOM2 for ``num_agents`` agents, updated in a Python loop over agents."""

    def __init__(self, config, num_agents: int, obs_dim: int, act_dim: int,
                 device: str = "cpu", seed: int = 0):
        torch.manual_seed(seed)
        self.hp = hparams_from(config)
        self.num_agents, self.obs_dim, self.act_dim = num_agents, obs_dim, act_dim
        self.device = torch.device(device)
        self.sched = VPScheduleT(self.hp["beta_min"], self.hp["beta_max"])
        self.steps = self.sched.dpm1_steps(self.hp["num_solver_steps"], self.hp["t_end"],
                                           self.hp["solver_grid"])
        self.agents = [_Agent(obs_dim, act_dim, self.hp, self.device) for _ in range(num_agents)]

    # -- parameters
    def num_params(self) -> Dict[str, int]:
        a = self.agents[0]
        return {"actor": num_params(a.actor), "critic": num_params(a.critic)}

    # -- sampling
    def sample(self, actor: nn.Module, obs, x_T):
        """clip(DPM-Solver-1_N(eps_theta(., obs, .), x_T), -1, 1); differentiable unless called
        under no_grad."""
        x = x_T
        for s, ratio, coef in self.steps:
            t = torch.full(x.shape[:-1], s, dtype=x.dtype, device=x.device)
            x = ratio * x - coef * actor(x, obs, t)
        return torch.clamp(x, -1.0, 1.0)

    # -- one agent
    def agent_update(self, j: int, batch: Dict[str, torch.Tensor], noise=None) -> Dict[str, float]:
        """One DOM2 update of agent j on batch (arrays [B, ...]). ``noise`` optionally fixes the
        random draws: {"x_T_next", "rand_a" [M, B, d], "t" [B], "eps" [B, d], "x_T_pi"}."""
        hp, ag = self.hp, self.agents[j]
        obs, act, nobs = batch["obs"], batch["actions"], batch["next_obs"]
        b, d, m = obs.shape[0], self.act_dim, hp["num_cql_actions"]
        dev, dt = obs.device, obs.dtype
        noise = noise or {}
        rnd = lambda k, fn: noise[k] if k in noise else fn()
        # ---- critic (Eq. 1)
        with torch.no_grad():
            x_T = rnd("x_T_next", lambda: torch.randn(b, d, device=dev, dtype=dt))
            next_a = self.sample(ag.actor_target, nobs, x_T)
            q_next = ag.critic_target(nobs, next_a)
            y = batch["rewards"] + hp["gamma"] * (1.0 - batch["dones"]) * q_next.min(0).values
        q_data = ag.critic(obs, act)  # [2, B]
        td = ((q_data - y[None]) ** 2).mean(-1)
        rand_a = rnd("rand_a", lambda: torch.rand(m, b, d, device=dev, dtype=dt) * 2.0 - 1.0)
        obs_m = obs.unsqueeze(0).expand(m, b, obs.shape[-1])
        q_rand = ag.critic(obs_m.reshape(m * b, -1), rand_a.reshape(m * b, d))
        q_rand = q_rand.reshape(2, m, b).transpose(0, 1)  # [M, 2, B]
        if hp["cql_density_correction"]:
            q_rand = q_rand - (d * math.log(0.5) + math.log(m))
        cql = (torch.logsumexp(q_rand, dim=0) - q_data).mean(-1)
        c_loss = td.sum() + hp["zeta"] * cql.sum()
        ag.critic_opt.zero_grad(set_to_none=True)
        c_loss.backward()
        c_norm = torch.nn.utils.clip_grad_norm_(ag.critic.parameters(), hp["grad_clip"])
        ag.critic_opt.step()
        # ---- actor (Eq. 5) against the updated critic
        t = rnd("t", lambda: torch.rand(b, device=dev, dtype=dt) * (1.0 - hp["t_end"])
                + hp["t_end"])
        eps = rnd("eps", lambda: torch.randn(b, d, device=dev, dtype=dt))
        la = self.sched.log_alpha(t)
        x_t = torch.exp(la)[:, None] * act + torch.exp(self.sched.log_sigma(t))[:, None] * eps
        bc = ((eps - ag.actor(x_t, obs, t)) ** 2).mean()
        x_T = rnd("x_T_pi", lambda: torch.randn(b, d, device=dev, dtype=dt))
        a_pi = self.sample(ag.actor, obs, x_T)
        q = ag.critic.q1(obs, a_pi) if hp["q_for_actor"] == "q1" else ag.critic(obs, a_pi).min(0).values
        q_loss = -q.mean() / (q.abs().mean().detach() + 1e-6)
        a_loss = bc + hp["eta"] * q_loss
        actor_params = [p for p in ag.actor.parameters() if p.requires_grad]
        ag.actor_opt.zero_grad(set_to_none=True)
        a_loss.backward(inputs=actor_params)
        a_norm = torch.nn.utils.clip_grad_norm_(actor_params, hp["grad_clip"])
        ag.actor_opt.step()
        # ---- targets and EMA (Alg. 2 line 8)
        _soft_update(ag.critic_target, ag.critic, hp["rho"])
        _soft_update(ag.actor_target, ag.actor, hp["rho"])
        if hp["ema_decay"] > 0:
            _soft_update(ag.actor_ema, ag.actor, 1.0 - hp["ema_decay"])
        return {"critic_loss": c_loss.detach(), "actor_loss": a_loss.detach(),
                "actor_bc": bc.detach(), "critic_grad_norm": c_norm.detach(),
                "actor_grad_norm": a_norm.detach()}

    # -- all agents
    def update(self, batch: Dict[str, torch.Tensor]):
        """batch arrays with the agent axis first ([A, B, ...]); loops over agents."""
        return [self.agent_update(j, {k: v[j] for k, v in batch.items()})
                for j in range(self.num_agents)]

    def sample_batch(self, arrays: Dict[str, torch.Tensor], batch_size: int):
        """Uniform minibatch from device-resident arrays [N, A, ...] -> [A, B, ...] (as
        ``dom2_jax.data.sample_batch`` does on device inside the JAX scan)."""
        n = arrays["obs"].shape[0]
        idx = torch.randint(0, n, (batch_size,), device=arrays["obs"].device)
        return {k: v[idx].transpose(0, 1) for k, v in arrays.items()}

    def train_steps(self, arrays, num_updates: int):
        out = None
        for _ in range(num_updates):
            out = self.update(self.sample_batch(arrays, self.hp["batch_size"]))
        return out


# ----------------------------------------------------------------------------- JAX -> torch
def _copy_dense(lin: nn.Linear, p):
    k = torch.as_tensor(np.asarray(p["kernel"]))
    if tuple(lin.weight.shape) != tuple(k.T.shape):
        raise ValueError(f"shape mismatch {tuple(lin.weight.shape)} vs {tuple(k.T.shape)}")
    with torch.no_grad():
        lin.weight.copy_(k.T)
        if lin.bias is not None:
            lin.bias.copy_(torch.as_tensor(np.asarray(p["bias"])))
        elif "bias" in p:
            raise ValueError("bias present in Flax but not in torch")


def load_jax_actor(net: ResidualNoiseNetT, flax_params):
    """Copies a Flax ``ResidualNoiseNet`` parameter tree into ``net`` (raises on any mismatch)."""
    p = flax_params["params"] if "params" in flax_params else flax_params
    n_blocks = len(net.blocks)
    with torch.no_grad():
        net.fourier.W.copy_(torch.as_tensor(np.asarray(p["GaussianFourierProjection_0"]["W"])))
    _copy_dense(net.time_fc, p["Dense_0"])
    _copy_dense(net.obs_fc, p["Dense_1"])
    _copy_dense(net.cond_fc, p["Dense_2"])
    _copy_dense(net.out, p["Dense_3"])
    for i, blk in enumerate(net.blocks):
        q = p[f"ResidualBlock_{i}"]
        _copy_dense(blk.fc_x, q["Dense_0"])
        _copy_dense(blk.fc_cond, q["Dense_1"])
        _copy_dense(blk.fc_h, q["Dense_2"])
        if (blk.skip is None) != ("Dense_3" not in q):
            raise ValueError(f"skip projection mismatch in block {i}")
        if blk.skip is not None:
            _copy_dense(blk.skip, q["Dense_3"])
    if len([k for k in p if k.startswith("ResidualBlock_")]) != n_blocks:
        raise ValueError("block count mismatch")


def load_jax_critic(critic: DoubleCriticT, flax_params):
    p = flax_params["params"] if "params" in flax_params else flax_params
    for name, seq in (("q1", critic.q1_net), ("q2", critic.q2_net)):
        lins = [m for m in seq if isinstance(m, nn.Linear)]
        dense = p[name]["MLP_0"]
        if len(dense) != len(lins):
            raise ValueError("critic depth mismatch")
        for i, lin in enumerate(lins):
            _copy_dense(lin, dense[f"Dense_{i}"])


def load_jax_state(model: TorchDOM2, state):
    """Initialises every agent of ``model`` from a ``DOM2State`` (agent axis first); targets and
    EMA copies are reset to the online networks (as ``dom2.init`` does)."""
    for j, ag in enumerate(model.agents):
        take = lambda tree: jax.tree.map(lambda x: np.asarray(x[j]), tree)
        load_jax_actor(ag.actor, take(state.actor.params))
        load_jax_critic(ag.critic, take(state.critic.params))
        ag.sync_copies()
        ag.actor_opt = torch.optim.Adam(ag.actor.parameters(), lr=model.hp["actor_lr"], eps=1e-8)
        ag.critic_opt = torch.optim.Adam(ag.critic.parameters(), lr=model.hp["critic_lr"],
                                         eps=1e-8)
