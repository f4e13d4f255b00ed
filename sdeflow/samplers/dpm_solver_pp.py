"""DPM-Solver++ multistep, data prediction (Lu et al. 2022b, Algorithm 2 and its third-order form)."""

from __future__ import annotations

import torch

from sdeflow.samplers.base import Sampler
from sdeflow.samplers.exponential import Schedule, check_order, ddim_step


class DPMSolverPP(Sampler):
    """DPM-Solver++(2M) or (3M): one x0 evaluation per step, earlier ones reused through finite differences in lambda.

    Probability-flow ODE, order `order`, 1 score evaluation per step. The first steps warm up at
    lower order; with `lower_order_final`, grids under 15 steps also end at lower order (the last
    step first order, the `order` - 1 before it at most second), which steadies very short grids.
    """

    nfe_per_step = 1
    stochastic = False
    warmup_order = 1

    def __init__(self, order: int = 2, lower_order_final: bool = True, denoise: bool = False):
        super().__init__(denoise=denoise)
        self.order = check_order(order, (2, 3), "DPMSolverPP")
        self.lower_order_final = bool(lower_order_final)

    def solve(self, score, sde, x, timesteps, noise, record):
        self.require_steps(timesteps, self.order)
        sched = Schedule(sde, timesteps)
        n = len(timesteps) - 1
        history = []  # x0 predictions at earlier grid points, newest last
        for i in range(n):
            history = (history + [score.x0(x, timesteps[i])])[-self.order :]
            order = min(self.order, len(history))
            if self.lower_order_final and n < 15:
                # Short grids end in long lambda-steps: the last step is first order and the `order` - 1
                # before it at most second order (3M: ..., 3, 2, 2, 1; 2M: ..., 2, 1).
                order = 1 if i == n - 1 else (min(order, 2) if i >= n - self.order else order)
            x = self.update(x, history, sched, i, order)
            record(x)
        return x

    @staticmethod
    def update(x, history, sched: Schedule, i: int, order: int) -> torch.Tensor:
        if order == 1:
            return ddim_step(x, history[-1], sched, i)
        _, s_s, lam_s = sched[i]
        a_t, s_t, lam_t = sched[i + 1]
        h = lam_t - lam_s
        m0, m1 = history[-1], history[-2]
        r0 = (lam_s - sched[i - 1][2]) / h
        d1_0 = (m0 - m1) / r0
        phi1 = torch.expm1(-h)  # e^{-h} - 1
        if order == 2:
            return (s_t / s_s) * x - a_t * phi1 * m0 - 0.5 * a_t * phi1 * d1_0
        m2 = history[-3]
        r1 = (sched[i - 1][2] - sched[i - 2][2]) / h
        d1_1 = (m1 - m2) / r1
        d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
        d2 = (d1_0 - d1_1) / (r0 + r1)
        return (s_t / s_s) * x - a_t * phi1 * m0 + a_t * (phi1 / h + 1) * d1 - a_t * ((phi1 + h) / h**2 - 0.5) * d2
