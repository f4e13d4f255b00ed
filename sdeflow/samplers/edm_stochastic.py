"""EDM's stochastic sampler (Karras et al. 2022, Algorithm 2), for any linear SDE."""

from __future__ import annotations

import torch

from sdeflow.samplers.heun import EDMHeun, scaled


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

    def solve(self, score, sde, x, timesteps, noise, record):
        n = len(timesteps) - 1
        gamma_max = min(self.S_churn / n, 2**0.5 - 1)
        T = torch.as_tensor(sde.T, dtype=timesteps.dtype, device=timesteps.device)
        sig_T, _ = scaled(sde, T)
        for i in range(n):
            t = timesteps[i]
            sig, a = scaled(sde, t)
            gamma = gamma_max if self.S_tmin <= float(sig) <= self.S_tmax else 0.0
            if gamma > 0:
                # Increase the noise level: sigma^ = (1 + gamma) sigma~, never above sigma~(T).
                sig_hat = torch.minimum(sig * (1 + gamma), sig_T)
                t_hat = sde.t_from_lambda(-torch.log(sig_hat.to(torch.float64))).to(t.dtype).clamp(max=T)
                z = noise.randn(x.shape, dtype=x.dtype, device=x.device)
                _, a_hat = scaled(sde, t_hat)
                x = a_hat * (x / a + (sig_hat**2 - sig**2).clamp_min(0).sqrt() * self.S_noise * z)
                t = t_hat
            x = self.heun(score, sde, x, t, timesteps[i + 1])
            record(x)
        return x
