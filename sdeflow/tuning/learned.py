"""Learned solver coefficients: a grid and decoupled evaluation times, fitted on pilot trajectories.

For a few-step solver the time a step is taken at and the time the model is best queried at need
not agree. As in the Time-Shift Sampler (Li et al. 2024) and LD3's joint learning of the grid (Tong
et al. 2024), step i of the grid t_0 > ... > t_N queries the model at its own time t'_i; t'_i and the
grid are fitted together on pilot trajectories against the exact (or tightly solved) probability-flow
solution. The solver is unchanged: `ShiftedScore` answers its query at t_i with the model's
prediction of the noise at t'_i, so every solver and every prediction type works. Like an optimised
grid, the result is saved as JSON (`save_learned`) and reused (`Learned.load`).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from sdeflow.conditioning.guidance import GuidedScore
from sdeflow.core.io import write_json
from sdeflow.core.tensors import append_dims
from sdeflow.eval.metrics import rms_error
from sdeflow.samplers.grids import ListGrid
from sdeflow.tuning.grid_search import TOL, _grid_from_params, mean_log, no_harm, search

# The learned table's fit is checked for progress every this many L-BFGS iterations (see `learn_multistep`).
CHECK_EVERY = 25


class ShiftedScore(GuidedScore):
    """`base` with decoupled evaluation times: queried at grid time `times[i]`, it returns the score at t whose noise
    is the model's noise prediction at `eval_times[i]`; at any other time (a multistage solver's inner stages) it is
    `base`.

    The noise, not the score, is carried over: eps is what a network predicts on one scale at every time.
    """

    def __init__(self, base, times, eval_times):
        super().__init__(base)
        self.times = torch.as_tensor(times, dtype=torch.float64)
        self.eval_times = torch.as_tensor(eval_times, dtype=torch.float64)
        if self.times.shape != self.eval_times.shape or self.times.ndim != 1:
            raise ValueError(
                f"need one evaluation time per grid time, got {tuple(self.times.shape)} and "
                f"{tuple(self.eval_times.shape)}"
            )

    def guided(self, x, t, alpha, sigma, active):
        # The solver's t is the grid time in the samples' dtype: matched to that dtype's precision.
        tol = 1e-12 if x.dtype == torch.float64 else 1e-6
        hit = torch.isclose(self.times, t[:1].to(torch.float64).cpu(), rtol=tol, atol=tol * 1e-3).nonzero()
        if len(hit) == 0 or not bool((t == t[0]).all()):
            return self.base_score(self.base, x, t, alpha, sigma)
        s = self.eval_times[int(hit[0])]
        a_s, sigma_s = self.sde.alpha(s), self.sde.sigma(s)
        score_s = self.base_score(self.base, x, torch.full_like(t, float(s)), a_s.to(x.dtype), sigma_s.to(x.dtype))
        ratio = torch.as_tensor(sigma_s, dtype=x.dtype, device=x.device) / torch.as_tensor(
            sigma, dtype=x.dtype, device=x.device
        )
        # eps = -sigma_s score_s at t'_i, read as the noise at t_i: score = -eps / sigma_t.
        return append_dims(ratio, x.ndim) * score_s


class Learned:
    """A fitted grid and its evaluation times: `grid` for `sampler.plan`/`sample`, `wrap(score)` for the score."""

    def __init__(self, times, eval_times, report: dict | None = None):
        self.times = torch.as_tensor(times, dtype=torch.float64)
        self.eval_times = torch.as_tensor(eval_times, dtype=torch.float64)
        self.grid = ListGrid(self.times)
        if len(self.eval_times) != len(self.times) - 1:
            raise ValueError(
                f"need an evaluation time for each of the {len(self.times) - 1} steps, got {len(self.eval_times)}"
            )
        self.report = report or {}

    def wrap(self, score):
        """The score to sample with: queried at the learned evaluation times (the score itself where they are the
        grid's)."""
        if torch.equal(self.eval_times, self.times[:-1]):
            return score
        return ShiftedScore(score, self.times[:-1], self.eval_times)

    def sampler(self, solver):
        """The solver to sample with: the one the times were fitted for."""
        return solver

    @classmethod
    def load(cls, path) -> "Learned":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"no learned solver coefficients at {path}; fit them with sdeflow.tuning.learned.learn and save_learned"
            )
        try:
            data = json.loads(path.read_text())
            return cls(
                data["timesteps"],
                data["eval_times"],
                {k: v for k, v in data.items() if k not in ("timesteps", "eval_times")},
            )
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise ValueError(
                f"{path} is not saved learned coefficients (JSON with 'timesteps' and 'eval_times'): {e}"
            ) from e


class MultistepFit:
    """A learned multistep table with its grid (`learn_multistep`): `sampler(...)` is the table, whatever solver it
    started from; `grid` its own grid; the score is used as it is."""

    def __init__(self, table, times, report: dict | None = None):
        self.table = table
        self.times = torch.as_tensor(times, dtype=torch.float64)
        self.grid = ListGrid(self.times)
        self.report = report or {}

    @classmethod
    def of(cls, solver, sde, times) -> "MultistepFit":
        """`solver`'s own table on `times` (`LearnedMultistep.from_solver`): the fit that changes nothing."""
        from sdeflow.samplers.solvers.learned_multistep import LearnedMultistep

        return cls(LearnedMultistep.from_solver(solver, sde, times), times)

    def wrap(self, score):
        return score

    def sampler(self, solver):
        return self.table

    @classmethod
    def load(cls, path) -> "MultistepFit":
        """A table written by `LearnedMultistep.save`, with its grid and report."""
        from sdeflow.samplers.solvers.learned_multistep import LearnedMultistep

        table, grid = LearnedMultistep.load(path)
        report = {k: v for k, v in json.loads(Path(path).read_text()).items() if k not in ("timesteps", "coefficients")}
        return cls(table, grid.times, report)


def save_learned(path, learned: Learned, report: dict | None = None) -> Path:
    """Write learned coefficients and how they were found as JSON (atomically)."""
    return write_json(
        path,
        {"timesteps": learned.times.tolist(), "eval_times": learned.eval_times.tolist(), **(report or learned.report)},
    )


def learn(
    sampler,
    score,
    sde,
    x_T: torch.Tensor,
    reference: torch.Tensor,
    init: torch.Tensor,
    maxiter: int | None = None,
    progress: bool = True,
    tol: float = TOL,
) -> tuple[Learned, dict]:
    """Fit the interior of the grid `init` and one evaluation time per step, jointly, for `sampler` on pilot draws.

    The parameters are the grid's log-SNR increments (as in `optimize_grid`) and each step's log-SNR
    shift of its evaluation time (0 at the start: the plain solver). Derivative-free (Powell), so any
    solver and model work; a candidate the solver refuses scores as a bad value. The objective is the
    geometric mean of the per-sample RMS errors from `x_T` against `reference`; the search converges
    to `tol` or stops at `maxiter` solver runs (None: `RUNS_PER_PARAMETER` per parameter), as `search` reports.
    """
    if sampler.fixed_head or sampler.nfe_per_step is None:
        raise ValueError(
            f"{type(sampler).__name__} does not take a grid as given; learn the coefficients of a grid solver"
        )
    init = torch.as_tensor(init, dtype=torch.float64)
    n = len(init) - 1
    lam = sde.lambda_(init).numpy()
    lam_lo, lam_hi = float(lam[0]), float(lam[-1])
    ends = (float(init[0]), float(init[-1]))

    def build(theta):
        grid = _grid_from_params(theta[:n], lam_lo, lam_hi, ends, [], sde)
        shifted = np.clip(sde.lambda_(grid[:-1]).numpy() + theta[n:], lam_lo, lam_hi)
        eval_times = sde.t_from_lambda(torch.as_tensor(shifted)).clamp(min(ends), max(ends))
        return Learned(grid, eval_times)

    def setup(theta):
        fit = build(theta)
        return fit.wrap(score), fit.times

    theta0 = np.concatenate([np.log(np.diff(lam)), np.zeros(n)])  # the plain grid, each step queried at its own time
    best, report = search(
        sampler, score, sde, x_T, reference, theta0, setup, maxiter, "learned coefficients", progress, tol
    )
    report.update(steps=n, method="grid and decoupled evaluation times")
    learned = build(best)
    learned.report = report
    return learned, report


def _grid_parameters(sde, init: torch.Tensor):
    """The grid as differentiable parameters: softmax weights of its log-SNR steps between lambda(T) and its last
    finite lambda (itself free when the grid ends where lambda is infinite, sigma = 0), so every candidate is strictly
    decreasing and keeps its end points. Returns (parameters, grid(parameters))."""
    lam = sde.lambda_(init)
    open_end = not bool(torch.isfinite(lam[-1]))
    body = lam[:-1] if open_end else lam
    theta = torch.log(torch.diff(body) / (body[-1] - body[0]))
    params = [theta.clone().requires_grad_(True)] + ([body[-1].clone().requires_grad_(True)] if open_end else [])
    t_first, t_last = init[:1], init[-1:]

    def grid(params):
        last = params[1] if open_end else body[-1]
        fractions = torch.cumsum(torch.softmax(params[0], 0), 0)
        interior = (
            body[0] + (last - body[0]) * fractions[:-1] if not open_end else body[0] + (last - body[0]) * fractions
        )
        return torch.cat([t_first, sde.t_from_lambda(interior), t_last])

    return params, grid


def learn_multistep(
    score,
    sde,
    x_T: torch.Tensor,
    reference: torch.Tensor,
    init: torch.Tensor,
    history: int | None = None,
    learn_grid: bool = True,
    maxiter: int = 2000,
    held: tuple | None = None,
    progress: bool = True,
    start=None,
    tol: float = TOL,
):
    """Fit a `LearnedMultistep` table, and with it the grid, on pilot draws: S4S's coefficients with LD3's grid.

    Starts from the table of `start` (default DPM-Solver++(2M); any solver `LearnedMultistep.from_solver` reads) on
    `init` and minimises the mean log of the per-sample RMS errors from `x_T` against `reference` (`mean_log`: the
    exact or tightly solved probability-flow solution) by L-BFGS, with gradients through the model's evaluations
    along the rollout (the model must be differentiable in x and, to move the grid, in t). Each step weighs x and the
    last `history` data predictions (default: all of them). A candidate that diverges counts as a bad value, never an
    exception. The fit converges when `CHECK_EVERY` iterations lower the objective's geometric mean by less than `tol`
    (or L-BFGS finds a stationary point), or stops at `maxiter` iterations; the report says which.
    `held` = (x_T, reference) of held-out draws: the fit is kept only if it lowers both their median and their mean
    error (`no_harm`).

    Returns (solver, grid times, report); `solver.save(path, times, report)` keeps them.
    """
    from sdeflow.samplers.solvers.dpm_solver_pp import DPMSolverPP
    from sdeflow.samplers.solvers.learned_multistep import LearnedMultistep, combine

    init = torch.as_tensor(init, dtype=torch.float64)
    n = len(init) - 1
    history = n if history is None else int(history)
    if not 1 <= history:
        raise ValueError(f"history must be at least 1, got {history}")
    start = DPMSolverPP(2) if start is None else start
    start_table = LearnedMultistep.from_solver(start, sde, init).coefficients
    # x's weight and the predictions the start solver weighs.
    used = int(start_table.abs().gt(0).any(0).nonzero().max()) + 1
    if used > 1 + history:
        raise ValueError(f"{start!r} weighs {used - 1} data predictions per step; give history >= {used - 1}")
    table0 = torch.zeros(n, 1 + history, dtype=torch.float64)
    table0[:, :used] = start_table[:, :used]
    learn_grid = learn_grid and n >= 2  # a one-step grid has no interior to move
    grid_params, grid_of = _grid_parameters(sde, init) if learn_grid else ([], None)
    params = [table0.clone().requires_grad_(True)] + grid_params

    def times():
        return grid_of(params[1:]) if learn_grid else init

    def rollout(x, table, t):
        predictions = []
        for i in range(n):
            predictions.append(score.x0(x, t[i].to(x.dtype)))
            x = combine(table[i].to(x.dtype), x, predictions)
        return x

    def errors(x, ref, table, t):
        return rms_error(rollout(x, table, t), ref)

    best = {"loss": float("inf"), "params": [p.detach().clone() for p in params]}
    evals = {"n": 0, "rejected": 0}
    optimiser = torch.optim.LBFGS(
        params,
        lr=1.0,
        max_iter=CHECK_EVERY,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-12,
        tolerance_change=1e-14,
        history_size=100,
    )

    def closure():
        optimiser.zero_grad()
        evals["n"] += 1
        with torch.enable_grad():
            loss = mean_log(errors(x_T, reference, params[0], times()))
            if not bool(torch.isfinite(loss)):
                evals["rejected"] += 1
                return torch.tensor(1e30, dtype=torch.float64)  # no gradient: the line search backs off
            loss.backward()
        if loss.item() < best["loss"]:
            best["loss"], best["params"] = loss.item(), [p.detach().clone() for p in params]
        return loss

    clock = time.perf_counter()
    with torch.no_grad():
        start_errors = errors(x_T, reference, table0, init)
    before = float(mean_log(start_errors))
    # Only the table and the grid are fitted: the network's own weights need no gradient (a third of its backward pass).
    weights = getattr(getattr(score, "model", None), "parameters", None)
    frozen = [p for p in weights() if p.requires_grad] if callable(weights) else []
    for p in frozen:
        p.requires_grad_(False)
    iterations, converged, stopped = 0, False, f"stopped at its cap of {int(maxiter)} iterations"
    try:
        # L-BFGS in rounds of CHECK_EVERY iterations, its state carried over, each round checked for progress.
        while iterations < int(maxiter):
            group = optimiser.param_groups[0]
            group["max_iter"] = min(CHECK_EVERY, int(maxiter) - iterations)
            group["max_eval"] = group["max_iter"] * 5 // 4
            loss_before = min(best["loss"], before)
            optimiser.step(closure)
            done = int(optimiser.state[params[0]].get("n_iter", 0)) - iterations
            iterations += done
            gain = 1 - math.exp(min(best["loss"], before) - loss_before)  # the geometric mean's relative fall
            if gain < tol:
                converged = True
                stopped = f"converged: its last {done} iteration(s) lowered the objective by less than {tol:.0%}"
                break
    finally:
        for p in frozen:
            p.requires_grad_(True)
    with torch.no_grad():
        for p, b in zip(params, best["params"]):
            p.copy_(b)
        fitted_times = times().detach()
    # The objective decides; the report also gives the median per-sample RMS error, the figure results are read in.
    report = {
        "method": "learned multistep coefficients" + (" and grid" if learn_grid else ""),
        "steps": n,
        "history": history,
        "objective": f"mean log of the per-sample RMS errors on {len(x_T)} pilot draws",
        "objective_before": before,
        "objective_after": min(best["loss"], before),
        "evaluations": evals["n"],
        "rejected": evals["rejected"],
        "iterations": iterations,
        "cap": int(maxiter),
        "tol": tol,
        "converged": converged,
        "stopped": stopped,
        "pilot_nfe": evals["n"] * n * len(x_T),
        "seconds": time.perf_counter() - clock,
    }
    solver, grid = LearnedMultistep(params[0].detach().clone()), fitted_times
    if best["loss"] >= before:
        solver, grid = LearnedMultistep(table0), init
    with torch.no_grad():
        report.update(
            error_before=float(start_errors.median()),
            error_after=float(errors(x_T, reference, solver.coefficients, grid).median()),
        )
        if held is not None:
            kept, check = no_harm(
                errors(held[0], held[1], table0, init), errors(held[0], held[1], solver.coefficients, grid)
            )
            report.update(check, kept=kept)
            if not kept:
                solver, grid = LearnedMultistep(table0), init
    if progress:
        print(
            f"learned multistep: {report['objective']} {before:.3f} -> {report['objective_after']:.3f} (median "
            f"{report['error_before']:.3e} -> {report['error_after']:.3e}) in {evals['n']} evaluations "
            f"({report['pilot_nfe']} pilot NFE, {report['seconds']:.0f} s); {stopped}"
            + ("" if converged else ": the best seen is kept")
        )
    return solver, grid, report
