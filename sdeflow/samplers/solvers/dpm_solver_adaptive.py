"""Adaptive DPM-Solver (Lu et al. 2022, Algorithm 4): DPM-Solver-12 or -23 with error control in lambda."""

from __future__ import annotations

import math

import torch

from sdeflow.samplers.adaptive import StepSizeController, error_norm
from sdeflow.samplers.base import Sampler, SolverError, non_finite
from sdeflow.samplers.exponential import dpm_solver_stages, stages, time_at_lambda

__all__ = ["DPMSolverAdaptive"]


class DPMSolverAdaptive(Sampler):
    """Embedded pair of DPM-Solver-(k-1) and -k sharing their evaluations; the step in lambda adapts.

    Probability-flow ODE, order `order` (2: DPM-Solver-12, 3: DPM-Solver-23), `order` score
    evaluations per attempted step. The error E = RMS((x_k - x_{k-1}) / delta), delta =
    max(atol, rtol max(|x_{k-1}|, |x_prev|)), is the worst over the batch; steps with E <= 1 are
    accepted and h <- min(theta h E^(-1/k), what is left). Runs from the grid's first to last time.
    """

    nfe_per_step = None
    stochastic = False
    reversible = False  # its step-size control runs from T towards eps

    def __init__(self, order: int = 3, rtol: float = 0.05, atol: float = 0.0078, h_init: float = 0.05, theta: float = 0.9,
                 max_steps: int = 10_000, denoise: bool = False):
        super().__init__(denoise=denoise)
        if order not in (2, 3):
            raise ValueError(f"DPMSolverAdaptive supports order 2 or 3, got {order}")
        if not (rtol > 0 and atol > 0 and h_init > 0 and 0 < theta <= 1):
            raise ValueError("need rtol > 0, atol > 0, h_init > 0 and 0 < theta <= 1")
        self.order, self.rtol, self.atol, self.h_init, self.theta = int(order), float(rtol), float(atol), float(h_init), float(theta)
        self.max_steps = int(max_steps)

    def solve(self, score, sde, x, sched, noise, record):
        controller = StepSizeController(self.theta, 1 / self.order)
        lam = sde.lambda_(sched.t.to(torch.float64))
        lam_s, lam_end = lam[0].to(x.dtype), lam[-1].to(x.dtype)
        s = sched.t[0]
        h = torch.as_tensor(self.h_init, dtype=x.dtype)
        x_prev = x
        for k in range(self.max_steps):
            if lam_end - lam_s <= 1e-9 * max(1.0, float(lam_end.abs())):
                break
            h = torch.minimum(h, lam_end - lam_s)
            t = time_at_lambda(sde, lam_s + h, x)
            lower, higher = dpm_solver_stages(score, x, stages(sde, s, t, lam_s, h, self.order, x), self.order)[-2:]
            err = float(error_norm(higher - lower, lower, x_prev, self.rtol, self.atol).max())
            if math.isnan(err):
                # Only NaN or infinity in the solutions gives a NaN norm; shrinking the step would not help.
                raise non_finite("DPMSolverAdaptive", f"at attempted step {k + 1} from t = {float(s):.6g}")
            if err <= 1:
                x, x_prev, s, lam_s = higher, lower, t, lam_s + h
            h = controller.propose(h, err)
        else:
            raise SolverError(f"DPMSolverAdaptive did not reach the end in {self.max_steps} steps; loosen rtol/atol")
        return record(x, len(sched) - 1)
