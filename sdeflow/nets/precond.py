"""EDM's preconditioned denoiser (Karras et al. 2022, Table 1), usable on any linear SDE."""

from __future__ import annotations

import torch
from torch import nn

from sdeflow.core.tensors import append_dims


class EDMPrecond(nn.Module):
    """D(x; sigma) = c_skip x~ + c_out F(c_in x~, c_noise) in EDM's scaled variables
    x~ = x / alpha, sigma~ = sigma / alpha.

    Returns the clean-data estimate: read it with `sdeflow.X0Prediction()`.

    Args:
        net: F(x, c_noise), e.g. an `NCSNpp`.
        sde: the SDE whose alpha(t), sigma(t) give sigma~.
        sigma_data: the data's standard deviation.
    """

    def __init__(self, net: nn.Module, sde, sigma_data: float = 0.5):
        super().__init__()
        if not sigma_data > 0:
            raise ValueError(f"sigma_data must be positive, got {sigma_data}")
        self.net, self.sde, self.sigma_data = net, sde, float(sigma_data)

    @property
    def label_dim(self) -> int:
        """The wrapped network's number of classes (0: unconditional)."""
        return getattr(self.net, "label_dim", 0)

    def forward(self, x: torch.Tensor, t: torch.Tensor, **cond) -> torch.Tensor:
        alpha, sigma = self.sde.alpha(t), self.sde.sigma(t)
        s = sigma / alpha
        sd2 = self.sigma_data**2
        c_skip = sd2 / (s**2 + sd2)
        c_out = s * self.sigma_data / (s**2 + sd2).sqrt()
        c_in = 1 / (s**2 + sd2).sqrt()
        c_noise = s.log() / 4
        x_scaled = x / append_dims(alpha, x.ndim)
        F_x = self.net(append_dims(c_in, x.ndim) * x_scaled, c_noise, **cond)  # labels pass through
        return append_dims(c_skip, x.ndim) * x_scaled + append_dims(c_out, x.ndim) * F_x
