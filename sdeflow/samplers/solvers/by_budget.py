"""The solver measured best at each budget: `solver=auto`, the apps' default."""

from __future__ import annotations

from dataclasses import dataclass

from sdeflow.samplers.base import Sampler, State, Step

__all__ = ["ByBudget"]


@dataclass
class Chosen(State):
    """The state of `ByBudget`: the solver chosen for this grid and that solver's own state."""

    solver: Sampler | None = None
    inner: State | None = None


class ByBudget(Sampler):
    """Runs, on a grid of n steps, the first of `choices` whose budget bound covers n evaluations.

    The choices are data (`conf/solver/auto.yaml` holds the choice `benchmarks/default_choice.py` makes from
    measurements), not a rule in code: the loop, the grid and the score
    are the chosen solver's as if it were named directly. Every choice takes one score evaluation per
    step and integrates the probability-flow ODE, so the budget fixes the step count, and the step
    count the choice, whichever call (`plan` or `sample`) comes first.

    Args:
        choices: [max_nfe, solver] pairs in increasing max_nfe; the last bound may be None (any budget). A budget above
            every bound runs the last solver.
        denoise: a final denoising step after the chosen solver (counted in the budget).
    """

    nfe_per_step = 1
    stochastic = False

    def __init__(self, choices, denoise: bool = False):
        super().__init__(denoise=denoise)
        pairs = [tuple(c) for c in choices]
        if not pairs or any(len(p) != 2 for p in pairs):
            raise ValueError(f"choices must be [max_nfe, solver] pairs, got {choices!r}")
        bounds = [b for b, _ in pairs]
        if (
            any(b is None for b in bounds[:-1])
            or any(not isinstance(b, int) or b < 1 for b in bounds if b is not None)
            or any(a >= b for a, b in zip(bounds, bounds[1:]) if b is not None)
        ):
            raise ValueError(
                f"choices' budget bounds must be increasing positive integers (the last may be null), got {bounds}"
            )
        for bound, solver in pairs:
            if (
                not isinstance(solver, Sampler)
                or solver.nfe_per_step != 1
                or solver.stochastic
                or solver.fixed_head
                or solver.denoise
            ):
                raise ValueError(
                    f"ByBudget chooses among deterministic grid solvers of one evaluation per step, without a final "
                    f"denoising step (give denoise to ByBudget) or a fixed head; got {solver!r} for max_nfe={bound}"
                )
        self.choices = pairs
        self.order = min(s.order for _, s in pairs)  # what holds whichever is chosen
        self.reversible = all(s.reversible for _, s in pairs)

    def choose(self, steps: int) -> Sampler:
        """The solver for a grid of `steps` steps (the budget is steps + denoise evaluations)."""
        nfe = int(steps) + int(self.denoise)
        return next((s for bound, s in self.choices if bound is None or nfe <= bound), self.choices[-1][1])

    def timesteps(self, grid, sde, steps: int):
        return self.choose(steps).timesteps(grid, sde, steps)

    def init(self, score, sde, x, sched):
        solver = self.choose(len(sched) - 1)
        return Chosen(sched, solver, solver.init(score, sde, x, sched))

    def step(self, score, sde, x, i, state, noise):
        x, inner, _ = Step(*state.solver.step(score, sde, x, i, state.inner, noise))  # its choices take fixed steps
        return x, Chosen(state.sched, state.solver, inner)

    def __repr__(self) -> str:
        table = ", ".join(f"{bound}: {solver!r}" for bound, solver in self.choices)
        return f"ByBudget({{{table}}}, denoise={self.denoise})"
