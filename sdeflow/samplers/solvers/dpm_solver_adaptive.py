"""Adaptive DPM-Solver (Lu et al. 2022, Algorithm 4): DPM-Solver-12 or -23 with error control in lambda."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sdeflow.samplers.adaptive import StepSizeController, error_norm
from sdeflow.samplers.base import Adaptive, Sampler, Step
from sdeflow.samplers.exponential import dpm_solver_stages, stages, time_at_lambda

__all__ = ["DPMSolverAdaptive"]


@dataclass
class InLambda(Adaptive):
    """The adaptive DPM-Solver's state: `Adaptive`'s, with h a step in lambda, `lam` the lambda reached (the sum of
    the steps taken) and `ends` lambda at every grid point, the ends of the steps (0-d tensors in the grid's dtype)."""

    lam: torch.Tensor
    ends: tuple


class DPMSolverAdaptive(Sampler):
    """Embedded pair of DPM-Solver-(k-1) and -k sharing their evaluations; the step in lambda adapts.

    Probability-flow ODE, order `order` (2: DPM-Solver-12, 3: DPM-Solver-23), `order` score
    evaluations per attempted step. The error E = RMS((x_k - x_{k-1}) / delta), delta =
    max(atol, rtol max(|x_{k-1}|, |x_prev|)), is the worst over the batch; steps with E <= 1 are
    accepted and h <- min(theta h E^(-1/k), what is left). Runs through every grid point given
    (`plan` gives the grid's two ends).
    """

    nfe_per_step = None
    stochastic = False
    reversible = False  # its step-size control runs from T towards eps

    def __init__(
        self,
        order: int = 3,
        rtol: float = 0.05,
        atol: float = 0.0078,
        h_init: float = 0.05,
        theta: float = 0.9,
        max_steps: int = 10_000,
        denoise: bool = False,
    ):
        super().__init__(denoise=denoise)
        if order not in (2, 3):
            raise ValueError(f"DPMSolverAdaptive supports order 2 or 3, got {order}")
        if not (rtol > 0 and atol > 0 and h_init > 0 and 0 < theta <= 1):
            raise ValueError("need rtol > 0, atol > 0, h_init > 0 and 0 < theta <= 1")
        self.order, self.rtol, self.atol, self.h_init = int(order), float(rtol), float(atol), float(h_init)
        # h <- theta h E^(-1/order), E the batch's worst error norm.
        self.controller = StepSizeController(float(theta), 1 / self.order)
        self.max_steps = int(max_steps)

    def init(self, score, sde, x, sched):
        ends = sched.memo((DPMSolverAdaptive, "lambda"), lambda: sde.lambda_(sched.t.double()).to(x.dtype).unbind())
        h = torch.as_tensor(self.h_init, dtype=x.dtype, device=x.device)
        return InLambda(sched, sched.t[0], h, x, ends[0], ends)

    def step(self, score, sde, x, i, state, noise):
        lam_s = state.lam
        h = torch.minimum(state.h, state.ends[i + 1] - lam_s)
        t = time_at_lambda(sde, lam_s + h, x)
        lower, higher = dpm_solver_stages(score, x, stages(sde, state.t, t, lam_s, h, self.order, x), self.order)[-2:]
        err = float(error_norm(higher - lower, lower, state.lower, self.rtol, self.atol).max())
        return Step(higher, InLambda(state.sched, t, h, lower, lam_s + h, state.ends), err)

    def reached(self, state, i):
        lam_end = state.ends[i + 1]
        return bool(lam_end - state.lam <= 1e-9 * max(1.0, float(lam_end.abs())))
