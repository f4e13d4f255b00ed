"""score_sde's replacement method (Song et al. 2021, App. I): the observed part of x_t is set from y at every grid point."""

from __future__ import annotations

import torch

from sdeflow.core.tensors import append_dims
from sdeflow.noise.generators import OBSERVATION, PerSampleNoise, as_noise


class Replacement:
    """A per-step hook `hook(x, t) -> x`: x <- x + A^+ (y_t - A x), y_t = alpha_t y + sigma_t A z.

    y_t has the law of A x_t given A x_0 = y (the forward process seen through A), so the observed part
    of the state is a draw of the noised observation and the rest is the sampler's. It runs with any
    sampler (`sample(..., hook=Replacement(...))`), inpainting and colorisation as in score_sde's
    controllable generation. It is biased: the unobserved part is never told the observation's
    future noise, and observation noise in y is ignored (the tests measure the bias).

    Args:
        sde: the forward SDE.
        operator: a `LinearOperator`.
        y: the observations, (B, ...) as `operator.A` gives them.
        seed, offset: per-sample noise of the noised observations (or `generator`).
    """

    def __init__(self, sde, operator, y: torch.Tensor, seed: int = 0, offset: int = 0, generator=None):
        self.sde, self.operator, self.y = sde, operator, y
        self.noise = (
            as_noise(generator) if generator is not None else PerSampleNoise(seed, len(y), offset, purpose=OBSERVATION)
        )

    def noised_observation(self, x: torch.Tensor, t) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.float64)
        a, s = (append_dims(v.to(x.dtype).to(x.device), self.y.ndim) for v in (self.sde.alpha(t), self.sde.sigma(t)))
        z = self.noise.randn(x.shape, dtype=x.dtype, device=x.device)
        return a * self.y.to(x.device, x.dtype) + s * self.operator.A(z)

    def __call__(self, x: torch.Tensor, t) -> torch.Tensor:
        return x + self.operator.pinv(self.noised_observation(x, t) - self.operator.A(x))

    def __repr__(self) -> str:
        return f"Replacement({self.operator!r})"
