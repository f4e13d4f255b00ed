"""The single-step DPM-Solver++ SDE (k-diffusion's `sample_dpmpp_sde`), for any linear SDE."""

from __future__ import annotations

import math

import torch

from sdeflow.samplers.base import Sampler, check_noise_scale
from sdeflow.samplers.solvers.euler_ancestral import ancestral_split

__all__ = ["DPMSolverPPSDESinglestep"]


class DPMSolverPPSDESinglestep(Sampler):
    """Two stages per step in lambda: an ancestral data-prediction step to the point r h, then the full step
    with the x0 predictions blended, (1 - 1/(2r)) D_s + 1/(2r) D_mid, each followed by its fresh noise.

    In x~ = x / alpha and sigma~ = e^{-lambda}: each stage takes a first-order step to sigma_down and adds
    noise of scale sigma_up (`ancestral_split`). eta = 0 is the second-order single-step DPM-Solver++(2S);
    eta > 0 samples the reverse SDE (weak order 1). 2 score evaluations per step.

    Args:
        eta: the share of each stage's noise drawn afresh (1: the ancestral posterior's).
        s_noise: a multiplier on the noise.
        r: where the intermediate stage sits, as a fraction of the lambda step.
    """

    nfe_per_step = 2

    def __init__(self, eta: float = 1.0, s_noise: float = 1.0, r: float = 0.5, denoise: bool = False):
        super().__init__(denoise=denoise)
        eta, s_noise, stochastic = check_noise_scale(eta, s_noise, "DPMSolverPPSDESinglestep")
        if not 0 < r < 1:
            raise ValueError(f"DPMSolverPPSDESinglestep needs 0 < r < 1, got r={r}")
        self.eta, self.s_noise, self.r, self.stochastic = eta, s_noise, float(r), stochastic
        self.order = 1 if self.stochastic else 2

    def _stage(self, x_scaled, sig, sig_to, d, t, t_to, noise):
        """A first-order step of x~ from sigma~ = sig towards sig_to with the x0 prediction d, and its noise."""
        down, up = ancestral_split(sig, sig_to, self.eta)
        # Exact for constant d: x~ e^{-(l_down - l)} + (1 - e^{-(l_down - l)}) d, with e^{-(l_down - l)} = down / sig.
        x_scaled = (down / sig) * x_scaled + (1 - down / sig) * d
        if self.stochastic and up > 0:
            x_scaled = x_scaled + (up * self.s_noise) * noise.increment(
                x_scaled.shape, t, t_to, dtype=x_scaled.dtype, device=x_scaled.device
            )
        return x_scaled

    def step(self, score, sde, x, i, state, noise):
        sched = state.sched
        num = sched.num
        sig, sig_next = num.nsr[i], num.nsr[i + 1]
        lam_mid = num.lam[i] + self.r * num.h[i]
        sig_mid = math.exp(-lam_mid)
        t_mid = float(sde.t_from_lambda(torch.tensor(lam_mid, dtype=torch.float64)))
        a_mid = float(sde.alpha(torch.tensor(t_mid, dtype=torch.float64)))
        x_scaled = x / num.alpha[i]
        d = score.x0(x, sched.t[i], sched.coef[i])
        x_mid = self._stage(x_scaled, sig, sig_mid, d, num.t[i], t_mid, noise)
        d_mid = score.x0(a_mid * x_mid, torch.tensor(t_mid, dtype=x.dtype, device=x.device))
        fac = 1 / (2 * self.r)
        x_scaled = self._stage(x_scaled, sig, sig_next, (1 - fac) * d + fac * d_mid, num.t[i], num.t[i + 1], noise)
        return num.alpha[i + 1] * x_scaled, state
