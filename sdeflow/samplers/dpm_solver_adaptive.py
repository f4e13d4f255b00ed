"""Adaptive DPM-Solver (Lu et al. 2022, Algorithm 4): DPM-Solver-12 or -23 with error control in lambda."""

from __future__ import annotations

import math

import torch

from sdeflow.samplers.base import Sampler, SolverError, non_finite
from sdeflow.samplers.exponential import time_at_lambda


class DPMSolverAdaptive(Sampler):
    """Embedded pair of DPM-Solver-(k-1) and -k sharing their evaluations; the step in lambda adapts.

    Probability-flow ODE, order `order` (2: DPM-Solver-12, 3: DPM-Solver-23), `order` score
    evaluations per attempted step. The error E = RMS((x_k - x_{k-1}) / delta), delta =
    max(atol, rtol max(|x_{k-1}|, |x_prev|)), is the worst over the batch; steps with E <= 1 are
    accepted and h <- min(theta h E^(-1/k), what is left). Runs from the grid's first to last time.
    """

    nfe_per_step = None
    stochastic = False

    def __init__(self, order: int = 3, rtol: float = 0.05, atol: float = 0.0078, h_init: float = 0.05, theta: float = 0.9,
                 max_steps: int = 10_000, denoise: bool = False):
        super().__init__(denoise=denoise)
        if order not in (2, 3):
            raise ValueError(f"DPMSolverAdaptive supports order 2 or 3, got {order}")
        if not (rtol > 0 and atol > 0 and h_init > 0 and 0 < theta <= 1):
            raise ValueError("need rtol > 0, atol > 0, h_init > 0 and 0 < theta <= 1")
        self.order, self.rtol, self.atol, self.h_init, self.theta = int(order), float(rtol), float(atol), float(h_init), float(theta)
        self.max_steps = int(max_steps)

    def pair(self, score, sde, x, s, lam_s, h):
        """(lower-order, higher-order) solutions at lambda_s + h from x at time s."""
        t = time_at_lambda(sde, lam_s + h, x)
        a_s, a_t, s_t = sde.alpha(s), sde.alpha(t), sde.sigma(t)
        phi = torch.expm1(h)
        eps_s = score.eps(x, s)
        base = (a_t / a_s) * x - s_t * phi * eps_s
        r1 = 0.5 if self.order == 2 else 1 / 3
        s1 = time_at_lambda(sde, lam_s + r1 * h, x)
        u1 = (sde.alpha(s1) / a_s) * x - sde.sigma(s1) * torch.expm1(r1 * h) * eps_s
        d1 = score.eps(u1, s1) - eps_s
        second = base - s_t / (2 * r1) * phi * d1
        if self.order == 2:
            return t, base, second
        r2 = 2 / 3
        s2 = time_at_lambda(sde, lam_s + r2 * h, x)
        u2 = (sde.alpha(s2) / a_s) * x - sde.sigma(s2) * torch.expm1(r2 * h) * eps_s \
            - sde.sigma(s2) * (r2 / r1) * (torch.expm1(r2 * h) / (r2 * h) - 1) * d1
        d2 = score.eps(u2, s2) - eps_s
        third = base - (s_t / r2) * (phi / h - 1) * d2
        return t, second, third

    def solve(self, score, sde, x, timesteps, noise, record):
        lam = sde.lambda_(timesteps.to(torch.float64))
        lam_s, lam_end = lam[0].to(x.dtype), lam[-1].to(x.dtype)
        s = timesteps[0]
        h = torch.as_tensor(self.h_init, dtype=x.dtype)
        x_prev = x
        for k in range(self.max_steps):
            if lam_end - lam_s <= 1e-9 * max(1.0, float(lam_end.abs())):
                break
            h = torch.minimum(h, lam_end - lam_s)
            t, lower, higher = self.pair(score, sde, x, s, lam_s, h)
            delta = torch.maximum(torch.full_like(x, self.atol), self.rtol * torch.maximum(lower.abs(), x_prev.abs()))
            err = float(((higher - lower) / delta).flatten(1).pow(2).mean(1).sqrt().max())
            if math.isnan(err):
                # Only NaN or infinity in the solutions gives a NaN norm; shrinking the step would not help.
                raise non_finite("DPMSolverAdaptive", f"at attempted step {k + 1} from t = {float(s):.6g}")
            if err <= 1:
                x, x_prev, s, lam_s = higher, lower, t, lam_s + h
            h = self.theta * h * max(err, 1e-10) ** (-1 / self.order)
        else:
            raise SolverError(f"DPMSolverAdaptive did not reach the end in {self.max_steps} steps; loosen rtol/atol")
        record(x)
        return x
