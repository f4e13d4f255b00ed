"""A network trained on one SDE, read at any point of another: the input scaling, noise label and output of its
training.

Every linear SDE passes through the same scaled variables x~ = x / alpha and sigma~ = sigma / alpha
(Karras et al. 2022, section 2), so a network is asked at the time of its own training SDE that has
the same sigma~, on its own scale of x. A scaling gives, for sigma~, the network's input scale and
noise label together (`inputs(s) -> (c_in, c_noise)`, one solve for the training time), and says
what its output is: `noise_sign` * eps. The denoiser D(x~; sigma~) = x~ - noise_sign sigma~ F(c_in x~,
c_noise) then works on any sdeflow SDE and with every solver (`X0Prediction` reads it).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from sdeflow.core.tensors import append_dims


class TimeLabels:
    """A noise-predicting network trained on `sde` and labelled with `scale * t` (score_sde's continuous VP and
    sub-VP models: 999 t): input alpha(t) x~, output eps, at the training time t with sigma(t) / alpha(t) = sigma~."""

    noise_sign = 1.0

    def __init__(self, sde, scale: float = 999.0):
        self.sde, self.scale = sde, float(scale)

    def inputs(self, s):
        t = self.sde.t_from_nsr(s)
        return self.sde.alpha(t), self.scale * t

    def __repr__(self) -> str:
        return f"TimeLabels({self.sde!r}, scale={self.scale:g})"


class LogSigmaLabels:
    """A VE network labelled with log(sigma / unit) whose output is sigma times the score, that is -eps (score_sde's
    continuous NCSN++ before its division by sigma, and EDM's VE baselines). `unit = 2`: score_sde's VE models
    were trained on data in [0, 1], whose sigma is half of sdeflow's on data in [-1, 1]; the network itself
    maps its input to [-1, 1] first, so it reads sdeflow's x unchanged."""

    noise_sign = -1.0

    def __init__(self, unit: float = 2.0):
        self.unit = float(unit)

    def inputs(self, s):
        return torch.ones_like(s), torch.log(s) - math.log(self.unit)

    def __repr__(self) -> str:
        return f"LogSigmaLabels(unit={self.unit:g})"


class IndexLabels:
    """iDDPM's discrete model as EDM reads it (`iDDPMPrecond`): eps-predicting, input x~ / sqrt(1 + sigma~^2), labelled
    M - 1 - j with u_j the table's noise level nearest sigma~ (u decreasing from u_0; the network saw only these)."""

    noise_sign = 1.0

    def __init__(self, u: torch.Tensor, M: int = 1000):
        self.u, self.M = u.detach().float().cpu(), int(M)

    def inputs(self, s):
        index = (s.float()[:, None] - self.u.to(s.device)[None, :]).abs().argmin(dim=1)
        return 1 / (s**2 + 1).sqrt(), (self.M - 1 - index).to(s.dtype)

    def __repr__(self) -> str:
        return f"IndexLabels(M={self.M})"


class ScaledDenoiser(nn.Module):
    """D(x~; sigma~) = x~ - noise_sign sigma~ F(c_in x~, c_noise) in the scaled variables of the SDE that samples
    (`sde`).

    `scaling` (`TimeLabels`, `LogSigmaLabels`, `IndexLabels`) says how the network was trained. Read the output with
    `X0Prediction`.
    """

    def __init__(self, net: nn.Module, sde, scaling):
        super().__init__()
        self.net, self.sde, self.scaling = net, sde, scaling
        self.label_dim = getattr(net, "label_dim", 0)

    def network(self, x, t, cond) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x~, sigma~, F) at the sampling SDE's (x, t)."""
        alpha, s = self.sde.alpha(t), self.sde.nsr(t)
        x_scaled = x / append_dims(alpha, x.ndim)
        c_in, c_noise = self.scaling.inputs(s)
        return x_scaled, s, self.net(append_dims(c_in, x.ndim) * x_scaled, c_noise, **cond)

    def forward(self, x, t, **cond):
        x_scaled, s, out = self.network(x, t, cond)
        return x_scaled - append_dims(self.scaling.noise_sign * s, x.ndim) * out


class ScaledNoise(ScaledDenoiser):
    """The same network read as its noise, eps = (x~ - D) / sigma~ = noise_sign F, without forming D.

    Read with `EpsPrediction`. At small sigma, reading D back as a score subtracts two nearly equal
    numbers and loses the network's digits in float32 (at score_sde's sub-VP t = 1e-3, sigma = 1e-4,
    most of them); this is also how score_sde itself reads its networks (score = -F / sigma).
    """

    def forward(self, x, t, **cond):
        _, _, out = self.network(x, t, cond)
        return self.scaling.noise_sign * out
