"""EDM's noising (Karras et al. 2022): sigma(t) = t and no scaling, so time is the noise level."""

from __future__ import annotations

import torch

from sdeflow.core.tensors import batch_times
from sdeflow.sde.base import SDE


class EDMSDE(SDE):
    """dx = sqrt(2 t) dW: x_t = x_0 + t z on [sigma_min, sigma_max]; prior N(0, sigma_max^2 I).

    The network's own scaling (c_in, c_out, c_skip and c_noise = log(sigma) / 4) is `sdeflow.nets.EDMPrecond`,
    which reads sigma and alpha from any SDE, this one included.
    """

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0, N: int = 1000):
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")
        super().__init__(T=sigma_max, eps=sigma_min, N=N)

    def f(self, t):
        return 0 * t

    def g2(self, t):
        return 2 * t

    def log_alpha(self, t):
        return 0 * t

    def sigma(self, t):
        return t + 0.0  # a new tensor, as every other schedule returns

    def t_from_lambda(self, lam):
        return torch.exp(-lam)

    @property
    def prior_std(self) -> float:
        return self.T

    def discretize(self, x, t, dt=None):
        """x_t = x_{t-dt} + sqrt(t^2 - (t - dt)^2) z: the exact increment of the noise level."""
        dt = self.T / self.N if dt is None else dt
        t = batch_times(t, x)
        t_prev = (t - batch_times(dt, x)).clamp_min(0)
        return torch.zeros_like(x), torch.sqrt(t**2 - t_prev**2)
