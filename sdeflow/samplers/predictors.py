"""Predictors of predictor-corrector sampling (Song et al. 2021, Algorithms 2-4), on any time grid.

Each maps x at t to (x, x_mean) at t_next < t; x_mean is the step without its noise.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from sdeflow.utils import append_dims


class Predictor:
    """A one-step reverse-time method; declares its weak order and score evaluations per step."""

    order: ClassVar[float] = 1
    nfe_per_step: ClassVar[int] = 1

    def update(self, score, sde, x, t, t_next, noise) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class NonePredictor(Predictor):
    """No predictor: x is left as it is (corrector-only sampling, e.g. annealed Langevin dynamics)."""

    order = 0
    nfe_per_step = 0

    def update(self, score, sde, x, t, t_next, noise):
        return x, x


class EulerMaruyama(Predictor):
    """Euler-Maruyama on the reverse SDE with the grid's real step t_next - t (weak order 1)."""

    def update(self, score, sde, x, t, t_next, noise):
        # x + [f x - g^2 score] dt (`sde.reverse(score).sde`), its coefficients taken at t as it is: at the one time
        # of a grid step they are a few scalar operations, not per-sample ones.
        dt = t_next - t
        f, g2 = append_dims(sde.f(t), x.ndim), append_dims(sde.g2(t), x.ndim)
        x_mean = (1 + f * dt) * x - (g2 * dt) * score(x, t)
        z = noise.increment(x.shape, t, t_next, dtype=x.dtype, device=x.device)
        return x_mean + torch.sqrt(-g2 * dt) * z, x_mean


class ReverseDiffusion(Predictor):
    """The reverse of the SDE's own discretisation (`sde.discretize`) over the step t - t_next (weak order 1)."""

    def update(self, score, sde, x, t, t_next, noise):
        rev_f, rev_G = sde.reverse(score).discretize(x, t, t - t_next)
        x_mean = x - rev_f
        z = noise.increment(x.shape, t, t_next, dtype=x.dtype, device=x.device)
        return x_mean + append_dims(rev_G, x.ndim) * z, x_mean


class Ancestral(Predictor):
    """Ancestral sampling: draw from the Gaussian posterior q(x_s | x_t, x0_hat), s = t_next (Ho et al. 2020).

    Written through alpha and sigma, so it is DDPM's sampler on VP and SMLD's on VE (where it
    equals the reference's x + (sigma_t^2 - sigma_s^2) score), and works on any linear SDE.
    """

    def update(self, score, sde, x, t, t_next, noise):
        a_t, s_t, a_s, s_s = sde.alpha(t), sde.sigma(t), sde.alpha(t_next), sde.sigma(t_next)
        a_ts = a_t / a_s
        var_ts = s_t**2 - a_ts**2 * s_s**2
        x0 = score.x0(x, t)
        x_mean = (a_ts * s_s**2 / s_t**2) * x + (a_s * var_ts / s_t**2) * x0
        std = torch.sqrt(var_ts * s_s**2 / s_t**2)
        z = noise.increment(x.shape, t, t_next, dtype=x.dtype, device=x.device)
        return x_mean + std * z, x_mean
