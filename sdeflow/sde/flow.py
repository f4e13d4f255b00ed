"""Rectified flow / flow matching (Liu et al. 2023; Lipman et al. 2023) as a linear SDE: x_t = (1 - t) x_0 + t z."""

from __future__ import annotations

import torch

from sdeflow.sde.base import SDE


class FlowSDE(SDE):
    """alpha(t) = 1 - t, sigma(t) = t: dx = -x / (1 - t) dt + sqrt(2 t / (1 - t)) dW; prior N(0, I).

    Its probability-flow ODE is the flow-matching ODE dx/dt = E[z - x_0 | x_t], which a velocity model
    predicts (read it with `sdeflow.FlowPrediction`). At t = 1 alpha is 0 and lambda is -infinity, so
    T = 0.999 by default: grids uniform in lambda and the exponential integrators need a finite lambda(T).
    T = 1 works with grids uniform in t and with solvers that never use lambda(T) (DDIM, Euler).
    """

    def __init__(self, T: float = 0.999, eps: float = 1e-3, N: int = 1000):
        if not T <= 1:
            raise ValueError(f"the flow path ends at t = 1 (alpha = 0); got T={T}")
        super().__init__(T=T, eps=eps, N=N)

    def f(self, t):
        return -1 / (1 - t)

    def g2(self, t):
        return 2 * t / (1 - t)

    def log_alpha(self, t):
        return torch.log1p(-t)

    def sigma(self, t):
        return t + 0.0

    def t_from_lambda(self, lam):
        return torch.sigmoid(-lam)

    @property
    def prior_std(self) -> float:
        return 1.0
