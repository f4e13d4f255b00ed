"""Euler ancestral (k-diffusion's `sample_euler_ancestral`), for any linear SDE in EDM's scaled variables."""

from __future__ import annotations

import math

from sdeflow.samplers.base import Sampler, check_noise_scale

__all__ = ["EulerAncestral"]


def ancestral_split(sig: float, sig_next: float, eta: float) -> tuple[float, float]:
    """(sigma_down, sigma_up) of a step from sigma~ = sig to sig_next: a deterministic step to sigma_down,
    then fresh noise of scale sigma_up, with sigma_down^2 + sigma_up^2 = sig_next^2 (eta = 1: DDPM's posterior)."""
    up = min(sig_next, eta * math.sqrt(max(sig_next**2 * (sig**2 - sig_next**2) / sig**2, 0.0)))
    return math.sqrt(sig_next**2 - up**2), up


class EulerAncestral(Sampler):
    """An Euler step of dx~/dsigma~ = eps down to sigma_down, then noise up to sigma~_next, in x~ = x / alpha.

    Reverse SDE (eta > 0), 1 score evaluation per step, weak order 1. eta = 0 is EDM's Euler
    (first order on the probability-flow ODE).

    Args:
        eta: the share of the step's noise drawn afresh (1: the ancestral posterior's variance).
        s_noise: a multiplier on the fresh noise (EDM's S_noise).
    """

    order = 1
    nfe_per_step = 1

    def __init__(self, eta: float = 1.0, s_noise: float = 1.0, denoise: bool = False):
        super().__init__(denoise=denoise)
        self.eta, self.s_noise, self.stochastic = check_noise_scale(eta, s_noise, "EulerAncestral")

    def step(self, score, sde, x, i, state, noise):
        sched = state.sched
        num = sched.num
        sig, sig_next = num.nsr[i], num.nsr[i + 1]
        down, up = ancestral_split(sig, sig_next, self.eta)
        eps = score.eps(x, sched.t[i], sched.coef[i])
        x_scaled = x / num.alpha[i] + (down - sig) * eps
        if up > 0 and self.s_noise > 0:
            x_scaled = x_scaled + (up * self.s_noise) * noise.increment(
                x.shape, num.t[i], num.t[i + 1], dtype=x.dtype, device=x.device
            )
        return num.alpha[i + 1] * x_scaled, state
