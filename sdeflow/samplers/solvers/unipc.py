"""UniPC: unified predictor-corrector, data prediction (Zhao et al. 2023, Algorithms 1-3)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from sdeflow.samplers.base import Multistep, Sampler, check_order
from sdeflow.samplers.coefficients import GridCoefficients, weighted_sum
from sdeflow.samplers.exponential import lower_order_final

__all__ = ["UniPC"]


# The two published variants of B(h): hh (bh1) or e^hh - 1 (bh2), hh = -h (data prediction).

VARIANTS = ("bh1", "bh2")


@dataclass
class UniPCState(Multistep):
    """UniPC's state: the history, and the last step's start and order, which the corrector recomputes."""

    x_last: torch.Tensor | None = None
    last_order: int = 0


class UniPC(Sampler):
    """UniP-p predictor with the UniC corrector: the corrector reuses the model output at the new point.

    Probability-flow ODE, 1 score evaluation per step; order p + 1 with the corrector, which is
    skipped after the last step since no evaluation is made there. The first steps warm up at
    lower order; `lower_order_final` lowers the order of the last steps on grids under 15 steps.

    Args:
        order: p, the predictor's order (1 to 3).
        variant: "bh1" (B(h) = h) or "bh2" (B(h) = e^h - 1).
        corrector: apply UniC (False gives the bare UniP-p).
    """

    nfe_per_step = 1
    stochastic = False

    def __init__(
        self,
        order: int = 2,
        variant: str = "bh2",
        corrector: bool = True,
        lower_order_final: bool = True,
        denoise: bool = False,
    ):
        super().__init__(denoise=denoise)
        self.p = check_order(order, (1, 2, 3), "UniPC")
        if variant not in VARIANTS:
            raise ValueError(f"UniPC variant must be one of {list(VARIANTS)}, got {variant!r}")
        self.variant = variant
        self.corrector = bool(corrector)
        self.lower_order_final = bool(lower_order_final)
        self.order = self.p + int(self.corrector)
        # The first step is order 1, lifted to 2 by the corrector.
        self.warmup_order = 1 + int(self.corrector)

    def init(self, score, sde, x, sched):
        self.require_steps(sched, self.p)
        return UniPCState(sched)

    def step(self, score, sde, x, i, state, noise):
        sched, n = state.sched, len(state.sched) - 1
        m = score.x0(x, sched.t[i], sched.coef[i])
        if self.corrector and state.x_last is not None:
            # UniC: recompute the last step with the new model output included.
            x = self._update(state.x_last, state.history, sched, i - 1, state.last_order, m_new=m)
        history = (state.history + [m])[-self.p :]  # x0 predictions, newest last
        order = min(self.p, i + 1)
        if self.lower_order_final:
            order = lower_order_final(order, i, n)
        return self._update(x, history, sched, i, order), UniPCState(sched, history, x, order)

    def _update(self, x, history, sched: GridCoefficients, i: int, order: int, m_new=None):
        """UniP (m_new None) or UniC step from grid point i to i + 1 of the given order."""
        corrector = m_new is not None
        c_x, c_m0, weights, c_new = sched.memo(
            (UniPC, self.variant, i, order, corrector),
            lambda: unipc_coefficients(
                sched.num.lam, sched.num.alpha, sched.num.sigma, i, order, self.variant, corrector
            ),
        )
        # c_x x + c_m0 m0 + sum_k w_k (m_k - m0) + c_new (m_new - m0), as one combination of x and the outputs.
        terms = list(zip(weights, history[-2::-1])) + ([(c_new, m_new)] if corrector else [])
        return weighted_sum((c_x, x), (c_m0 - sum(w for w, _ in terms), history[-1]), *terms)


def unipc_coefficients(lam: tuple, alpha: tuple, sigma: tuple, i: int, order: int, variant: str, corrector: bool):
    """The scalars of UniPC's step from grid point i:
    x_t = c_x x + c_m0 m0 + sum_k w_k (m_{-k} - m0) [+ c_new (m_new - m0)].

    They depend only on the grid, so they are solved in float64 on Python numbers and numpy (a
    3 x 3 system at most) and kept with the grid's coefficients (`GridCoefficients.memo`): a benchmark or an
    app's batches on one grid pay once, and no step makes a tensor operation, kernel launch or host
    sync for them.
    """
    h = lam[i + 1] - lam[i]
    hh = -h
    rks = [(lam[i - k] - lam[i]) / h for k in range(1, order)] + [1.0]
    h_phi_1 = math.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1
    b_h = hh if variant == "bh1" else math.expm1(hh)
    R, b = [], []
    for k in range(1, order + 1):
        R.append([rk ** (k - 1) for rk in rks])
        b.append(h_phi_k * math.factorial(k) / b_h)
        h_phi_k = h_phi_k / hh - 1 / math.factorial(k + 1)
    scale = -alpha[i + 1] * b_h
    c_x, c_m0 = sigma[i + 1] / sigma[i], -alpha[i + 1] * h_phi_1
    if not corrector:
        rhos = [] if order == 1 else [0.5] if order == 2 else np.linalg.solve(np.array(R)[:-1, :-1], b[:-1]).tolist()
        return c_x, c_m0, tuple(scale * r / rk for r, rk in zip(rhos, rks)), 0.0
    rhos = [0.5] if order == 1 else np.linalg.solve(np.array(R), b).tolist()
    return c_x, c_m0, tuple(scale * r / rk for r, rk in zip(rhos[:-1], rks)), scale * rhos[-1]
