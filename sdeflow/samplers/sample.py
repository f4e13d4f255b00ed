"""The one-call API: sample from an SDE with a score function and a chosen sampler."""

from __future__ import annotations

import torch

from sdeflow.noise.brownian import brownian_span
from sdeflow.noise.streams import streams
from sdeflow.samplers.base import SampleResult
from sdeflow.score.function import ScoreFunction


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
    nfe: int | None = None,
    hook=None,
    progress=None,
    grad: bool = False,
    brownian: bool = False,
) -> SampleResult:
    """Draw `shape[0]` samples: a prior draw, then `sampler` along the grid it plans (`sampler.plan`).

    Args:
        sde: the forward SDE (`sdeflow.VPSDE`, `SubVPSDE`, `VESDE`).
        score: a `sdeflow.ScoreFunction` of this SDE, or a plain callable `score(x, t)` returning the score.
        sampler: any `sdeflow` sampler, e.g. `PCSampler(EulerMaruyama())` or `ProbabilityFlowODE()`.
        shape: (batch, *data_shape).
        steps: number of steps; or
        nfe: the budget of score evaluations, which the sampler turns into steps (adaptive samplers
            need neither: they choose their own steps from T to eps).
        grid: a time grid (default uniform in t).
        seed: base seed of per-sample noise: sample `offset + i` is the same whatever the batch size.
        generator: a torch.Generator or noise source to use instead of `seed`.
        offset: global index of this batch's first sample.
        dtype, device: of the samples.
        return_trajectory: also return the states at every grid point.
        hook: `hook(x, t) -> x` applied at every grid point after the first (see `Sampler.sample`).
        progress: `progress(i, n)` called at every grid point.
        grad: record the autograd graph through sampling (off by default; see `Sampler.sample`).
        brownian: take the solver noise from one Brownian path per sample (`BrownianNoise` on [eps, T]):
            the same seed then gives the same path whatever the grid or the step count, so runs at
            different NFE differ by their discretisation only (with `seed`; a `generator` is used as it is).
    """
    if not isinstance(score, ScoreFunction):
        score = ScoreFunction(score, sde)
    if generator is None and seed is None:
        raise ValueError("give a seed or a generator")
    span = brownian_span(sde) if brownian else None
    prior, noise = streams(seed, shape[0], offset, brownian=span) if generator is None else (generator, generator)
    timesteps = sampler.plan(sde, grid, nfe=nfe, steps=steps)
    x = sde.prior_sampling(shape, prior, dtype=dtype, device=device)
    return sampler.sample(score, sde, x, timesteps, generator=noise, return_trajectory=return_trajectory, hook=hook, progress=progress, grad=grad)
