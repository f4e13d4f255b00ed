"""Predictors of predictor-corrector sampling (Song et al. 2021, Algorithms 2-4), on any time grid.

Each maps x at t to (x, x_mean) at t_next < t; x_mean is the step without its noise.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from sdeflow.core.tensors import append_dims


class Predictor:
    """A one-step reverse-time method; declares its weak order and score evaluations per step."""

    order: ClassVar[int] = 1
    nfe_per_step: ClassVar[int] = 1

    def update(self, score, sde, x, t, t_next, noise) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def update_on_grid(self, score, sde, x, sched, i: int, noise) -> tuple[torch.Tensor, torch.Tensor]:
        """`update` from grid point i to i + 1 of `sched` (what `PCSampler` calls). A predictor whose coefficients
        the schedule holds as numbers overrides this to read them there rather than compute them with tensor
        operations."""
        return self.update(score, sde, x, sched.t[i], sched.t[i + 1], noise)

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
        f, g2 = append_dims(sde.f(t), x.ndim), append_dims(sde.g2(t), x.ndim)
        return self.move(score, x, t, (t, t_next), f, g2, t_next - t, None, noise)

    def update_on_grid(self, score, sde, x, sched, i, noise):
        f, g2 = sched.memo(
            (EulerMaruyama, "f, g2"), lambda: tuple(v(sched.t.double()).tolist() for v in (sde.f, sde.g2))
        )
        num = sched.num
        return self.move(
            score, x, sched.t[i], num.t[i : i + 2], f[i], g2[i], num.t[i + 1] - num.t[i], sched.coef[i], noise
        )

    @staticmethod
    def move(score, x, t, span, f, g2, dt, coef, noise):
        """x + [f x - g^2 score] dt + g sqrt(-dt) z (`sde.reverse(score).sde`), its coefficients numbers or tensors
        at t; `span`: the step's (t, t_next) for the noise's increment."""
        x_mean = (1 + f * dt) * x - (g2 * dt) * score(x, t, coef)
        z = noise.increment(x.shape, *span, dtype=x.dtype, device=x.device)
        return x_mean + (-g2 * dt) ** 0.5 * z, x_mean


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
        return self.move(
            score, x, t, (t, t_next), sde.alpha(t), sde.sigma(t), sde.alpha(t_next), sde.sigma(t_next), None, noise
        )

    def update_on_grid(self, score, sde, x, sched, i, noise):
        num = sched.num
        return self.move(
            score,
            x,
            sched.t[i],
            num.t[i : i + 2],
            num.alpha[i],
            num.sigma[i],
            num.alpha[i + 1],
            num.sigma[i + 1],
            sched.coef[i],
            noise,
        )

    @staticmethod
    def move(score, x, t, span, a_t, s_t, a_s, s_s, coef, noise):
        """The posterior draw, its coefficients numbers or tensors (grouped so that numbers cost no tensor operation);
        `span`: the step's (t, t_next) for the noise's increment."""
        a_ts = a_t / a_s
        var_ts = s_t**2 - a_ts**2 * s_s**2
        x_mean = (a_ts * s_s**2 / s_t**2) * x + (a_s * var_ts / s_t**2) * score.x0(x, t, coef)
        z = noise.increment(x.shape, *span, dtype=x.dtype, device=x.device)
        return x_mean + (var_ts * s_s**2 / s_t**2) ** 0.5 * z, x_mean
