"""DPM-Solver++ multistep, data prediction (Lu et al. 2022b, Algorithm 2 and its third-order form)."""

from __future__ import annotations

import math

import torch

from sdeflow.samplers.base import Multistep, Sampler, check_order
from sdeflow.samplers.coefficients import GridCoefficients, weighted_sum
from sdeflow.samplers.exponential import ddim_step, lower_order_final

__all__ = ["DPMSolverPP"]


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

    def init(self, score, sde, x, sched):
        self.require_steps(sched, self.order)
        return Multistep(sched)

    def step(self, score, sde, x, i, state, noise):
        sched, n = state.sched, len(state.sched) - 1
        history = (state.history + [score.x0(x, sched.t[i], sched.coef[i])])[
            -self.order :
        ]  # x0 predictions, newest last
        order = min(self.order, len(history))
        if self.lower_order_final:
            order = lower_order_final(order, i, n, second_until=self.order)
        return self.update(x, history, sched, i, order), Multistep(sched, history)

    @staticmethod
    def update(x, history, sched: GridCoefficients, i: int, order: int) -> torch.Tensor:
        if order == 1:
            return ddim_step(x, history[-1], sched, i)
        lam, num = sched.num.lam, sched.num
        s_s, a_t, s_t = num.sigma[i], num.alpha[i + 1], num.sigma[i + 1]
        h = lam[i + 1] - lam[i]
        m0, m1 = history[-1], history[-2]
        r0 = (lam[i] - lam[i - 1]) / h
        phi1 = math.expm1(-h)  # e^{-h} - 1
        if order == 2:
            # (s_t / s_s) x - a_t phi1 m0 - a_t phi1 / 2 (m0 - m1) / r0, its scalars folded
            c1 = -0.5 * a_t * phi1 / r0
            return weighted_sum((s_t / s_s, x), (c1 - a_t * phi1, m0), (-c1, m1))
        m2 = history[-3]
        r1 = (lam[i - 1] - lam[i - 2]) / h
        # (s_t / s_s) x - a_t phi1 m0 + a_t (phi1 / h + 1) D1 - a_t ((phi1 + h) / h^2 - 1/2) D2, where
        # D1 = d0 + r0 / (r0 + r1) (d0 - d1) and D2 = (d0 - d1) / (r0 + r1) with d0 = (m0 - m1) / r0, d1 = (m1 - m2) / r1:
        # each a combination of m0, m1, m2, whose weights are folded here.
        k1, k2 = a_t * (phi1 / h + 1), -a_t * ((phi1 + h) / h**2 - 0.5)
        w0 = k1 * (1 + r0 / (r0 + r1)) + k2 / (r0 + r1)  # weight of d0 in the two corrections
        w1 = -k1 * r0 / (r0 + r1) - k2 / (r0 + r1)  # weight of d1
        return weighted_sum((s_t / s_s, x), (-a_t * phi1 + w0 / r0, m0), (-w0 / r0 + w1 / r1, m1), (-w1 / r1, m2))
