"""Pseudoinverse-guided diffusion (Song, Vahdat, Mardani & Kautz 2023): DPS with the denoiser's uncertainty."""

from __future__ import annotations

import torch

from sdeflow.conditioning.guidance import GuidedScore, check_interval, mix
from sdeflow.conditioning.inverse.base import Bound, InverseMethod, as_batch


class PiGDM(InverseMethod):
    """s(x) + grad_x log N(y; A x0(x), noise_std^2 I + r_t^2 A A^T), the Jacobian of x0 applied as one vector-Jacobian
    product.

    r_t^2 = c sigma_t^2 / (alpha_t^2 c + sigma_t^2) is the variance of x0 given x_t for data of variance c
    (`data_var`): the likelihood widens where the denoiser is unsure, where DPS's does not. One forward
    and one backward per evaluation, with any sampler. Exact for Gaussian data of variance c and linear
    operators.

    Args:
        data_var: c, the data's variance per coordinate.
        interval: (t_lo, t_hi), where guidance acts (the plain score elsewhere, with no backward).
        limit: the watch on the iterates (`InverseMethod`).
    """

    usage = "sf.inverse.PiGDM(data_var=0.25).bind(score, sde, solver, operator, y, noise_std)"

    def __init__(self, *, data_var: float = 1.0, interval=None, limit: float | None = 1000.0):
        if not data_var > 0:
            raise ValueError(f"data_var must be positive, got {data_var}")
        self.data_var, self.interval = float(data_var), check_interval(interval)
        super().__init__(limit=limit)

    def bind(self, score, sde, solver, operator, y, noise_std, seed=0, offset=0):
        if not noise_std >= 0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std}")
        return Bound(_PiGDMScore(score, operator, y, float(noise_std), self), self.watched(solver))


class _PiGDMScore(GuidedScore):
    def __init__(self, base, operator, y, noise_std: float, method: PiGDM):
        super().__init__(base, method.interval)
        self.operator, self.y, self.noise_std, self.data_var = operator, y, noise_std, method.data_var

    def guided(self, x, t, alpha, sigma, active):
        if not bool(active.any()):  # outside the guidance interval: the plain score, no backward
            return self.base_score(self.base, x, t, alpha, sigma)
        alpha_t = torch.as_tensor(alpha, dtype=x.dtype, device=x.device)
        sigma_t = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        r2 = self.data_var * sigma_t**2 / (alpha_t**2 * self.data_var + sigma_t**2)
        with torch.enable_grad():
            xg, score, x0 = self.score_and_x0(x, t, alpha, sigma)
            measured = self.operator.A(x0)
            residual = as_batch(self.y, measured) - measured
            v = self.operator.gram_solve(residual.detach(), self.noise_std**2, r2)
            (grad,) = torch.autograd.grad(x0, xg, self.operator.AT(v))
            self.backwards += 1
        score = score.detach()
        return mix(active, score + grad, score)
