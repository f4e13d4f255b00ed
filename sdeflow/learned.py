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
from pathlib import Path

import numpy as np
import torch

from sdeflow.grid_search import _grid_from_params, search
from sdeflow.grids import ListGrid
from sdeflow.guidance import GuidedScore
from sdeflow.io import write_json
from sdeflow.utils import append_dims


class ShiftedScore(GuidedScore):
    """`base` with decoupled evaluation times: queried at grid time `times[i]`, it returns the score at t whose noise is
    the model's noise prediction at `eval_times[i]`; at any other time (a multistage solver's inner stages) it is `base`.

    The noise, not the score, is carried over: eps is what a network predicts on one scale at every time.
    """

    def __init__(self, base, times, eval_times):
        super().__init__(base)
        self.times = torch.as_tensor(times, dtype=torch.float64)
        self.eval_times = torch.as_tensor(eval_times, dtype=torch.float64)
        if self.times.shape != self.eval_times.shape or self.times.ndim != 1:
            raise ValueError(f"need one evaluation time per grid time, got {tuple(self.times.shape)} and {tuple(self.eval_times.shape)}")

    def guided(self, x, t, alpha, sigma, active):
        # The solver's t is the grid time in the samples' dtype: matched to that dtype's precision.
        tol = 1e-12 if x.dtype == torch.float64 else 1e-6
        hit = torch.isclose(self.times, t[:1].to(torch.float64).cpu(), rtol=tol, atol=tol * 1e-3).nonzero()
        if len(hit) == 0 or not bool((t == t[0]).all()):
            return self.base_score(self.base, x, t, alpha, sigma)
        s = self.eval_times[int(hit[0])]
        a_s, sigma_s = self.sde.alpha(s), self.sde.sigma(s)
        score_s = self.base_score(self.base, x, torch.full_like(t, float(s)), a_s.to(x.dtype), sigma_s.to(x.dtype))
        ratio = torch.as_tensor(sigma_s, dtype=x.dtype, device=x.device) / torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        # eps = -sigma_s score_s at t'_i, read as the noise at t_i: score = -eps / sigma_t.
        return append_dims(ratio, x.ndim) * score_s


class Learned:
    """A fitted grid and its evaluation times: `grid` for `sampler.plan`/`sample`, `wrap(score)` for the score."""

    def __init__(self, times, eval_times, report: dict | None = None):
        self.times = torch.as_tensor(times, dtype=torch.float64)
        self.eval_times = torch.as_tensor(eval_times, dtype=torch.float64)
        self.grid = ListGrid(self.times)
        if len(self.eval_times) != len(self.times) - 1:
            raise ValueError(f"need an evaluation time for each of the {len(self.times) - 1} steps, got {len(self.eval_times)}")
        self.report = report or {}

    def wrap(self, score):
        """The score to sample with: queried at the learned evaluation times (the score itself where they are the grid's)."""
        if torch.equal(self.eval_times, self.times[:-1]):
            return score
        return ShiftedScore(score, self.times[:-1], self.eval_times)

    @classmethod
    def load(cls, path) -> "Learned":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no learned solver coefficients at {path}; fit them with sdeflow.learned.learn and save_learned")
        try:
            data = json.loads(path.read_text())
            return cls(data["timesteps"], data["eval_times"], {k: v for k, v in data.items() if k not in ("timesteps", "eval_times")})
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path} is not saved learned coefficients (JSON with 'timesteps' and 'eval_times'): {e}") from e


def save_learned(path, learned: Learned, report: dict | None = None) -> Path:
    """Write learned coefficients and how they were found as JSON (atomically)."""
    return write_json(path, {"timesteps": learned.times.tolist(), "eval_times": learned.eval_times.tolist(), **(report or learned.report)})


def learn(sampler, score, sde, x_T: torch.Tensor, reference: torch.Tensor, init: torch.Tensor, maxiter: int = 2000,
          progress: bool = True) -> tuple[Learned, dict]:
    """Fit the interior of the grid `init` and one evaluation time per step, jointly, for `sampler` on pilot draws.

    The parameters are the grid's log-SNR increments (as in `optimize_grid`) and each step's log-SNR
    shift of its evaluation time (0 at the start: the plain solver). Derivative-free (Powell), so any
    solver and model work; a candidate the solver refuses scores as a bad value. The error is the mean
    per-sample RMS error from `x_T` against `reference`.
    """
    if sampler.fixed_head or sampler.nfe_per_step is None:
        raise ValueError(f"{type(sampler).__name__} does not take a grid as given; learn the coefficients of a grid solver")
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
    best, report = search(sampler, score, sde, x_T, reference, theta0, setup, maxiter, "learned coefficients", progress)
    report.update(steps=n, method="grid and decoupled evaluation times")
    learned = build(best)
    learned.report = report
    return learned, report
