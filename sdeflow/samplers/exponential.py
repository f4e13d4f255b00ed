"""Shared pieces of the exponential integrators (DDIM, DPM-Solver, DPM-Solver++, UniPC).

They integrate the probability-flow ODE exactly in its linear part and approximate the model's
output by a polynomial in the half log-SNR lambda = log(alpha / sigma); for every linear SDE the
same formulas hold, written through alpha(t), sigma(t) and lambda(t).
"""

from __future__ import annotations

import torch


class Schedule:
    """alpha, sigma and lambda at every grid time, computed once in float64, read as x's dtype."""

    def __init__(self, sde, timesteps: torch.Tensor):
        t = timesteps.to(torch.float64)
        self.t = timesteps
        self.alpha = sde.alpha(t)
        self.sigma = sde.sigma(t)
        self.lam = torch.log(self.alpha) - torch.log(self.sigma)
        self.dtype = timesteps.dtype

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(alpha, sigma, lambda) at grid point i, in the grid's dtype."""
        return tuple(v[i].to(self.dtype) for v in (self.alpha, self.sigma, self.lam))

    def h(self, i: int) -> torch.Tensor:
        """lambda step from grid point i to i + 1 (positive)."""
        return (self.lam[i + 1] - self.lam[i]).to(self.dtype)


def ddim_step(x: torch.Tensor, x0: torch.Tensor, sched: Schedule, i: int) -> torch.Tensor:
    """First-order data-prediction step from grid point i to i + 1: sigma_t/sigma_s x + alpha_t (1 - e^-h) x0."""
    _, s_s, _ = sched[i]
    a_t, s_t, _ = sched[i + 1]
    return (s_t / s_s) * x - a_t * torch.expm1(-sched.h(i)) * x0


def check_order(order: int, allowed: tuple[int, ...], name: str) -> int:
    if order not in allowed:
        raise ValueError(f"{name} supports order {' or '.join(map(str, allowed))}, got {order}")
    return int(order)


def time_at_lambda(sde, lam: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The SDE time with log-SNR `lam`, in `like`'s dtype (for intermediate stages)."""
    return sde.t_from_lambda(lam.to(torch.float64)).to(like.dtype)
