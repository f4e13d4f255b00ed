"""UniPC: unified predictor-corrector, data prediction (Zhao et al. 2023, Algorithms 1-3)."""

from __future__ import annotations

import math

import torch

from dataclasses import dataclass

from sdeflow.samplers.base import Multistep, Sampler
from sdeflow.samplers.exponential import Schedule, check_order, lower_order_final

# B(h) of the two published variants, as functions of hh = -h (data prediction).
B_OF_H = {"bh1": lambda hh: hh, "bh2": torch.expm1}


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

    def __init__(self, order: int = 2, variant: str = "bh2", corrector: bool = True, lower_order_final: bool = True, denoise: bool = False):
        super().__init__(denoise=denoise)
        self.p = check_order(order, (1, 2, 3), "UniPC")
        if variant not in B_OF_H:
            raise ValueError(f"UniPC variant must be one of {sorted(B_OF_H)}, got {variant!r}")
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
        m = score.x0(x, sched.t[i])
        if self.corrector and state.x_last is not None:
            # UniC: recompute the last step with the new model output included.
            x = self._update(state.x_last, state.history, sched, i - 1, state.last_order, m_new=m)
        history = (state.history + [m])[-self.p :]  # x0 predictions, newest last
        order = min(self.p, i + 1)
        if self.lower_order_final:
            order = lower_order_final(order, i, n)
        return self._update(x, history, sched, i, order), UniPCState(sched, history, x, order)

    def _update(self, x, history, sched: Schedule, i: int, order: int, m_new=None):
        """UniP (m_new None) or UniC step from grid point i to i + 1 of the given order.

        The coefficients are solved in float64 from the schedule (torch has no half-precision solve,
        and they depend only on the grid), then applied in the samples' dtype.
        """
        lam = sched.lam64
        h = lam[i + 1] - lam[i]
        m0 = history[-1]
        rks, d1s = [], []
        for k in range(1, order):
            rk = (lam[i - k] - lam[i]) / h
            rks.append(rk)
            d1s.append((history[-1 - k] - m0) / rk.to(x.dtype))
        rks = torch.stack(rks + [torch.ones((), dtype=h.dtype, device=h.device)])
        hh = -h
        h_phi_1 = torch.expm1(hh)
        h_phi_k = h_phi_1 / hh - 1
        b_h = B_OF_H[self.variant](hh)
        R, b = [], []
        for k in range(1, order + 1):
            R.append(rks ** (k - 1))
            b.append(h_phi_k * math.factorial(k) / b_h)
            h_phi_k = h_phi_k / hh - 1 / math.factorial(k + 1)
        R, b = torch.stack(R), torch.stack(b)
        a_t, s_t, s_s = sched.alpha64[i + 1], sched.sigma64[i + 1], sched.sigma64[i]
        x_t = (s_t / s_s).to(x.dtype) * x - (a_t * h_phi_1).to(x.dtype) * m0
        scale = (a_t * b_h).to(x.dtype)
        if m_new is None:
            if not d1s:
                return x_t
            rhos = torch.full((1,), 0.5, dtype=h.dtype, device=h.device) if order == 2 else torch.linalg.solve(R[:-1, :-1], b[:-1])
            return x_t - scale * sum(r * d for r, d in zip(rhos.to(x.dtype), d1s))
        rhos = (torch.full((1,), 0.5, dtype=h.dtype, device=h.device) if order == 1 else torch.linalg.solve(R, b)).to(x.dtype)
        res = sum((r * d for r, d in zip(rhos[:-1], d1s)), torch.zeros_like(x))
        return x_t - scale * (res + rhos[-1] * (m_new - m0))
