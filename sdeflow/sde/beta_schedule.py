"""Variance-preserving schedules given by their log alpha(t): sigma^2 = 1 - alpha^2, and everything else follows.

With x_t = alpha x_0 + sigma z and alpha^2 + sigma^2 = 1, the linear SDE has drift coefficient
f = d log alpha / dt and g^2 = d sigma^2/dt - 2 f sigma^2 = -2 f. A schedule is then one
decreasing function and its inverse; the cosine and discrete-time (DDPM / ADM) schedules are such.
"""

from __future__ import annotations

import abc

import torch
import torch.nn.functional as F

from sdeflow.core.tensors import append_dims, batch_times
from sdeflow.sde.base import SDE


class VPSchedule(SDE):
    """A variance-preserving SDE defined by log alpha(t) (decreasing from 0) and its inverse; prior N(0, I)."""

    @abc.abstractmethod
    def t_from_log_alpha(self, log_alpha: torch.Tensor) -> torch.Tensor:
        """Inverse of `log_alpha`."""

    def g2(self, t):
        return -2 * self.f(t)

    def sigma(self, t):
        return torch.sqrt(-torch.expm1(2 * self.log_alpha(t)))

    def t_from_lambda(self, lam):
        # alpha^2 = sigmoid(2 lambda), so log alpha = -softplus(-2 lambda) / 2.
        return self.t_from_log_alpha(-0.5 * F.softplus(-2 * lam))

    @property
    def prior_std(self) -> float:
        return 1.0

    def discretize(self, x, t, dt=None):
        """DDPM step x_t = sqrt(1 - beta_i) x_{t-dt} + sqrt(beta_i) z with beta_i = 1 - alpha(t)^2 / alpha(t-dt)^2
        (exact)."""
        dt = self.T / self.N if dt is None else dt
        t = batch_times(t, x)
        t_prev = (t - batch_times(dt, x)).clamp_min(0)
        beta_step = -torch.expm1(2 * (self.log_alpha(t) - self.log_alpha(t_prev)))
        return append_dims(torch.sqrt(1 - beta_step) - 1, x.ndim) * x, torch.sqrt(beta_step)
