"""What the adaptive solvers share: one error norm and one step-size controller.

An embedded pair of solutions gives a local error estimate; its norm, relative to the solution's
size, decides whether a step is accepted and how long the next one is (Hairer, Norsett & Wanner,
Solving ODEs I, II.4). An adaptive solver's `step` returns the norm with its proposal, and the one
loop (`Sampler.solve`) asks the solver's controller what to take and what to try next.
`DPMSolverAdaptive` controls one step for the whole batch (the worst sample's norm), `GottaGoFast`
one step per sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def error_norm(diff: torch.Tensor, a: torch.Tensor, b: torch.Tensor, rtol: float, atol: float) -> torch.Tensor:
    """Per-sample RMS of diff / delta, delta = max(atol, rtol max(|a|, |b|)): below 1 means within tolerance."""
    delta = torch.clamp(rtol * torch.maximum(a.abs(), b.abs()), min=atol)
    return (diff / delta).flatten(1).pow(2).mean(1).sqrt()


@dataclass(frozen=True)
class StepSizeController:
    """The next step h <- safety h E^(-exponent) from the error norm E (an I-controller); E = 0 grows h by
    `max_growth`."""

    safety: float
    exponent: float
    max_growth: float = 10.0

    def adapt(self, h, err):
        """(accept, next h) after an attempt of size h with error norm err: accept where err <= 1 (a bool for one
        number, a bool tensor per sample), and the next step from this one (`propose`)."""
        return err <= 1, self.propose(h, err)

    def propose(self, h, err):
        """The next step size from the current one and its error norm (per sample when both are tensors)."""
        if isinstance(err, torch.Tensor):
            grow = torch.where(err > 0, err.clamp_min(1e-10) ** (-self.exponent), torch.full_like(err, self.max_growth))
        else:
            grow = self.max_growth if err == 0 else max(err, 1e-10) ** (-self.exponent)
        return self.safety * h * grow
