"""Pseudoinverse-guided diffusion (Song, Vahdat, Mardani & Kautz 2023): DPS with the denoiser's uncertainty."""

from __future__ import annotations

import torch

from sdeflow.conditioning.guidance import GuidedScore, mix


class PiGDM(GuidedScore):
    """s(x) + grad_x log N(y; A x0(x), noise_std^2 I + r_t^2 A A^T), the Jacobian of x0 applied as one vector-Jacobian product.

    r_t^2 = c sigma_t^2 / (alpha_t^2 c + sigma_t^2) is the variance of x0 given x_t for data of variance c
    (`data_var`): the likelihood widens where the denoiser is unsure, where DPS's does not. One forward
    and one backward per evaluation. Exact for Gaussian data of variance c and identity operators.
    """

    def __init__(self, base, operator, y, noise_std: float, data_var: float = 1.0, interval=None):
        super().__init__(base, interval)
        if not noise_std >= 0 or not data_var > 0:
            raise ValueError(f"need noise_std >= 0 and data_var > 0, got {noise_std}, {data_var}")
        self.operator, self.y, self.noise_std, self.data_var = operator, y, float(noise_std), float(data_var)

    def guided(self, x, t, alpha, sigma, active):
        if not bool(active.any()):  # outside the guidance interval: the plain score, no backward
            return self.base_score(self.base, x, t, alpha, sigma)
        alpha_t = torch.as_tensor(alpha, dtype=x.dtype, device=x.device)
        sigma_t = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        r2 = self.data_var * sigma_t**2 / (alpha_t**2 * self.data_var + sigma_t**2)
        with torch.enable_grad():
            xg, score, x0 = self.score_and_x0(x, t, alpha, sigma)
            residual = self.y.to(x.device, x.dtype) - self.operator.A(x0)
            v = self.operator.gram_solve(residual.detach(), self.noise_std**2, r2)
            (grad,) = torch.autograd.grad(x0, xg, self.operator.AT(v))
            self.backwards += 1
        score = score.detach()
        return mix(active, score + grad, score)
