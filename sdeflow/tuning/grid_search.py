"""Grid optimisation: the time steps that minimise a solver's error for a given NFE budget.

In the spirit of "Align Your Steps" (Sabour et al. 2024) and GITS/DMN: the grid's log-SNR
increments are free parameters; the objective is the solver's mean RMS error on pilot samples
against the exact (or tightly solved) probability-flow solution from the same prior draws.
SciPy's derivative-free minimiser searches them, so any solver and any score model work,
differentiable or not. The result is saved as JSON and reused through `OptimizedGrid`.
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
    maxiter: int,
    what: str,
    progress: bool = True,
) -> tuple[np.ndarray, dict]:
    """Powell's method on parameters theta of a sampling setup, `build(theta) -> (score, timesteps)`: the best theta
    and a report. The error is the mean per-sample RMS error of `sampler` from `x_T` against `reference`.

    The search never fails on a candidate: one the solver or the grid check rejects, or one that
    diverges, scores as a bad value. It stops when Powell's method converges or at `maxiter` solver
    runs; the report says which (`converged`, `message`), and theta is the best one seen either way.
    """
    import scipy.optimize  # here, not at the top: it would add a third of a second to `import sdeflow`

    evals = {"n": 0, "rejected": 0}

    def error(theta):
        evals["n"] += 1
        sc, timesteps = build(theta)
        err = rms_error(sampler.sample(sc, sde, x_T, timesteps.to(x_T.dtype)).samples, reference)
        return float(err.mean()) if torch.isfinite(err).all() else _REJECTED

    def objective(theta):
        try:
            return error(theta)
        except (ValueError, SolverError):  # the grid check (a ValueError) or the solver refused this candidate
            evals["rejected"] += 1
            return _REJECTED

    start = time.perf_counter()
    before = error(theta0)  # outside the guard: a setup that fails at the start is the caller's error
    res = scipy.optimize.minimize(
        objective, theta0, method="Powell", options={"maxfev": maxiter, "xtol": 1e-3, "ftol": 1e-4, "disp": False}
    )
    converged = bool(res.success)  # False at the evaluation cap
    report = {
        "error_before": before,
        "error_after": min(float(res.fun), before),
        "evaluations": evals["n"],
        "rejected": evals["rejected"],
        "converged": converged,
        "message": str(res.message),
        "seconds": time.perf_counter() - start,
        "sampler": repr(sampler),
        "sde": repr(sde),
    }
    if progress:
        print(
            f"{what}: mean RMS error {before:.3e} -> {report['error_after']:.3e} in {evals['n']} solver runs"
            + (
                ""
                if converged
                else f"; NOT converged ({res.message}): the best seen is returned, a larger maxiter searches on"
            )
        )
    return (res.x if res.fun < before else theta0), report


def optimize_grid(
    sampler,
    score,
    sde,
    x_T: torch.Tensor,
    reference: torch.Tensor,
    init: torch.Tensor,
    maxiter: int = 2000,
    progress: bool = True,
) -> tuple[torch.Tensor, dict]:
    """Optimise the interior of `init` (a grid from T to eps) for `sampler`; returns the grid and a report (`search`).

    `init[0]` stays fixed when the sampler reshapes grids (an analytic jump's T); the rest moves.
    The error is the mean per-sample RMS error of `sampler` from `x_T` against `reference`.
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
        sampler, score, sde, x_T, reference, np.log(np.diff(lam)), build, maxiter, "grid search", progress
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
