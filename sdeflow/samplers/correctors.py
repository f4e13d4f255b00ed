"""Correctors of predictor-corrector sampling: Langevin MCMC at a fixed time (Song et al. 2021, Algorithms 4-5)."""

from __future__ import annotations

import torch

from sdeflow.core.tensors import append_dims


class Corrector:
    """MCMC steps that leave p_t (approximately) invariant; `nfe_per_step` score evaluations each call."""

    def __init__(self, snr: float = 0.16, n_steps: int = 1):
        if not snr > 0:
            raise ValueError(f"snr must be positive, got {snr}")
        if int(n_steps) != n_steps or n_steps < 1:
            raise ValueError(f"n_steps must be a positive integer, got {n_steps}")
        self.snr = float(snr)
        self.n_steps = int(n_steps)

    @property
    def nfe_per_step(self) -> int:
        return self.n_steps

    def step_size(self, grad, z, score, sde, t, t_next) -> torch.Tensor:
        raise NotImplementedError

    def update(self, score, sde, x, t, t_next, noise) -> tuple[torch.Tensor, torch.Tensor]:
        x_mean = x
        for _ in range(self.n_steps):
            grad = score(x, t)
            z = noise.randn(x.shape, dtype=x.dtype, device=x.device)
            eta = append_dims(self.step_size(grad, z, score, sde, t, t_next), x.ndim)
            x_mean = x + eta * grad
            x = x_mean + torch.sqrt(2 * eta) * z
        return x, x_mean

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


def _langevin_scale(sde, t, t_next):
    # The reference's alpha_i = 1 - beta_i on VP, 1 on VE; (alpha(t)/alpha(t_next))^2 is that for
    # every linear SDE, sub-VP included (where the reference crashes looking up `sde.alphas`).
    return (sde.alpha(t) / sde.alpha(t_next)) ** 2


class NoneCorrector(Corrector):
    """No corrector; costs no score evaluations."""

    def __init__(self):
        self.snr, self.n_steps = 0.0, 0

    def update(self, score, sde, x, t, t_next, noise):
        return x, x

    def __repr__(self) -> str:
        return "NoneCorrector()"


class LangevinCorrector(Corrector):
    """Langevin steps with step size 2 alpha (snr ||z|| / ||score||)^2 (Song et al. 2021, Algorithm 5).

    By default each sample gets its own step size, capped at alpha sigma(t)^2. Where a sample's score
    nearly vanishes (near a saddle of p_t, common in low dimensions) the ratio is unbounded and would
    throw the sample far away; the cap is 1 / L for L = 1 / sigma(t)^2, the bound on the curvature of
    -log p_t that Gaussian smoothing guarantees. In high dimensions it rarely binds: there the ratio
    gives about 2 snr^2 sigma(t)^2.

    Args:
        snr: target signal-to-noise ratio.
        n_steps: Langevin steps per grid point.
        batch_average: average the norms over the batch and do not cap, exactly as the reference
            does; one sample's step then depends on the others in its batch.
    """

    def __init__(self, snr: float = 0.16, n_steps: int = 1, batch_average: bool = False):
        super().__init__(snr, n_steps)
        self.batch_average = bool(batch_average)

    def step_size(self, grad, z, score, sde, t, t_next):
        grad_norm = grad.flatten(1).norm(dim=1)
        noise_norm = z.flatten(1).norm(dim=1)
        scale = 2 * _langevin_scale(sde, t, t_next)
        if self.batch_average:
            return scale * (self.snr * noise_norm.mean() / grad_norm.mean()).expand_as(grad_norm) ** 2
        return scale * torch.minimum((self.snr * noise_norm / grad_norm) ** 2, sde.sigma(t) ** 2 / 2)


class AnnealedLangevin(Corrector):
    """Annealed Langevin dynamics of NCSN (Song & Ermon 2019): step size 2 alpha (snr sigma(t))^2."""

    def step_size(self, grad, z, score, sde, t, t_next):
        size = 2 * _langevin_scale(sde, t, t_next) * (self.snr * sde.sigma(t)) ** 2
        return size.expand(grad.shape[0])
