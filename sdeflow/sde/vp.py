"""Variance-preserving (VP) and sub-VP SDEs with a linear beta schedule (Song et al. 2021, eqs. 11 and 29)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sdeflow.core.tensors import append_dims, batch_times
from sdeflow.sde.base import SDE


class _LinearBetaSDE(SDE):
    """Shared linear schedule beta(t) = beta_min + t (beta_max - beta_min) and drift -beta/2."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, T: float = 1.0, eps: float = 1e-3, N: int = 1000):
        super().__init__(T=T, eps=eps, N=N)
        if beta_min < 0 or beta_max < 0:
            raise ValueError(f"betas must be non-negative, got beta_min={beta_min}, beta_max={beta_max}")
        if not beta_max > 0 or beta_max < beta_min:
            raise ValueError(
                f"need 0 <= beta_min <= beta_max and beta_max > 0, got beta_min={beta_min}, beta_max={beta_max}"
            )
        self.beta_min = float(beta_min)
        self.beta_max = float(beta_max)

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def int_beta(self, t: torch.Tensor) -> torch.Tensor:
        """Integral of beta from 0 to t."""
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2

    def t_from_int_beta(self, b: torch.Tensor) -> torch.Tensor:
        # Root of (delta/2) t^2 + beta_min t - b = 0, written so that delta = 0 and small b stay exact.
        delta = self.beta_max - self.beta_min
        return 2 * b / (self.beta_min + torch.sqrt(self.beta_min**2 + 2 * delta * b))

    def f(self, t):
        return -0.5 * self.beta(t)

    def log_alpha(self, t):
        return -0.5 * self.int_beta(t)


class VPSDE(_LinearBetaSDE):
    """dx = -beta(t)/2 x dt + sqrt(beta(t)) dW: the continuous DDPM; prior N(0, I)."""

    def g2(self, t):
        return self.beta(t)

    def sigma(self, t):
        return torch.sqrt(-torch.expm1(-self.int_beta(t)))

    def t_from_lambda(self, lam):
        # alpha^2 = sigmoid(2 lambda), so int beta = -2 log alpha = softplus(-2 lambda).
        return self.t_from_int_beta(F.softplus(-2 * lam))

    @property
    def prior_std(self) -> float:
        return 1.0

    def discretize(self, x, t, dt=None):
        """DDPM step x_t = sqrt(1 - beta_i) x_{t-dt} + sqrt(beta_i) z with the exact
        beta_i = 1 - alpha(t)^2 / alpha(t-dt)^2.

        The reference's beta_i = beta(t) dt is this to first order in dt; the exact form stays
        valid (beta_i < 1) for steps of any length, where the reference's goes negative under the root.
        """
        dt = self.T / self.N if dt is None else dt
        t = batch_times(t, x)
        t_prev = (t - batch_times(dt, x)).clamp_min(0)
        beta_step = -torch.expm1(self.int_beta(t_prev) - self.int_beta(t))
        f = append_dims(torch.sqrt(1 - beta_step) - 1, x.ndim) * x
        return f, torch.sqrt(beta_step)


class SubVPSDE(_LinearBetaSDE):
    """dx = -beta(t)/2 x dt + sqrt(beta(t) (1 - exp(-2 int_0^t beta))) dW; prior N(0, I)."""

    def g2(self, t):
        return self.beta(t) * -torch.expm1(-2 * self.int_beta(t))

    def sigma(self, t):
        return -torch.expm1(-self.int_beta(t))

    def t_from_lambda(self, lam):
        # u = e^-lam = (1 - alpha^2) / alpha solves alpha^2 + u alpha - 1 = 0, so -log alpha = asinh(u / 2):
        # exact for small u, where a difference of logs loses every digit in float32 (t = 1e-3 came back 0.6% off).
        # For u > e^30, asinh(u / 2) = log u.
        u_half = 0.5 * torch.exp(-lam.clamp_min(-30.0))
        neg_log_alpha = torch.where(lam < -30.0, -lam, torch.asinh(u_half))
        return self.t_from_int_beta(2 * neg_log_alpha)

    @property
    def prior_std(self) -> float:
        return 1.0
