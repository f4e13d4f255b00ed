"""Linear multistep (LMS, as k-diffusion's sample_lms): Adams-Bashforth with exact variable-step weights."""

from __future__ import annotations

import numpy as np
import torch

from sdeflow.samplers.base import Multistep, Sampler, check_order
from sdeflow.samplers.coefficients import Numbers

__all__ = ["LMS"]


def lms_weights(nodes: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Weights w_j = integral over [lo, hi] of the Lagrange basis polynomials on `nodes`."""
    weights = []
    for j in range(len(nodes)):
        others = np.delete(nodes, j)
        # The coefficients of prod (s - s_k) / (s_j - s_k).
        basis = np.atleast_1d(np.poly(others)) / np.prod(nodes[j] - others)
        integral = np.polyint(basis)
        weights.append(np.polyval(integral, hi) - np.polyval(integral, lo))
    return np.asarray(weights)


class LMS(Sampler):
    """Linear multistep on dx~/dsigma~ = eps with the exact Adams-Bashforth weights of the actual grid.

    Probability-flow ODE, order `order` (1 to 4), 1 score evaluation per step; warms up from order 1.
    `IPNDM` is the same method with the weights of equal steps (`combine` is what differs).

    Args:
        order: the number of points of the Adams-Bashforth polynomial, its nominal order (`nominal_order`).
    """

    nfe_per_step = 1
    stochastic = False
    warmup_order = 1

    def __init__(self, order: int = 4, denoise: bool = False):
        super().__init__(denoise=denoise)
        self.nominal_order = check_order(order, (1, 2, 3, 4), type(self).__name__)
        self.order = self.nominal_order

    def init(self, score, sde, x, sched):
        self.require_steps(sched, self.nominal_order)
        return Multistep(sched)

    def step(self, score, sde, x, i, state, noise):
        sched = state.sched
        # eps at earlier grid points, newest first
        ds = ([score.eps(x, sched.t[i], sched.coef[i])] + state.history)[: self.nominal_order]
        return self.combine(x, ds, sched.num, i), Multistep(sched, ds)

    def combine(self, x: torch.Tensor, ds: list, num: Numbers, i: int) -> torch.Tensor:
        """x at grid point i + 1 from x and eps at the last len(ds) grid points (newest first)."""
        sigmas, alpha = num.nsr, num.alpha  # sigma~ as floats, for the weights' integrals
        nodes = np.asarray(sigmas[i - len(ds) + 1 : i + 1][::-1], dtype=np.float64)
        w = lms_weights(nodes, sigmas[i], sigmas[i + 1])
        return alpha[i + 1] * (x / alpha[i] + sum(float(wj) * d for wj, d in zip(w, ds)))
