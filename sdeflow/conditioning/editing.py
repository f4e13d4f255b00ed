"""Editing with a trained model: ODE inversion, data to its code at T along the probability-flow ODE (`encode`)
and back (`decode`); and SDEdit (Meng et al. 2022), noise to an intermediate time and sample back (`sdedit`).

The probability-flow ODE is a bijection between p_eps and p_T; any deterministic grid solver
integrates it in either direction (its formulas hold for negative lambda steps), so encoding runs
the solver on the sampler's own grid reversed, from eps up to T.
"""

from __future__ import annotations

import torch

from sdeflow.core.tensors import append_dims
from sdeflow.noise.generators import as_noise
from sdeflow.noise.streams import sampling_streams
from sdeflow.samplers.base import SampleResult
from sdeflow.samplers.grids import default_grid
from sdeflow.score.function import ScoreFunction


def encode(
    score,
    sde,
    solver,
    x,
    *,
    steps: int | None = None,
    nfe: int | None = None,
    grid=None,
    return_trajectory: bool = False,
    progress=None,
) -> SampleResult:
    """The code z of data x: the probability-flow ODE solution at T from x at the grid's last time (eps).

    Args:
        score: a `sdeflow.ScoreFunction` of `sde`, or a callable score(x, t).
        solver: a deterministic solver (`DDIM`, `DPMSolverPP`, `UniPC`, `DEIS`, `EDMHeun`, `ProbabilityFlowODE`, ...);
            stochastic ones, analytic jumps and the adaptive DPM-Solver are refused.
        steps, nfe, grid: as for sampling (`Sampler.plan`); the grid is run backwards, from eps to T.
    Returns:
        a `SampleResult` whose `samples` are the codes, `timesteps` the increasing grid.
    """
    score = score if isinstance(score, ScoreFunction) else ScoreFunction(score, sde)
    timesteps = solver.plan(sde, grid, nfe=nfe, steps=steps).flip(0)
    return solver.sample(score, sde, x, timesteps, return_trajectory=return_trajectory, progress=progress)


def decode(
    score,
    sde,
    solver,
    z,
    *,
    steps: int | None = None,
    nfe: int | None = None,
    grid=None,
    return_trajectory: bool = False,
    progress=None,
) -> SampleResult:
    """Data from codes z at T: sampling with a deterministic solver from z instead of a prior draw."""
    score = score if isinstance(score, ScoreFunction) else ScoreFunction(score, sde)
    if solver.stochastic:
        raise ValueError(f"{type(solver).__name__} is stochastic: decoding a code needs a deterministic solver")
    timesteps = solver.plan(sde, grid, nfe=nfe, steps=steps)
    return solver.sample(score, sde, z, timesteps, return_trajectory=return_trajectory, progress=progress)


def sdedit(
    score,
    sde,
    solver,
    x0: torch.Tensor,
    t_start: float,
    *,
    steps: int | None = None,
    nfe: int | None = None,
    grid=None,
    seed: int | None = 0,
    generator=None,
    offset: int = 0,
    return_trajectory: bool = False,
    hook=None,
    progress=None,
) -> SampleResult:
    """Edit x0 (a guide: a stroke painting, a corrupted image): x_t = alpha(t) x0 + sigma(t) z at t = t_start, then
    `solver` from t_start down to eps.

    The smaller t_start, the closer to x0 (faithful); the larger, the closer to p_data (realistic);
    t_start = T is ordinary sampling from a prior draw shifted by alpha(T) x0.

    Args:
        score: a `sdeflow.ScoreFunction` of `sde`, or a callable score(x, t).
        solver: any sampler; it runs on `grid` (default `default_grid()`) restricted to [eps, t_start].
        x0: the data to edit, (batch, *data_shape); its dtype and device are the samples'.
        t_start: the time noised to, in (eps, T].
        steps, nfe: the number of steps below t_start, or their budget.
        seed, offset: per-sample noise (sample offset + i is the same in any batch); or `generator`.
    """
    score = score if isinstance(score, ScoreFunction) else ScoreFunction(score, sde)
    t_start = float(t_start)
    if not sde.eps < t_start <= sde.T:
        raise ValueError(f"t_start must lie in (eps, T] = ({sde.eps}, {sde.T}], got {t_start}")
    timesteps = solver.plan(
        sde, (grid if grid is not None else default_grid()).restricted(t_max=t_start), nfe=nfe, steps=steps
    )
    prior, noise = sampling_streams(sde, len(x0), seed, generator, offset)
    t = torch.tensor(t_start, dtype=torch.float64)
    alpha, sigma = (append_dims(v.to(x0.dtype).to(x0.device), x0.ndim) for v in (sde.alpha(t), sde.sigma(t)))
    x = alpha * x0 + sigma * as_noise(prior).randn(x0.shape, dtype=x0.dtype, device=x0.device)
    return solver.sample(
        score, sde, x, timesteps, generator=noise, return_trajectory=return_trajectory, hook=hook, progress=progress
    )
