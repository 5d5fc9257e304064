"""Diffusion machinery for DOM2: VP schedule, DPM-Solver samplers, noise networks, Eq. 3 loss."""
from dom2_jax.diffusion.losses import eps_loss
from dom2_jax.diffusion.networks import (MLPNoiseNet, ResidualNoiseNet, make_noise_net,
                                         NOISE_NETS)
from dom2_jax.diffusion.schedule import VPSchedule
from dom2_jax.diffusion.solvers import (METHODS, SOLVERS, ddpm_sample, dpm_solver_fast_grid,
                                        dpm_solver_fast_orders, dpm_solver_fast_sample,
                                        dpm_solver_multistep_orders, dpm_solver_multistep_sample,
                                        dpm_solver_official, dpm_solver_pp_2m_sample,
                                        dpm_solver_sample, network_calls, sample, time_grid)

__all__ = [
    "VPSchedule", "dpm_solver_sample", "dpm_solver_fast_sample", "dpm_solver_multistep_sample",
    "dpm_solver_official", "dpm_solver_fast_orders", "dpm_solver_fast_grid",
    "dpm_solver_multistep_orders", "METHODS", "dpm_solver_pp_2m_sample", "ddpm_sample", "sample",
    "time_grid", "network_calls", "SOLVERS", "eps_loss", "ResidualNoiseNet", "MLPNoiseNet",
    "make_noise_net", "NOISE_NETS",
]
