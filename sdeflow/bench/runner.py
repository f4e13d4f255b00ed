"""The solver benchmark on an exact problem: error against counted NFE (benchmarks/README.md, section 1).

Deterministic samplers are scored by the per-sample RMS error against the exact probability-flow
solution from the same prior draws; stochastic ones by distribution distances (sliced Wasserstein-2,
Frechet) to exact samples of p_eps, printed beside the floor of two independent exact sets.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from sdeflow.metrics import SlicedWasserstein, frechet_distance, gaussian_stats, rms_error
from sdeflow.random import DIRECTIONS, EXACT, NOISE, PRIOR, seeded_generator
from sdeflow.samplers.base import BudgetError, NonFiniteError
from sdeflow.score import ScoreFunction


@dataclass
class BenchProblem:
    """Everything the samplers are scored against, computed once per run."""

    x_T_traj: torch.Tensor
    reference: torch.Tensor
    x_T_dist: torch.Tensor
    exact: torch.Tensor
    floor_sw2: float
    floor_fd: float
    sw2: SlicedWasserstein  # the distance to `exact`, its projections sorted once
    exact_stats: tuple  # mean and covariance of `exact`


def prepare(problem, sde, n_trajectory: int, n_distribution: int, n_directions: int, seed: int, dtype, reference: dict) -> BenchProblem:
    """Draw the prior states and compute the exact answers they are compared with."""
    g = seeded_generator(seed, PRIOR)
    shape = (problem.dim,)
    x_T_traj = sde.prior_sampling((n_trajectory, *shape), g, dtype=torch.float64)
    ref = problem.ode_reference(sde, x_T_traj, **reference)
    x_T_dist = sde.prior_sampling((n_distribution, *shape), g, dtype=torch.float64)
    g = seeded_generator(seed, EXACT)
    exact = problem.sample(n_distribution, g, t=sde.eps, sde=sde)
    other = problem.sample(n_distribution, g, t=sde.eps, sde=sde)
    sw2 = SlicedWasserstein(exact, n_directions, seeded_generator(seed, DIRECTIONS))
    stats = gaussian_stats(exact)
    return BenchProblem(x_T_traj.to(dtype), ref, x_T_dist.to(dtype), exact, sw2(other), frechet_distance(*stats, *gaussian_stats(other)),
                        sw2, stats)


def run_solver(name, solver, problem, sde, bench: BenchProblem, grid, nfe, seed: int, n_directions: int, device=None) -> dict:
    """Score one solver at one NFE budget (None: an adaptive solver's own choice) on `device`; one result row."""
    score = ScoreFunction(problem.score_fn(sde), sde)
    timesteps = solver.plan(sde, grid, nfe=nfe)
    steps = None if solver.nfe_per_step is None else len(timesteps) - 1
    row = {"solver": name, "kind": "stochastic" if solver.stochastic else "deterministic", "budget": nfe, "steps": steps}
    start = time.perf_counter()
    if solver.stochastic:
        out = solver.sample(score, sde, bench.x_T_dist.to(device, copy=True), timesteps, generator=seeded_generator(seed, NOISE))
        # Samplers raise on NaN or infinity (a "diverged" row below), so these samples are finite.
        x = out.samples.to("cpu", torch.float64)
        row.update(
            nfe=out.nfe,
            diverged=False,
            sw2=bench.sw2(x),
            frechet=frechet_distance(*gaussian_stats(x), *bench.exact_stats),
        )
    else:
        out = solver.sample(score, sde, bench.x_T_traj.to(device, copy=True), timesteps)
        err = rms_error(out.samples.to("cpu", bench.reference.dtype), bench.reference)
        row.update(nfe=out.nfe, diverged=False, rms_median=float(err.median()), rms_p90=float(torch.quantile(err, 0.9)))
    row["seconds"] = time.perf_counter() - start
    return row


def run(problem, sde, solvers: dict, grid, nfe_list, n_trajectory=256, n_distribution=10000, n_directions=256, seed=0,
        dtype=torch.float64, reference=None, progress=True, on_row=None, device=None) -> tuple[list[dict], BenchProblem]:
    """Run every solver at every NFE budget on `device` (scored on the CPU); `on_row(row)` is called as each result arrives."""
    bench = prepare(problem, sde, n_trajectory, n_distribution, n_directions, seed, dtype, reference or {})
    jobs = [(name, s, None) for name, s in solvers.items() if s.nfe_per_step is None]
    jobs += [(name, s, n) for name, s in solvers.items() if s.nfe_per_step is not None for n in nfe_list]
    rows = []
    bar = tqdm(jobs, desc="bench", disable=not progress, dynamic_ncols=True)
    for name, solver, nfe in bar:
        bar.set_postfix_str(f"{name} nfe={nfe if nfe is not None else 'adaptive'}")
        try:
            row = run_solver(name, solver, problem, sde, bench, grid, nfe, seed, n_directions, device)
        except NonFiniteError as e:
            # A solver that blows up at this budget is a result (it diverged), reported without a number.
            row = {"solver": name, "kind": "stochastic" if solver.stochastic else "deterministic", "budget": nfe, "diverged": True,
                   "error": str(e)}
        except BudgetError as e:
            # A budget too small for this solver (e.g. 5 NFE for a 4-stage method) is a skip, not a failure;
            # any other error (a bad grid, a bad setting) stops the benchmark with its message.
            row = {"solver": name, "kind": "stochastic" if solver.stochastic else "deterministic", "budget": nfe, "skipped": str(e)}
        rows.append(row)
        if on_row is not None:
            on_row(row)
    return rows, bench
