"""The one-call API: sample from an SDE with a score function and a chosen sampler."""

from __future__ import annotations

import torch

from sdeflow.noise.streams import sampling_streams
from sdeflow.samplers.base import SampleResult
from sdeflow.score.function import ScoreFunction
from sdeflow.sde.base import SDE


def sample(
    score,
    sde,
    solver,
    shape,
    *,
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
    """Draw `shape[0]` samples: a prior draw, then `solver` along the grid it plans (`solver.plan`).

    `sample`, `generate`, `encode`, `decode` and `sdedit` take their arguments in one order: the score, the
    SDE, the solver, then what to start from (here the shape), and the rest by keyword.

    Args:
        score: a `sdeflow.ScoreFunction` of this SDE, or a plain callable `score(x, t)` returning the score.
        sde: the forward SDE (`sdeflow.VPSDE`, `SubVPSDE`, `VESDE`, ...).
        solver: any `sdeflow` sampler, e.g. `PCSampler(EulerMaruyama())` or `ProbabilityFlowODE()`.
        shape: (batch, *data_shape).
        steps: number of steps; or
        nfe: the budget of score evaluations, which the sampler turns into steps (adaptive samplers
            need neither: they choose their own steps from T to eps).
        grid: a time grid (default `default_grid()`: uniform in the log-SNR).
        seed: base seed of per-sample noise: sample `offset + i` is the same whatever the batch size.
        generator: a torch.Generator or noise source to use instead of `seed`.
        offset: global index of this batch's first sample.
        dtype, device: of the samples.
        return_trajectory: also return the states at every grid point.
        hook: `hook(x, t) -> x` applied at every grid point after the first (see `Sampler.sample`).
        progress: `progress(i, n)` called at every grid point.
        grad: record the autograd graph through sampling (off by default; see `Sampler.sample`).
        brownian: take the solver noise from one Brownian path per sample (`BrownianNoise` on [0, T]):
            the same seed then gives the same path whatever the grid or the step count, so runs at
            different NFE differ by their discretisation only (with `seed`; a `generator` is used as it is).
    """
    if isinstance(score, SDE) or not isinstance(sde, SDE):
        raise TypeError(
            f"sample takes (score, sde, solver, shape, ...), the score first as in generate, encode, decode and "
            f"sdedit; got a {type(score).__name__} and a {type(sde).__name__}"
        )
    if not isinstance(score, ScoreFunction):
        score = ScoreFunction(score, sde)
    timesteps = solver.plan(sde, grid, nfe=nfe, steps=steps)
    # A stochastic solver's step noise is drawn a block of the plan's steps at a time, the first with the prior draw
    # (adaptive solvers: not known ahead; deterministic ones draw none).
    planned = len(timesteps) - 1 if solver.stochastic and solver.nfe_per_step is not None else None
    prior, noise = sampling_streams(sde, shape[0], seed, generator, offset, brownian, steps=planned)
    x = sde.prior_sampling(shape, prior, dtype=dtype, device=device)
    return solver.sample(
        score,
        sde,
        x,
        timesteps,
        generator=noise,
        return_trajectory=return_trajectory,
        hook=hook,
        progress=progress,
        grad=grad,
    )
