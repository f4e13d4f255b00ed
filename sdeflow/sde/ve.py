"""Variance-exploding (VE) SDE, the continuous SMLD / NCSN (Song et al. 2021, eq. 9)."""

from __future__ import annotations

import math

import torch

from sdeflow.core.tensors import batch_times
from sdeflow.sde.base import SDE


class VESDE(SDE):
    """dx = sqrt(d sigma^2/dt) dW with sigma(t) = sigma_min (sigma_max / sigma_min)^t; prior N(0, sigma_max^2 I)."""

    def __init__(
        self, sigma_min: float = 0.01, sigma_max: float = 50.0, T: float = 1.0, eps: float = 1e-5, N: int = 1000
    ):
        super().__init__(T=T, eps=eps, N=N)
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")
        self.sigma_min = float(sigma_min)
        self.sigma_max = float(sigma_max)

    @property
    def _log_ratio(self) -> float:
        return math.log(self.sigma_max / self.sigma_min) / self.T

    def f(self, t):
        # 0 * t rather than zeros_like(t): keeps t's autograd graph, so derivatives in t stay defined.
        return 0 * t

    def g2(self, t):
        return self.sigma(t) ** 2 * (2 * self._log_ratio)

    def log_alpha(self, t):
        return 0 * t

    def sigma(self, t):
        return self.sigma_min * torch.exp(t * self._log_ratio)

    def t_from_lambda(self, lam):
        return (-lam - math.log(self.sigma_min)) / self._log_ratio

    @property
    def prior_std(self) -> float:
        return self.sigma_max

    def discretize(self, x, t, dt=None):
        """SMLD step x_{i+1} = x_i + sqrt(sigma_{i+1}^2 - sigma_i^2) z between the real neighbouring times."""
        dt = self.T / self.N if dt is None else dt
        t = batch_times(t, x)
        t_prev = t - batch_times(dt, x)
        # The reference sets the noise level below the first step to zero.
        sigma_prev = torch.where(t_prev >= 0, self.sigma(t_prev.clamp_min(0)), torch.zeros_like(t))
        return torch.zeros_like(x), torch.sqrt(self.sigma(t) ** 2 - sigma_prev**2)
