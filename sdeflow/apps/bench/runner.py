"""The solver benchmark on an exact problem: error against counted NFE (benchmarks/README.md, section 1).

Deterministic samplers are scored by the per-sample RMS error against the exact probability-flow
solution from the same prior draws; stochastic ones by distribution distances (sliced Wasserstein-2,
Frechet) to exact samples of p_eps, printed beside the floor of two independent exact sets. Every
stochastic row integrates the same Brownian path per sample (`BrownianNoise`): the rows differ by
their discretisation, not by their draws, so the curves against NFE are common-random-number curves.

A problem may lack one of the two truths (`sdeflow.problems.tasks`): an inverse problem has no
trajectory to follow, so its deterministic rows are scored by distance too; the guided SDE's law at
w != 0 has no closed form, so those rows are skipped, saying why. An inverse method (`inverse`)
binds each row's score and sampler to the problem's observation.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from sdeflow.conditioning.inverse.base import DivergenceError
from sdeflow.eval.metrics import SlicedWasserstein, frechet_distance, gaussian_stats, rms_error
from sdeflow.noise.brownian import BrownianNoise, brownian_span
from sdeflow.noise.generators import DIRECTIONS, EXACT, PRIOR, seeded_generator
from sdeflow.samplers.base import BudgetError, IncompatibleSampler, NonFiniteError
from sdeflow.score.function import ScoreFunction
from sdeflow.tuning.autotune import for_model


@dataclass
class BenchProblem:
    """Everything the samplers are scored against, computed once per run."""

    x_T_traj: torch.Tensor
    reference: torch.Tensor | None  # None: the problem has no trajectory truth
    x_T_dist: torch.Tensor
    exact: torch.Tensor | None  # None: the problem has no exact samples
    floor_sw2: float
    floor_fd: float
    sw2: SlicedWasserstein | None  # the distance to `exact`, its projections sorted once
    exact_stats: tuple | None  # mean and covariance of `exact`


def prepare(
    problem, sde, n_trajectory: int, n_distribution: int, n_directions: int, seed: int, dtype, reference: dict
) -> BenchProblem:
    """Draw the prior states and compute the exact answers they are compared with."""
    g = seeded_generator(seed, PRIOR)
    shape = (problem.dim,)
    x_T_traj = sde.prior_sampling((n_trajectory, *shape), g, dtype=torch.float64)
    ref = problem.ode_reference(sde, x_T_traj, **reference)
    x_T_dist = sde.prior_sampling((n_distribution, *shape), g, dtype=torch.float64)
    g = seeded_generator(seed, EXACT)
    exact = problem.sample(n_distribution, g, t=sde.eps, sde=sde)
    if exact is None:
        nan = float("nan")
        return BenchProblem(x_T_traj.to(dtype), ref, x_T_dist.to(dtype), None, nan, nan, None, None)
    other = problem.sample(n_distribution, g, t=sde.eps, sde=sde)
    sw2 = SlicedWasserstein(exact, n_directions, seeded_generator(seed, DIRECTIONS))
    stats = gaussian_stats(exact)
    return BenchProblem(
        x_T_traj.to(dtype),
        ref,
        x_T_dist.to(dtype),
        exact,
        sw2(other),
        frechet_distance(*stats, *gaussian_stats(other)),
        sw2,
        stats,
    )


def run_solver(
    name,
    solver,
    problem,
    sde,
    bench: BenchProblem,
    grid,
    nfe,
    seed: int,
    n_directions: int,
    device=None,
    noise: BrownianNoise | None = None,
    inverse=None,
    wrap=None,
) -> dict:
    """Score one solver at one NFE budget (None: an adaptive solver's own choice) on `device`; one result row.

    `noise`: the stochastic rows' Brownian path (default: `BrownianNoise(seed, n)` on `brownian_span(sde)`).
    `inverse`: an `InverseMethod` binding the score and solver to the problem's observation.
    `wrap`: what the score is wrapped with (learned evaluation times, `sdeflow.tuning.learned`).
    """
    score, hook = ScoreFunction(problem.score_fn(sde), sde), None
    if wrap is not None:
        score = wrap(score)
    if inverse is not None:
        n = len(bench.x_T_dist)
        bound = inverse.bind(
            score,
            sde,
            solver,
            problem.operator,
            problem.observation(n).to(bench.x_T_dist.dtype),
            problem.noise_std,
            seed,
        )
        score, solver, hook = bound.score, bound.sampler, bound.hook
    row = {"solver": name, "kind": "stochastic" if solver.stochastic else "deterministic", "budget": nfe}
    by_trajectory = not solver.stochastic and bench.reference is not None
    if not by_trajectory and bench.exact is None:
        return {**row, "skipped": f"{problem!r} has no exact samples to score a {row['kind']} row against"}
    timesteps = solver.plan(sde, grid, nfe=nfe)
    row["steps"] = None if solver.nfe_per_step is None else len(timesteps) - 1
    start, shared = time.perf_counter(), 0.0
    if not by_trajectory:
        noise = (
            noise.restarted() if noise is not None else BrownianNoise(seed, len(bench.x_T_dist), 0, *brownian_span(sde))
        )
        shared = noise.seconds
        out = solver.sample(score, sde, bench.x_T_dist.to(device, copy=True), timesteps, generator=noise, hook=hook)
        shared = noise.seconds - shared
        # Samplers raise on NaN or infinity (a "diverged" row below), so these samples are finite.
        x = out.samples.to("cpu", torch.float64)
        row.update(
            nfe=out.nfe,
            diverged=False,
            sw2=bench.sw2(x),
            frechet=frechet_distance(*gaussian_stats(x), *bench.exact_stats),
        )
    else:
        out = solver.sample(score, sde, bench.x_T_traj.to(device, copy=True), timesteps, hook=hook)
        err = rms_error(out.samples.to("cpu", bench.reference.dtype), bench.reference)
        row.update(nfe=out.nfe, diverged=False, rms_median=float(err.median()), rms_p90=float(torch.quantile(err, 0.9)))
    if out.backwards:  # methods that differentiate through the model (DPS, PiGDM)
        row["backwards"] = out.backwards
    # The values of the Brownian path this row computed first are timed apart: every stochastic row shares the path,
    # so its cost is no one row's (`run` reports it once per budget, as `shared_seconds`).
    row["seconds"] = time.perf_counter() - start - shared
    if not by_trajectory:
        row["shared_seconds"] = shared
    return row


def run(
    problem,
    sde,
    solvers: dict,
    grid,
    nfe_list,
    n_trajectory=256,
    n_distribution=10000,
    n_directions=256,
    seed=0,
    dtype=torch.float64,
    reference=None,
    progress=True,
    on_row=None,
    device=None,
    brownian_depth: int = 16,
    inverse=None,
    grid_cache=None,
) -> tuple[list[dict], BenchProblem]:
    """Run every solver at every NFE budget on `device` (scored on the CPU); `on_row(row)` is called as each result
    arrives.

    `brownian_depth`: the levels of the stochastic rows' Brownian tree (`BrownianNoise`); fewer are
    cheaper, and enough while the grids' times stay apart by more than a leaf.
    A row's `seconds` is its own work: its sampling and scoring. The stochastic rows of a budget share one Brownian
    path, whose values the first row to ask for them computes; that time is left out of every row's `seconds` and
    given as `shared_seconds` on each of them (the same figure: the path of that budget, computed once).
    `inverse`: the `InverseMethod` of an inverse problem (one with an `operator`), which needs one.
    `grid_cache`: where an `AutoGrid` (timesteps=auto) caches the grids it fits to the problem (None: not cached);
    its pilot draws are its own, apart from the scored ones.
    """
    inverse_problem = hasattr(problem, "operator")
    if inverse_problem and inverse is None:
        raise ValueError(
            f"{problem!r} is an inverse problem: choose how to condition on its observation, "
            "inverse=replacement, repaint, dps or pigdm"
        )
    if inverse is not None and not inverse_problem:
        raise ValueError(
            f"inverse={inverse!r} needs an inverse problem (problem=inpainting_gmm); {problem!r} observes nothing"
        )
    bench = prepare(problem, sde, n_trajectory, n_distribution, n_directions, seed, dtype, reference or {})
    # Budget by budget, so that the stochastic rows of one grid follow each other and the shared path's
    # values at its points are computed once (the cache holds the largest grid and its stages).
    jobs = [(name, s, None) for name, s in solvers.items() if s.nfe_per_step is None]
    jobs += [(name, s, n) for n in nfe_list for name, s in solvers.items() if s.nfe_per_step is not None]
    path = BrownianNoise(
        seed,
        n_distribution,
        0,
        *brownian_span(sde),
        depth=brownian_depth,
        cache_size=4 * max([int(n) for n in nfe_list] + [1]) + 8,
    )
    rows, shared = [], {}  # shared: seconds of the Brownian path computed at each budget
    bar = tqdm(jobs, desc="bench", disable=not progress, dynamic_ncols=True)
    for name, solver, nfe in bar:
        path_seconds = path.seconds
        bar.set_postfix_str(f"{name} nfe={nfe if nfe is not None else 'adaptive'}")
        try:
            solver_grid, wrap, tuning = grid, None, None
            if nfe is not None:
                solver, solver_grid, wrap, tuning = for_model(
                    grid,
                    ScoreFunction(problem.score_fn(sde), sde),
                    sde,
                    solver,
                    nfe,
                    (problem.dim,),
                    grid_cache,
                    repr(problem),
                    dtype=dtype,
                    device=device,
                    progress=False,
                )
            row = run_solver(
                name, solver, problem, sde, bench, solver_grid, nfe, seed, n_directions, device, path, inverse, wrap
            )
            if tuning is not None and tuning["tuned"]:  # the one-off cost of the fitted grid, beside the row it serves
                row.update(tuning_pilot_nfe=tuning["pilot_nfe"], tuning_converged=tuning.get("converged"))
        except (NonFiniteError, DivergenceError) as e:
            # A solver (or an inverse method's iterates) that blows up at this budget is a result (it diverged),
            # reported without a number.
            row = {
                "solver": name,
                "kind": "stochastic" if solver.stochastic else "deterministic",
                "budget": nfe,
                "diverged": True,
                "error": str(e),
            }
        except (BudgetError, IncompatibleSampler) as e:
            # A budget too small for this solver (e.g. 5 NFE for a 4-stage method), or a solver the inverse
            # method cannot drive (RePaint and a multistep solver), is a skip, not a failure; any other
            # error (a bad grid, a bad setting) stops the benchmark with its message.
            row = {
                "solver": name,
                "kind": "stochastic" if solver.stochastic else "deterministic",
                "budget": nfe,
                "skipped": str(e),
            }
        shared[nfe] = shared.get(nfe, 0.0) + path.seconds - path_seconds
        rows.append(row)
        if on_row is not None:
            on_row(row)
    # Every stochastic row of a budget shows the path they share, which none of their `seconds` holds.
    for row in rows:
        if "shared_seconds" in row:
            row["shared_seconds"] = shared[row["budget"]]
    # Reported solver by solver, in the order given, each by budget.
    order = {name: k for k, name in enumerate(solvers)}
    rows.sort(key=lambda r: (order[r["solver"]], -1 if r["budget"] is None else r["budget"]))
    return rows, bench
