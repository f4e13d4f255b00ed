"""DEIS, the tAB variant (Zhang & Chen 2023): exponential integration with an Adams-Bashforth polynomial in t."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sdeflow.samplers.base import Multistep, Sampler, check_order
from sdeflow.samplers.quadrature import lagrange_integrals

__all__ = ["DEIS"]


@dataclass
class DEISState(Multistep):
    """DEIS's state: the history, and each step's weights, computed once for the grid."""

    weights: tuple = ()


class DEIS(Sampler):
    """x~_{i+1} = x~_i + sum_j C_ij eps_j in x~ = x / alpha, the eps_j at the last `order` grid points.

    The probability-flow ODE is dx~/dsigma~ = eps, sigma~ = sigma / alpha. tAB extrapolates eps by the
    Lagrange polynomial in t through its values at t_i, t_{i-1}, ..., and integrates it exactly
    against d sigma~(t): C_ij = integral over [sigma~_i, sigma~_{i+1}] of L_j(t(sigma~)) d sigma~, by
    quadrature in lambda, once per grid. Order 1 is DDIM. Probability-flow ODE, order `order`
    (1 to 3), 1 score evaluation per step; the first steps warm up at lower order.
    """

    nfe_per_step = 1
    stochastic = False
    warmup_order = 1

    def __init__(self, order: int = 3, denoise: bool = False):
        super().__init__(denoise=denoise)
        self.order = check_order(order, (1, 2, 3), "DEIS")

    def init(self, score, sde, x, sched):
        self.require_steps(sched, self.order)
        num = sched.num

        def t_of(lam: np.ndarray) -> np.ndarray:
            return sde.t_from_lambda(torch.from_numpy(lam)).numpy()

        def d_nsr(lam: np.ndarray) -> np.ndarray:
            return -np.exp(-lam)  # d sigma~ / d lambda

        weights = tuple(
            lagrange_integrals(
                [num.t[i - k] for k in range(min(self.order, i + 1))], num.lam[i], num.lam[i + 1], d_nsr, at=t_of
            )
            for i in range(len(sched) - 1)
        )
        return DEISState(sched, weights=weights)

    def step(self, score, sde, x, i, state, noise):
        sched = state.sched
        num = sched.num
        history = ([score.eps(x, sched.t[i], sched.coef[i])] + state.history)[: self.order]  # newest first
        x_scaled = x / num.alpha[i]
        for c, eps in zip(state.weights[i], history):
            x_scaled = x_scaled + c * eps
        return num.alpha[i + 1] * x_scaled, DEISState(sched, history, state.weights)
