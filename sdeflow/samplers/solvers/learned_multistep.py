"""A linear multistep solver whose coefficients are learned, one set per step of its own grid (S4S, Frankel et al.
2025)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from sdeflow.core.io import write_json
from sdeflow.samplers.base import BudgetError, Multistep, Sampler
from sdeflow.samplers.grids import ListGrid

__all__ = ["LearnedMultistep"]


def combine(weights, x: torch.Tensor, history: list) -> torch.Tensor:
    """weights[0] x + weights[1] history[-1] + weights[2] history[-2] + ...: one step of the table (newest
    prediction first)."""
    out = weights[0] * x
    for k in range(min(len(weights) - 1, len(history))):
        out = out + weights[k + 1] * history[-1 - k]
    return out


class LearnedMultistep(Sampler):
    """x_{i+1} = a_i x_i + b_{i,0} x0(x_i, t_i) + b_{i,1} x0(x_{i-1}, t_{i-1}) + ...: a linear multistep method in data
    prediction whose weights, one row per step of the grid it was fitted on, are fitted on pilot trajectories
    (`sdeflow.tuning.learned.learn_multistep`) rather than derived from a Taylor expansion.

    DPM-Solver++(2M) is one such table (`from_solver`, the fit's starting point). The table belongs to
    its grid: the solver runs on that grid only (`LearnedMultistep.load` returns both), with one
    score evaluation per step. No convergence order is claimed: the steps of a fitted table cannot be
    refined (`order` = 1 is what its first step, DDIM's, guarantees before fitting).

    Args:
        coefficients: (steps, 1 + history) weights; row i is (a_i, b_{i,0}, b_{i,1}, ...), the weights of x_i and of the
            data predictions at grid points i, i - 1, ...; weights beyond the predictions made so far are unused.
    """

    order = 1
    nfe_per_step = 1
    stochastic = False
    reversible = False

    def __init__(self, coefficients, denoise: bool = False):
        super().__init__(denoise=denoise)
        table = torch.as_tensor(coefficients, dtype=torch.float64)
        if table.ndim != 2 or table.shape[0] < 1 or table.shape[1] < 2:
            raise ValueError(
                f"coefficients must be a (steps, 1 + history) table with history >= 1, got shape {tuple(table.shape)}"
            )
        if not bool(torch.isfinite(table).all()):
            raise ValueError("coefficients must be finite")
        self.coefficients = table
        self._rows = table.tolist()  # Python floats: scalar weights cost no tensor op per step

    @property
    def steps(self) -> int:
        return self.coefficients.shape[0]

    def steps_for_nfe(self, nfe: int) -> int:
        if int(nfe) - int(self.denoise) != self.steps:
            raise BudgetError(
                f"LearnedMultistep was fitted for {self.steps} steps ({self.steps + int(self.denoise)} NFE), "
                f"got nfe={nfe}"
            )
        return self.steps

    def init(self, score, sde, x, sched):
        if len(sched) - 1 != self.steps:
            raise ValueError(
                f"LearnedMultistep was fitted on a grid of {self.steps} steps; this grid has {len(sched) - 1} "
                "(run it on the grid it was fitted with: LearnedMultistep.load returns both)"
            )
        return Multistep(sched)

    def step(self, score, sde, x, i, state, noise):
        sched = state.sched
        history = (state.history + [score.x0(x, sched.t[i], sched.coef[i])])[-(len(self._rows[i]) - 1) :]
        return combine(self._rows[i], x, history), Multistep(sched, history)

    @classmethod
    def from_solver(cls, solver, sde, times) -> "LearnedMultistep":
        """The table of any deterministic solver of one evaluation per step that is linear in x and the model's
        outputs (DDIM, DPM-Solver++, UniPC with its corrector, DEIS, iPNDM), read off it on the grid `times`: the fit's
        starting point, equal to that solver step for step.

        The solver is run once on a symbolic problem: x_T is the unit vector e_0 and the model's data prediction at its
        k-th evaluation is e_{k+1}, whatever x, so every state it reaches is its vector of weights on (x_T, x0_0, x0_1,
        ...). A table's rows are then the weights of each evaluation point on the previous one and the predictions so
        far (a corrector that moves the carried state is folded in exactly; the table has a full history).
        """
        from sdeflow.score.function import ScoreFunction, X0Prediction

        if solver.stochastic or solver.nfe_per_step != 1 or solver.fixed_head or solver.denoise:
            raise ValueError(
                f"from_solver reads deterministic grid solvers of one evaluation per step, without a fixed head or "
                f"a final denoising step; got {solver!r}"
            )
        times = torch.as_tensor(times, dtype=torch.float64)
        n = len(times) - 1
        points = []  # where the model was evaluated: weights on (x_T, x0_0, ..., x0_{n-1})

        def unit_prediction(x, t):
            if len(points) == n:
                raise ValueError(f"{solver!r} made more than {n} evaluations on a grid of {n} steps")
            points.append(x[0].clone())
            return torch.zeros_like(x).index_fill_(1, torch.tensor([len(points)]), 1.0)

        x_T = torch.zeros(1, 1 + n, dtype=torch.float64)
        x_T[0, 0] = 1.0
        final = solver.sample(ScoreFunction(unit_prediction, sde, X0Prediction()), sde, x_T, times).samples[0]
        if len(points) != n:
            raise ValueError(
                f"{solver!r} made {len(points)} evaluations on a grid of {n} steps; a table needs one per step"
            )
        points.append(final)
        rows = []
        for i in range(n):
            a = points[i + 1][0] / points[i][0]
            b = points[i + 1][1:] - a * points[i][1:]  # the weight of x0_j, for j = 0 .. n - 1
            b = torch.where(
                b.abs() < 1e-12, 0.0, b
            )  # rounding left by the subtraction, where the solver weighs nothing
            if bool(b[i + 1 :].ne(0).any()):
                raise ValueError(f"{solver!r} is not a table: step {i} uses a prediction not made yet")
            rows.append([float(a)] + b[: i + 1].flip(0).tolist() + [0.0] * (n - 1 - i))
        return cls(rows)

    def save(self, path, times, report: dict | None = None) -> Path:
        """Write the table and its grid (and how they were found) as JSON, atomically."""
        return write_json(
            path,
            {
                "timesteps": torch.as_tensor(times, dtype=torch.float64).tolist(),
                "coefficients": self.coefficients.tolist(),
                **(report or {}),
            },
        )

    @classmethod
    def load(cls, path) -> tuple["LearnedMultistep", ListGrid]:
        """(solver, its grid) from a file written by `save`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"no learned multistep coefficients at {path}; fit them with sdeflow.learn_multistep"
            )
        try:
            data = json.loads(path.read_text())
            solver, grid = cls(data["coefficients"]), ListGrid(data["timesteps"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise ValueError(
                f"{path} is not saved learned multistep coefficients (JSON with 'timesteps' and 'coefficients'): {e}"
            ) from e
        if len(grid.times) - 1 != solver.steps:
            raise ValueError(f"{path}: {solver.steps} rows of coefficients for a grid of {len(grid.times) - 1} steps")
        return solver, grid

    def __repr__(self) -> str:
        return f"LearnedMultistep(steps={self.steps}, history={self.coefficients.shape[1] - 1})"
