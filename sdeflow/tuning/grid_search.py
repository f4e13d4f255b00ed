"""Grid optimisation: the time steps that minimise a solver's error for a given NFE budget.

In the spirit of "Align Your Steps" (Sabour et al. 2024) and GITS/DMN: the grid's log-SNR
increments are free parameters; the objective is the geometric mean of the solver's per-sample RMS
errors on pilot samples against the exact (or tightly solved) probability-flow solution from the
same prior draws. SciPy's derivative-free minimiser searches them, so any solver and any score model
work, differentiable or not. The result is saved as JSON and reused through `OptimizedGrid`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from sdeflow.core.io import write_json
from sdeflow.eval.metrics import rms_error
from sdeflow.samplers.base import SolverError
from sdeflow.samplers.grids import ListGrid

# Each step keeps at least this share of an even step's log-SNR increment. A bare softmax underflows at
# 50 steps (weights of exp(-750) are 0), two times become equal, and the grid is refused; with the floor
# the times are strictly decreasing by construction.
_FLOOR = 1e-3
# What a candidate that the solver or the grid check rejects scores: a bad value, not the end of the search.
_REJECTED = 1e6
# The search has converged when a sweep over every direction lowers the objective by less than this fraction.
TOL = 1e-2
# The default cap on solver runs, per parameter searched, set so that the typical search converges under it: on the
# benchmark protocol's mixture (seeds 1 and 2), every shipped search of 5 to 50 steps converged at TOL in 34-230 runs
# per parameter (`python benchmarks/tuner_convergence.py --runs-per-parameter 1000`, tuner_convergence_uncapped.md).
RUNS_PER_PARAMETER = 300


def mean_log(errors: torch.Tensor) -> torch.Tensor:
    """The mean log error: the log of the errors' geometric mean, the objective of every fit. A few hard draws do not
    dominate it as they do the mean, and it follows the median the results report: on the benchmark mixture at 50 NFE,
    a grid searched on the mean error lowered the held-out mean 3x while doubling the median (2.1e-5 -> 6.0e-5, seed
    1); searched on the mean log it lowers both (`python benchmarks/tuner_convergence.py`)."""
    return errors.log().mean()


def no_harm(before: torch.Tensor, after: torch.Tensor) -> tuple[bool, dict]:
    """The acceptance test of every fit, on held-out per-sample errors of the base setting (`before`) and the fit
    (`after`): kept only if it lowers both their median and their mean. Returns (kept, the figures and the verdict)."""
    figures = {
        "acceptance": "held-out median and mean both lower",
        "held_out": len(before),
        "held_out_median_before": float(before.median()),
        "held_out_median_after": float(after.median()),
        "held_out_mean_before": float(before.mean()),
        "held_out_mean_after": float(after.mean()),
    }
    worse = [k for k in ("median", "mean") if not figures[f"held_out_{k}_after"] < figures[f"held_out_{k}_before"]]
    kept = not worse
    figures["verdict"] = "accepted" if kept else f"rejected: the held-out {' and '.join(worse)} would not fall"
    return kept, figures


def _grid_from_params(
    theta: np.ndarray, lam_lo: float, lam_hi: float, ends: tuple[float, float], head: list[float], sde
) -> torch.Tensor:
    # Positive increments in lambda that sum to the whole range: a softmax, mixed with a floor, keeps the grid ordered.
    w = np.exp(np.maximum(theta - theta.max(), -700.0))
    w = (1 - _FLOOR) * w / w.sum() + _FLOOR / len(w)
    lam = lam_lo + (lam_hi - lam_lo) * np.concatenate([[0.0], np.cumsum(w)])
    t = sde.t_from_lambda(torch.as_tensor(lam, dtype=torch.float64))
    t[0], t[-1] = ends  # exactly the initial grid's ends, not their round trip through lambda
    return torch.cat([torch.tensor(head, dtype=torch.float64), t])


def search(
    sampler,
    score,
    sde,
    x_T: torch.Tensor,
    reference: torch.Tensor,
    theta0: np.ndarray,
    build,
    maxiter: int | None,
    what: str,
    progress: bool = True,
    tol: float = TOL,
) -> tuple[np.ndarray, dict]:
    """Powell's method on parameters theta of a sampling setup, `build(theta) -> (score, timesteps)`: the best theta
    and a report. The objective is the geometric mean of the per-sample RMS errors of `sampler` from `x_T` against
    `reference` (`mean_log`).

    The search never fails on a candidate: one the solver or the grid check rejects, or one that
    diverges, scores as a bad value. It converges when a sweep over every direction lowers the
    objective by less than `tol` (relative), or stops at `maxiter` solver runs (None:
    `RUNS_PER_PARAMETER` per parameter); the report says which (`converged`, `stopped`), and theta
    is the best one seen either way.
    """
    import scipy.optimize  # here, not at the top: it would add a third of a second to `import sdeflow`

    cap = RUNS_PER_PARAMETER * len(theta0) if maxiter is None else int(maxiter)
    evals = {"n": 0, "rejected": 0}

    def error(theta):
        evals["n"] += 1
        sc, timesteps = build(theta)
        err = rms_error(sampler.sample(sc, sde, x_T, timesteps.to(x_T.dtype)).samples, reference)
        return float(mean_log(err).exp()) if torch.isfinite(err).all() else _REJECTED

    def objective(theta):
        try:
            return error(theta)
        except (ValueError, SolverError):  # the grid check (a ValueError) or the solver refused this candidate
            evals["rejected"] += 1
            return _REJECTED

    start = time.perf_counter()
    before = error(theta0)  # outside the guard: a setup that fails at the start is the caller's error
    res = scipy.optimize.minimize(
        objective, theta0, method="Powell", options={"maxfev": cap, "xtol": 1e-3, "ftol": tol, "disp": False}
    )
    converged = bool(res.success)  # False at the evaluation cap
    report = {
        "objective": f"geometric mean of the per-sample RMS errors on {len(x_T)} pilot draws",
        "objective_before": before,
        "objective_after": min(float(res.fun), before),
        "evaluations": evals["n"],
        "rejected": evals["rejected"],
        "cap": cap,
        "tol": tol,
        "converged": converged,
        "stopped": (
            f"converged: a sweep lowered the objective by less than {tol:.0%}"
            if converged
            else f"stopped at its cap of {cap} solver runs ({res.message})"
        ),
        "message": str(res.message),
        "seconds": time.perf_counter() - start,
        "sampler": repr(sampler),
        "sde": repr(sde),
    }
    if progress:
        print(
            f"{what}: {report['objective']} {before:.3e} -> {report['objective_after']:.3e} in {evals['n']} solver "
            f"runs; {report['stopped']}"
            + ("" if converged else ": the best seen is returned, a larger cap searches on")
        )
    return (res.x if res.fun < before else theta0), report


def optimize_grid(
    sampler,
    score,
    sde,
    x_T: torch.Tensor,
    reference: torch.Tensor,
    init: torch.Tensor,
    maxiter: int | None = None,
    progress: bool = True,
    tol: float = TOL,
) -> tuple[torch.Tensor, dict]:
    """Optimise the interior of `init` (a grid from T to eps) for `sampler`; returns the grid and a report (`search`).

    `init[0]` stays fixed when the sampler reshapes grids (an analytic jump's T); the rest moves.
    The objective is the geometric mean of the per-sample RMS errors of `sampler` from `x_T` against `reference`;
    the search stops when it converges to `tol` or at `maxiter` solver runs (None: `RUNS_PER_PARAMETER` per step).
    """
    init = torch.as_tensor(init, dtype=torch.float64)
    # Points the sampler places itself (an analytic jump's first interval) stay; the rest of the grid moves.
    head = init[: sampler.fixed_head].tolist()
    body = init[len(head) :]
    lam = sde.lambda_(body).numpy()
    ends = (float(body[0]), float(body[-1]))

    def build(theta):
        return score, _grid_from_params(theta, lam[0], lam[-1], ends, head, sde)

    best, report = search(
        sampler, score, sde, x_T, reference, np.log(np.diff(lam)), build, maxiter, "grid search", progress, tol
    )
    grid = build(best)[1]
    return grid, {**report, "steps": len(grid) - 1 - len(head)}


def save_grid(path, grid: torch.Tensor, report: dict) -> Path:
    """Write an optimised grid and how it was found as JSON (atomically)."""
    return write_json(path, {"timesteps": grid.tolist(), **report})


class OptimizedGrid(ListGrid):
    """A grid saved by `save_grid`, reused as a user grid."""

    def __init__(self, path):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"no optimised grid at {path}; make one with sdeflow.tuning.grid_search.optimize_grid and save_grid"
            )
        try:
            data = json.loads(path.read_text())
            times = data["timesteps"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{path} is not a saved grid (a JSON object with a 'timesteps' list): {e}") from e
        super().__init__(times)
        self.report = {k: v for k, v in data.items() if k != "timesteps"}
