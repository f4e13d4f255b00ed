"""Diffusion posterior sampling (Chung et al. 2023): the likelihood of y through the denoiser's x0, differentiated."""

from __future__ import annotations

import torch

from sdeflow.conditioning.guidance import GuidedScore, mix


class DPS(GuidedScore):
    """s(x) + zeta grad_x log N(y; A x0(x), noise_std^2 I): the posterior score with p(y | x_t) ~ p(y | x0 = E[x0 | x_t]).

    One forward and one backward through the network per evaluation (counted), with any sampler.
    zeta = 1 is the approximation as derived; Chung et al. step with zeta' / ||y - A x0|| instead
    (`normalised=True`, zeta then in their units). Biased where p(x0 | x_t) is far from a point mass.
    The gradient passes through dx0/dx ~ 1 / alpha, large at high noise: with an explicit SDE step and
    a small noise_std it can diverge (the sampler then names the step); the normalised form with an
    exponential integrator (DDIM) is the robust choice on trained networks.

    Args:
        base: the (unconditional) score function.
        operator: a `LinearOperator`; y: the observations.
        noise_std: the observation noise (> 0; the normalised form does not use it, and takes 0).
    """

    def __init__(self, base, operator, y, noise_std: float, zeta: float = 1.0, normalised: bool = False, interval=None):
        super().__init__(base, interval)
        if not (noise_std > 0 or (normalised and noise_std == 0)):
            raise ValueError(
                f"noise_std must be positive (or 0 with normalised=True, which does not use it), got {noise_std}"
            )
        self.operator, self.y, self.noise_std, self.zeta, self.normalised = (
            operator,
            y,
            float(noise_std),
            float(zeta),
            bool(normalised),
        )

    def guided(self, x, t, alpha, sigma, active):
        if not bool(active.any()):  # outside the guidance interval: the plain score, no backward
            return self.base_score(self.base, x, t, alpha, sigma)
        with torch.enable_grad():
            xg, score, x0 = self.score_and_x0(x, t, alpha, sigma)
            residual = (self.y.to(x.device, x.dtype) - self.operator.A(x0)).flatten(1)
            if self.normalised:
                objective = -residual.norm(dim=1)
            else:
                objective = -0.5 * (residual**2).sum(1) / self.noise_std**2
            (grad,) = torch.autograd.grad(objective.sum(), xg)
            self.backwards += 1
        score = score.detach()
        return mix(active, score + self.zeta * grad, score)
