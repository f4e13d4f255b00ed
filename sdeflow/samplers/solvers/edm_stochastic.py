"""EDM's stochastic sampler (Karras et al. 2022, Algorithm 2), for any linear SDE."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from sdeflow.samplers.base import State
from sdeflow.samplers.coefficients import weighted_sum
from sdeflow.samplers.solvers.heun import EDMHeun, grid_point

__all__ = ["EDMStochastic"]


@dataclass
class ChurnState(State):
    """By step index, every churned step's raised time t^ (a tensor, for the model), the sigma~ it raises to, and t^'s
    (sigma~, alpha, coef) for `EDMHeun.heun`."""

    churn: dict = field(default_factory=dict)


class EDMStochastic(EDMHeun):
    """EDM's stochastic sampler (Karras et al. 2022, Algorithm 2): churn noise in, then a Heun step.

    At each step with S_tmin <= sigma~ <= S_tmax, noise is added to raise sigma~ by the factor
    1 + gamma, gamma = min(S_churn / N, sqrt(2) - 1), capped so that the raised time stays <= T.
    Reverse SDE (weakly), weak order 1, 2 score evaluations per step: the Heun step is second order
    on the ODE, but the churn's noise is a first-order splitting of the SDE.
    """

    stochastic = True
    order = 1

    def __init__(
        self,
        S_churn: float = 40.0,
        S_tmin: float = 0.05,
        S_tmax: float = 50.0,
        S_noise: float = 1.003,
        denoise: bool = False,
    ):
        super().__init__(denoise=denoise)
        if S_churn < 0 or S_tmin < 0 or S_tmax < S_tmin or S_noise <= 0:
            raise ValueError(
                f"need S_churn >= 0, 0 <= S_tmin <= S_tmax, S_noise > 0; got {S_churn}, {S_tmin}, {S_tmax}, {S_noise}"
            )
        self.S_churn, self.S_tmin, self.S_tmax, self.S_noise = (
            float(S_churn),
            float(S_tmin),
            float(S_tmax),
            float(S_noise),
        )

    def init(self, score, sde, x, sched):
        # The churned times depend only on the grid: computed here once, on the host in float64, and moved to the
        # device in one copy, so a step makes no scalar tensor arithmetic and no host sync for them.
        gamma = min(self.S_churn / (len(sched) - 1), 2**0.5 - 1)
        steps = [i for i in range(len(sched) - 1) if gamma > 0 and self.S_tmin <= sched.num.nsr[i] <= self.S_tmax]
        if not steps:
            return ChurnState(sched)
        sig_T = float(sde.nsr(torch.tensor(sde.T, dtype=torch.float64)))
        # Raise sigma~ to (1 + gamma) sigma~, never above sigma~(T).
        sig_hat = torch.tensor([min(sched.num.nsr[i] * (1 + gamma), sig_T) for i in steps], dtype=torch.float64)
        # The time in the samples' dtype, as the model will see it; its coefficients from that rounded time.
        t_hat = sde.t_from_nsr(sig_hat).to(sched.t.dtype).clamp(max=sde.T)
        t64 = t_hat.to(torch.float64)
        alpha, sigma = sde.alpha(t64), sde.sigma(t64)
        on_device = torch.stack([t_hat, alpha.to(t_hat.dtype), sigma.to(t_hat.dtype)]).to(sched.t.device)
        churn = {
            i: (t, sh, (n, a, (ad, sd)))
            for i, t, sh, n, a, ad, sd in zip(
                steps,
                on_device[0],
                sig_hat.tolist(),
                (sigma / alpha).tolist(),
                alpha.tolist(),
                on_device[1],
                on_device[2],
            )
        }
        return ChurnState(sched, churn)

    def step(self, score, sde, x, i, state, noise):
        sched = state.sched
        if i not in state.churn:
            return self.heun(
                score, sde, x, sched.t[i], sched.t[i + 1], grid_point(sched, i), grid_point(sched, i + 1)
            ), state
        t_hat, sig_hat, at_hat = state.churn[i]
        sig, a, a_hat = sched.num.nsr[i], sched.num.alpha[i], at_hat[1]
        # Add noise to raise sigma~ from sig to sig_hat: x~ + sqrt(sig_hat^2 - sig^2) S_noise z, at alpha(t^).
        z = noise.randn(x.shape, dtype=x.dtype, device=x.device)
        x = weighted_sum((a_hat / a, x), (a_hat * math.sqrt(max(sig_hat**2 - sig**2, 0.0)) * self.S_noise, z))
        return self.heun(score, sde, x, t_hat, sched.t[i + 1], at_hat, grid_point(sched, i + 1)), state
