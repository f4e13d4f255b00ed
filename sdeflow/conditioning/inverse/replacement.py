"""score_sde's replacement method (Song et al. 2021, App. I): the observed part of x_t set from y at each grid point."""

from __future__ import annotations

import torch

from sdeflow.conditioning.inverse.base import Bound, InverseMethod, as_batch
from sdeflow.core.tensors import append_dims
from sdeflow.noise.generators import OBSERVATION, PerSampleNoise, as_noise


class Replacement(InverseMethod):
    """A per-step hook: x <- x + A^+ (y_t - A x), y_t = alpha_t y + sigma_t A z, at every grid point.

    y_t has the law of A x_t given A x_0 = y (the forward process seen through A), so the observed part
    of the state is a draw of the noised observation and the rest is the sampler's. It runs with any
    sampler, at no extra network pass, inpainting and colorisation as in score_sde's controllable
    generation. It is biased: the unobserved part is never told the observation's future noise, and
    observation noise in y is ignored (the tests measure the bias).

    Args:
        limit: the watch on the iterates (`InverseMethod`).
    """

    usage = "sf.inverse.Replacement().bind(score, sde, solver, operator, y, noise_std)"

    def bind(self, score, sde, solver, operator, y, noise_std, seed=0, offset=0):
        return Bound(score, self.watched(solver), _ReplacementHook(sde, operator, y, seed=seed, offset=offset))


class _ReplacementHook:
    """`hook(x, t) -> x`, replacement's step (see `Replacement`): the hook of its bound sampler, and of RePaint's.

    Args:
        sde: the forward SDE.
        operator: a `LinearOperator`.
        y: the observations, (B, ...) as `operator.A` gives them, or one for every sample.
        seed, offset: per-sample noise of the noised observations, sample i keyed by offset + i (or `generator`).
    """

    def __init__(self, sde, operator, y: torch.Tensor, seed: int = 0, offset: int = 0, generator=None):
        self.sde, self.operator, self.y = sde, operator, torch.as_tensor(y)
        self.seed, self.offset = seed, offset
        # The batch size is the state's, known at the first call: a single observation is not a batch of one.
        self.noise = None if generator is None else as_noise(generator)

    def noised_observation(self, x: torch.Tensor, t, y: torch.Tensor) -> torch.Tensor:
        if self.noise is None:
            self.noise = PerSampleNoise(self.seed, len(x), self.offset, purpose=OBSERVATION)
        t = torch.as_tensor(t, dtype=torch.float64)
        a, s = (append_dims(v.to(x.dtype).to(x.device), y.ndim) for v in (self.sde.alpha(t), self.sde.sigma(t)))
        z = self.noise.randn(x.shape, dtype=x.dtype, device=x.device)
        return a * y + s * self.operator.A(z)

    def __call__(self, x: torch.Tensor, t) -> torch.Tensor:
        measured = self.operator.A(x)
        return x + self.operator.pinv(self.noised_observation(x, t, as_batch(self.y, measured)) - measured)

    def __repr__(self) -> str:
        return f"Replacement({self.operator!r})"
