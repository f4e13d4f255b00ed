"""EDM's stochastic sampler (Karras et al. 2022, Algorithm 2), for any linear SDE."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sdeflow.samplers.base import State
from sdeflow.samplers.heun import EDMHeun


@dataclass
class ChurnState(State):
    """The churn's bounds for this grid: the noise increase gamma and sigma~ at T, which it never exceeds."""

    gamma_max: float = 0.0
    T: torch.Tensor | None = None
    sig_T: torch.Tensor | None = None


class EDMStochastic(EDMHeun):
    """EDM's stochastic sampler (Karras et al. 2022, Algorithm 2): churn noise in, then a Heun step.

    At each step with S_tmin <= sigma~ <= S_tmax, noise is added to raise sigma~ by the factor
    1 + gamma, gamma = min(S_churn / N, sqrt(2) - 1), capped so that the raised time stays <= T.
    Reverse SDE (weakly), 2 score evaluations per step.
    """

    stochastic = True

    def __init__(self, S_churn: float = 40.0, S_tmin: float = 0.05, S_tmax: float = 50.0, S_noise: float = 1.003, denoise: bool = False):
        super().__init__(denoise=denoise)
        if S_churn < 0 or S_tmin < 0 or S_tmax < S_tmin or S_noise <= 0:
            raise ValueError(f"need S_churn >= 0, 0 <= S_tmin <= S_tmax, S_noise > 0; got {S_churn}, {S_tmin}, {S_tmax}, {S_noise}")
        self.S_churn, self.S_tmin, self.S_tmax, self.S_noise = float(S_churn), float(S_tmin), float(S_tmax), float(S_noise)

    def init(self, score, sde, x, sched):
        T = torch.as_tensor(sde.T, dtype=sched.t.dtype, device=sched.t.device)
        return ChurnState(sched, min(self.S_churn / (len(sched) - 1), 2**0.5 - 1), T, sde.nsr(T))

    def step(self, score, sde, x, i, state, noise):
        t = state.sched.t[i]
        # The gate reads the schedule's Python number: float(sig) would wait for the GPU at every step.
        gamma = state.gamma_max if self.S_tmin <= state.sched.num.nsr[i] <= self.S_tmax else 0.0
        if gamma > 0:
            # The churned time is computed on the device, so that no host-to-device copy waits on the queue.
            sig, a = sde.nsr(t), sde.alpha(t)
            # Increase the noise level: sigma^ = (1 + gamma) sigma~, never above sigma~(T).
            sig_hat = torch.minimum(sig * (1 + gamma), state.sig_T)
            t_hat = sde.t_from_nsr(sig_hat.to(torch.float64)).to(t.dtype).clamp(max=state.T)
            z = noise.randn(x.shape, dtype=x.dtype, device=x.device)
            x = sde.alpha(t_hat) * (x / a + (sig_hat**2 - sig**2).clamp_min(0).sqrt() * self.S_noise * z)
            return self.heun(score, sde, x, t_hat, state.sched.t[i + 1]), state
        return self.heun(score, sde, x, t, state.sched.t[i + 1], state.sched, i), state
