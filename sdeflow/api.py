"""The one-call API: sample from an SDE with a score function and a chosen sampler."""

from __future__ import annotations

import torch

from sdeflow.grids import UniformGrid
from sdeflow.random import PerSampleNoise
from sdeflow.samplers.base import SampleResult
from sdeflow.score import ScoreFunction


def sample(
    sde,
    score,
    sampler,
    shape,
    steps: int | None = None,
    grid=None,
    seed: int | None = 0,
    generator=None,
    offset: int = 0,
    dtype=torch.float32,
    device=None,
    return_trajectory: bool = False,
) -> SampleResult:
    """Draw `shape[0]` samples: prior draw, then `sampler` along `grid(sde, steps)`.

    Args:
        sde: the forward SDE (`sdeflow.VPSDE`, `SubVPSDE`, `VESDE`).
        score: a `sdeflow.ScoreFunction`, or a plain callable `score(x, t)` returning the score.
        sampler: any `sdeflow` sampler, e.g. `PCSampler(EulerMaruyama())` or `ProbabilityFlowODE()`.
        shape: (batch, *data_shape).
        steps: number of steps; None lets an adaptive ODE sampler choose (grid = [T, eps]).
        grid: a time grid (default uniform in t).
        seed: base seed of per-sample noise: sample `offset + i` is the same whatever the batch size.
        generator: a torch.Generator or noise source to use instead of `seed`.
        offset: global index of this batch's first sample.
        dtype, device: of the samples.
        return_trajectory: also return the states at every grid point.
    """
    if not isinstance(score, ScoreFunction):
        score = ScoreFunction(score, sde)
    if generator is None:
        if seed is None:
            raise ValueError("give a seed or a generator")
        generator = PerSampleNoise(seed, shape[0], offset)
    if steps is None:
        if sampler.nfe_per_step is not None:
            raise ValueError(f"{type(sampler).__name__} steps on a grid: give `steps`")
        timesteps = torch.tensor([sde.T, sde.eps], dtype=torch.float64)
    else:
        timesteps = sampler.timesteps(grid or UniformGrid(), sde, steps)
    x = sde.prior_sampling(shape, generator, dtype=dtype, device=device)
    return sampler.sample(score, sde, x, timesteps, generator=generator, return_trajectory=return_trajectory)
