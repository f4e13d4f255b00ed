"""ODE inversion: data to its code at T along the probability-flow ODE (`encode`), and back (`decode`).

The probability-flow ODE is a bijection between p_eps and p_T; any deterministic grid solver
integrates it in either direction (its formulas hold for negative lambda steps), so encoding runs
the solver on the sampler's own grid reversed, from eps up to T.
"""

from __future__ import annotations

from sdeflow.samplers.base import SampleResult
from sdeflow.score import ScoreFunction


def encode(score, sde, solver, x, steps: int | None = None, nfe: int | None = None, grid=None, return_trajectory: bool = False,
           progress=None) -> SampleResult:
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


def decode(score, sde, solver, z, steps: int | None = None, nfe: int | None = None, grid=None, return_trajectory: bool = False,
           progress=None) -> SampleResult:
    """Data from codes z at T: sampling with a deterministic solver from z instead of a prior draw."""
    score = score if isinstance(score, ScoreFunction) else ScoreFunction(score, sde)
    if solver.stochastic:
        raise ValueError(f"{type(solver).__name__} is stochastic: decoding a code needs a deterministic solver")
    timesteps = solver.plan(sde, grid, nfe=nfe, steps=steps)
    return solver.sample(score, sde, z, timesteps, return_trajectory=return_trajectory, progress=progress)
