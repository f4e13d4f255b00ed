"""Shared pieces of the solvers: the grid's coefficients, and the exponential integrators' kernels.

The exponential integrators (DDIM, DPM-Solver, DPM-Solver++, UniPC) integrate the probability-flow
ODE exactly in its linear part and approximate the model's output by a polynomial in the half
log-SNR lambda = log(alpha / sigma); for every linear SDE the same formulas hold, written through
alpha(t), sigma(t) and lambda(t).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch


class Schedule:
    """A grid's coefficients, computed once in float64 and kept in the grid's dtype and as Python numbers.

    Attributes (one entry per grid point, in the grid's dtype):
        t: the grid times.
        alpha, sigma, lam: alpha(t), sigma(t) and the half log-SNR lambda(t).
        nsr: sigma / alpha, the noise-to-signal ratio (EDM's sigma).
        h: lambda steps, h[i] = lambda(t[i + 1]) - lambda(t[i]) > 0 (one fewer entry).
        coef: (alpha, sigma) of each grid point as 0-d tensors, passed to the score function so that it
            does not recompute them at every evaluation.
        num: the same as tuples of Python floats (float64), `num.t`, `num.alpha`, ... `num.h`: the
            per-step coefficients of a solver are scalar arithmetic, which on Python numbers costs no
            tensor operations (nor, on a GPU, kernel launches or host syncs) inside the loop.
    """

    def __init__(self, sde, timesteps: torch.Tensor):
        t64 = timesteps.to(torch.float64)
        dtype = timesteps.dtype
        alpha, sigma = sde.alpha(t64), sde.sigma(t64)
        lam = torch.log(alpha) - torch.log(sigma)
        nsr, h = sigma / alpha, lam[1:] - lam[:-1]
        self.t = timesteps
        self.alpha, self.sigma, self.lam, self.nsr, self.h = (v.to(dtype) for v in (alpha, sigma, lam, nsr, h))
        # (alpha, sigma) at each grid point, for the score function (`ScoreFunction.evaluate(..., coef=)`).
        self.coef = list(zip(self.alpha.unbind(), self.sigma.unbind()))
        self.num = Numbers(*(tuple(v.tolist()) for v in (t64, alpha, sigma, lam, nsr, h)))

    def __len__(self) -> int:
        return len(self.t)


class Numbers(NamedTuple):
    """A grid's coefficients as tuples of Python floats (see `Schedule.num`); hashable, so solvers can cache by grid."""

    t: tuple
    alpha: tuple
    sigma: tuple
    lam: tuple
    nsr: tuple
    h: tuple


def ddim_step(x: torch.Tensor, x0: torch.Tensor, sched: Schedule, i: int) -> torch.Tensor:
    """First-order data-prediction step from grid point i to i + 1: sigma_t/sigma_s x + alpha_t (1 - e^-h) x0."""
    num = sched.num
    return (num.sigma[i + 1] / num.sigma[i]) * x - (num.alpha[i + 1] * math.expm1(-num.h[i])) * x0


def dpm_solver_stages(score, sde, x, s, t, lam_s, h, order: int) -> list[torch.Tensor]:
    """The solutions of DPM-Solver-1 to -`order` from x at time s to time t (lambda_t = lam_s + h), sharing evaluations.

    Lu et al. 2022, Algorithms 1 and 2: intermediate points at r1 = 1/2 (order 2) or r1 = 1/3,
    r2 = 2/3 (order 3). The last entry is the order-`order` solution; the one before it is the
    embedded lower-order solution that the adaptive solver compares it with.
    """
    a_s, a_t, s_t = sde.alpha(s), sde.alpha(t), sde.sigma(t)
    phi = torch.expm1(h)
    eps_s = score.eps(x, s)
    out = [(a_t / a_s) * x - s_t * phi * eps_s]
    if order == 1:
        return out
    r1 = 0.5 if order == 2 else 1 / 3
    s1 = time_at_lambda(sde, lam_s + r1 * h, x)
    u1 = (sde.alpha(s1) / a_s) * x - sde.sigma(s1) * torch.expm1(r1 * h) * eps_s
    d1 = score.eps(u1, s1) - eps_s
    out.append(out[0] - s_t / (2 * r1) * phi * d1)
    if order == 2:
        return out
    r2 = 2 / 3
    s2 = time_at_lambda(sde, lam_s + r2 * h, x)
    u2 = (sde.alpha(s2) / a_s) * x - sde.sigma(s2) * torch.expm1(r2 * h) * eps_s \
        - sde.sigma(s2) * (r2 / r1) * (torch.expm1(r2 * h) / (r2 * h) - 1) * d1
    d2 = score.eps(u2, s2) - eps_s
    out.append(out[0] - (s_t / r2) * (phi / h - 1) * d2)
    return out


def lower_order_final(order: int, i: int, n: int, second_until: int = 0) -> int:
    """The order of step i of n on a short grid (under 15 steps), whose long final lambda-steps make high orders unsteady.

    At most the number of steps left (UniPC's rule); with `second_until` = k, also at most second
    order over the last k steps (DPM-Solver++'s: ..., 3, 2, 2, 1 for 3M). Grids of 15 steps or more
    keep `order`.
    """
    if n >= 15:
        return order
    order = min(order, n - i)
    return min(order, 2) if n - i <= second_until else order


def check_order(order: int, allowed: tuple[int, ...], name: str) -> int:
    if order not in allowed:
        raise ValueError(f"{name} supports order {' or '.join(map(str, allowed))}, got {order}")
    return int(order)


def check_noise_scale(eta: float, s_noise: float, name: str) -> tuple[float, float]:
    """(eta, s_noise) of an ancestral-type solver, refused at the door unless both are >= 0."""
    if eta < 0 or s_noise < 0:
        raise ValueError(f"{name} needs eta >= 0 and s_noise >= 0, got eta={eta}, s_noise={s_noise}")
    return float(eta), float(s_noise)


def time_at_lambda(sde, lam: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The SDE time with log-SNR `lam`, in `like`'s dtype (for intermediate stages)."""
    return sde.t_from_lambda(lam.to(torch.float64)).to(like.dtype)
