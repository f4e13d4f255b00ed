"""DDIM with eta > 0 (Song, Meng & Ermon 2021, eq. 12): a fraction of each step's noise drawn afresh."""

from __future__ import annotations

import math

from sdeflow.samplers.base import Sampler

__all__ = ["StochasticDDIM"]


class StochasticDDIM(Sampler):
    """DDIM with stochasticity eta in [0, 1]: x_t = alpha_t x0 + sqrt(sigma_t^2 - c^2) eps + c z.

    c = eta sigma_t sqrt(1 - e^{-2h}), h = lambda_t - lambda_s: eta = 1 is ancestral sampling (DDPM's
    posterior q(x_t | x_s, x0)), eta = 0 is deterministic DDIM. Written through alpha and sigma, so
    it serves any linear SDE. 1 score evaluation per step; weak order 1 (eta > 0), order 1 (eta = 0).
    """

    order = 1
    nfe_per_step = 1

    def __init__(self, eta: float = 1.0, denoise: bool = False):
        super().__init__(denoise=denoise)
        if not 0 <= eta <= 1:
            raise ValueError(f"eta must lie in [0, 1] (0: DDIM, 1: ancestral sampling), got {eta}")
        self.eta = float(eta)
        self.stochastic = self.eta > 0

    def step(self, score, sde, x, i, state, noise):
        sched = state.sched
        num = sched.num
        eps, x0 = score.eps_x0(x, sched.t[i], sched.coef[i])
        s_t = num.sigma[i + 1]
        c = self.eta * s_t * math.sqrt(-math.expm1(-2 * num.h[i]))
        x = num.alpha[i + 1] * x0 + math.sqrt(max(s_t**2 - c**2, 0.0)) * eps
        if c > 0:
            x = x + c * noise.increment(x.shape, num.t[i], num.t[i + 1], dtype=x.dtype, device=x.device)
        return x, state
