"""SDEdit (Meng et al. 2022): noise data to an intermediate time, then sample back with any sampler."""

from __future__ import annotations

import torch

from sdeflow.random import as_noise, streams
from sdeflow.samplers.base import SampleResult
from sdeflow.score import ScoreFunction
from sdeflow.utils import append_dims


def sdedit(score, sde, sampler, x0: torch.Tensor, t_start: float, steps: int | None = None, nfe: int | None = None, grid=None,
           seed: int | None = 0, generator=None, offset: int = 0, return_trajectory: bool = False, hook=None,
           progress=None) -> SampleResult:
    """Edit x0 (a guide: a stroke painting, a corrupted image): x_t = alpha(t) x0 + sigma(t) z at t = t_start, then
    `sampler` from t_start down to eps.

    The smaller t_start, the closer to x0 (faithful); the larger, the closer to p_data (realistic);
    t_start = T is ordinary sampling from a prior draw shifted by alpha(T) x0.

    Args:
        score: a `sdeflow.ScoreFunction` of `sde`, or a callable score(x, t).
        sampler: any sampler; it runs on `grid` (default uniform) restricted to [eps, t_start].
        x0: the data to edit, (batch, *data_shape); its dtype and device are the samples'.
        t_start: the time noised to, in (eps, T].
        steps, nfe: the number of steps below t_start, or their budget.
        seed, offset: per-sample noise (sample offset + i is the same in any batch); or `generator`.
    """
    score = score if isinstance(score, ScoreFunction) else ScoreFunction(score, sde)
    t_start = float(t_start)
    if not sde.eps < t_start <= sde.T:
        raise ValueError(f"t_start must lie in (eps, T] = ({sde.eps}, {sde.T}], got {t_start}")
    if generator is None and seed is None:
        raise ValueError("give a seed or a generator")
    from sdeflow.grids import UniformGrid

    timesteps = sampler.plan(sde, (grid if grid is not None else UniformGrid()).restricted(t_max=t_start), nfe=nfe, steps=steps)
    prior, noise = streams(seed, len(x0), offset) if generator is None else (generator, generator)
    t = torch.tensor(t_start, dtype=torch.float64)
    alpha, sigma = (append_dims(v.to(x0.dtype).to(x0.device), x0.ndim) for v in (sde.alpha(t), sde.sigma(t)))
    x = alpha * x0 + sigma * as_noise(prior).randn(x0.shape, dtype=x0.dtype, device=x0.device)
    return sampler.sample(score, sde, x, timesteps, generator=noise, return_trajectory=return_trajectory, hook=hook, progress=progress)
