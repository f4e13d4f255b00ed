"""DPM-Solver++(3M) SDE (k-diffusion's `sample_dpmpp_3m_sde`), for any linear SDE."""

from __future__ import annotations

import math

from sdeflow.samplers.base import Multistep, Sampler, check_noise_scale

__all__ = ["DPMSolverPP3MSDE"]


class DPMSolverPP3MSDE(Sampler):
    """Third-order multistep data-prediction solver of the reverse SDE with noise scale eta.

    In x~ = x / alpha and lambda: x~_t = e^{-(1+eta) h} x~_s + (1 - e^{-(1+eta) h}) D0 + phi_2 D1 - phi_3 D2
    + sigma~_t sqrt(1 - e^{-2 eta h}) z, with D1, D2 the first and second divided differences of the
    earlier x0 predictions in lambda and phi_k taken at (1 + eta) h. eta = 0 is DPM-Solver++(3M) without
    its lower-order final steps (`DPMSolverPP(3, lower_order_final=False)`), to rounding; eta = 1 integrates the reverse SDE (weak order 1). 1 evaluation per step;
    the first two steps warm up at orders 1 and 2.

    Args:
        eta: the noise scale (0: the probability-flow ODE).
        s_noise: a multiplier on the noise.
    """

    nfe_per_step = 1
    warmup_order = 1

    def __init__(self, eta: float = 1.0, s_noise: float = 1.0, denoise: bool = False):
        super().__init__(denoise=denoise)
        self.eta, self.s_noise, self.stochastic = check_noise_scale(eta, s_noise, "DPMSolverPP3MSDE")
        self.order = 1 if self.stochastic else 3

    def init(self, score, sde, x, sched):
        return Multistep(sched)

    def step(self, score, sde, x, i, state, noise):
        sched = state.sched
        num = sched.num
        m0 = score.x0(x, sched.t[i], sched.coef[i])
        h = num.h[i]
        h_eta = h * (1 + self.eta)
        a_t = num.alpha[i + 1]
        # In x: alpha_t x~_t, where alpha_t / alpha_s e^{-(1+eta) h} = sigma_t / sigma_s e^{-eta h}.
        x = (num.sigma[i + 1] / num.sigma[i] * math.exp(-self.eta * h)) * x - (a_t * math.expm1(-h_eta)) * m0
        phi_2 = math.expm1(-h_eta) / h_eta + 1
        history = state.history  # earlier x0 predictions, newest last
        if len(history) >= 2:
            r0, r1 = num.h[i - 1] / h, num.h[i - 2] / h
            d1_0, d1_1 = (m0 - history[-1]) / r0, (history[-1] - history[-2]) / r1
            d1 = d1_0 + (d1_0 - d1_1) * (r0 / (r0 + r1))
            d2 = (d1_0 - d1_1) / (r0 + r1)
            phi_3 = phi_2 / h_eta - 0.5
            x = x + (a_t * phi_2) * d1 - (a_t * phi_3) * d2
        elif history:
            # The second-order warm-up step in DPM-Solver++(2M)'s midpoint form, as our 2M and 2M-SDE
            # solvers take it (k-diffusion takes phi_2 D1 here; both are second order).
            x = x - (0.5 * a_t * math.expm1(-h_eta) / (num.h[i - 1] / h)) * (m0 - history[-1])
        if self.stochastic:
            scale = num.sigma[i + 1] * math.sqrt(-math.expm1(-2 * self.eta * h)) * self.s_noise
            x = x + scale * noise.increment(x.shape, num.t[i], num.t[i + 1], dtype=x.dtype, device=x.device)
        return x, Multistep(sched, (history + [m0])[-2:])
