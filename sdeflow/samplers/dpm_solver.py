"""DPM-Solver, single-step, noise prediction (Lu et al. 2022, Algorithms 1 and 2)."""

from __future__ import annotations

import torch

from sdeflow.samplers.base import Sampler
from sdeflow.samplers.exponential import check_order, time_at_lambda


class DPMSolver(Sampler):
    """DPM-Solver-1, -2 or -3: each step evaluates the noise at `order` points in [lambda_s, lambda_t].

    Probability-flow ODE, order `order`, `order` score evaluations per step. Intermediate points
    at r1 = 1/2 (order 2) or r1 = 1/3, r2 = 2/3 (order 3), as in the paper.
    """

    stochastic = False

    def __init__(self, order: int = 3, denoise: bool = False):
        super().__init__(denoise=denoise)
        self.order = check_order(order, (1, 2, 3), "DPMSolver")

    @property
    def nfe_per_step(self) -> int:
        return self.order

    def step(self, score, sde, x, s, t, order):
        """One DPM-Solver-`order` step from time s to time t < s (used by the adaptive variant too)."""
        lam_s, lam_t = sde.lambda_(s), sde.lambda_(t)
        h = lam_t - lam_s
        a_s, a_t, s_t = sde.alpha(s), sde.alpha(t), sde.sigma(t)
        eps_s = score.eps(x, s)
        if order == 1:
            return (a_t / a_s) * x - s_t * torch.expm1(h) * eps_s

        def stage(r):
            tr = time_at_lambda(sde, lam_s + r * h, x)
            return tr, sde.alpha(tr), sde.sigma(tr)

        if order == 2:
            r1 = 0.5
            s1, a1, sg1 = stage(r1)
            u = (a1 / a_s) * x - sg1 * torch.expm1(r1 * h) * eps_s
            d1 = score.eps(u, s1) - eps_s
            return (a_t / a_s) * x - s_t * torch.expm1(h) * eps_s - s_t / (2 * r1) * torch.expm1(h) * d1
        r1, r2 = 1 / 3, 2 / 3
        s1, a1, sg1 = stage(r1)
        s2, a2, sg2 = stage(r2)
        u1 = (a1 / a_s) * x - sg1 * torch.expm1(r1 * h) * eps_s
        d1 = score.eps(u1, s1) - eps_s
        u2 = (a2 / a_s) * x - sg2 * torch.expm1(r2 * h) * eps_s - sg2 * (r2 / r1) * (torch.expm1(r2 * h) / (r2 * h) - 1) * d1
        d2 = score.eps(u2, s2) - eps_s
        return (a_t / a_s) * x - s_t * torch.expm1(h) * eps_s - (s_t / r2) * (torch.expm1(h) / h - 1) * d2

    def solve(self, score, sde, x, timesteps, noise, record):
        for i in range(len(timesteps) - 1):
            x = self.step(score, sde, x, timesteps[i], timesteps[i + 1], self.order)
            record(x)
        return x
