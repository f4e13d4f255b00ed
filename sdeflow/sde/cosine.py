"""The cosine schedule of Nichol & Dhariwal (2021, eq. 17) in continuous time."""

from __future__ import annotations

import math

import torch

from sdeflow.sde.beta_schedule import VPSchedule


class CosineVPSDE(VPSchedule):
    """alpha(t)^2 = cos^2(theta(t)) / cos^2(theta(0)), theta(t) = (t + s) / (1 + s) * pi / 2; variance preserving.

    alpha reaches 0 at t = 1, where the drift is infinite, so T stops short of it: T = 0.9946 is
    DPM-Solver's choice for this schedule (alpha(T) = 0.0085).

    Args:
        s: the offset that keeps beta small near t = 0 (0.008 in the paper).
        T, eps, N: as for every `SDE`.
    """

    def __init__(self, s: float = 0.008, T: float = 0.9946, eps: float = 1e-3, N: int = 1000):
        super().__init__(T=T, eps=eps, N=N)
        if not s >= 0:
            raise ValueError(f"s must be non-negative, got {s}")
        if not T < 1:
            raise ValueError(f"the cosine schedule needs T < 1 (alpha(1) = 0), got T={T}")
        self.s = float(s)

    def _theta(self, t):
        return (t + self.s) / (1 + self.s) * (math.pi / 2)

    def log_alpha(self, t):
        return torch.log(torch.cos(self._theta(t))) - math.log(math.cos(self.s / (1 + self.s) * math.pi / 2))

    def f(self, t):
        return -torch.tan(self._theta(t)) * (math.pi / 2 / (1 + self.s))

    def t_from_log_alpha(self, log_alpha):
        cos = torch.exp(log_alpha + math.log(math.cos(self.s / (1 + self.s) * math.pi / 2)))
        return torch.arccos(cos) * (2 * (1 + self.s) / math.pi) - self.s
