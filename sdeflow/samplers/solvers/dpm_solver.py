"""DPM-Solver, single-step, noise prediction (Lu et al. 2022, Algorithms 1 and 2)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sdeflow.samplers.base import Sampler, State, check_order
from sdeflow.samplers.exponential import dpm_solver_stages, stage_table

__all__ = ["DPMSolver"]


class DPMSolver(Sampler):
    """DPM-Solver-1, -2 or -3: each step evaluates the noise at `order` points in [lambda_s, lambda_t].

    Probability-flow ODE, order `order`, `order` score evaluations per step. Intermediate points
    at r1 = 1/2 (order 2) or r1 = 1/3, r2 = 2/3 (order 3), as in the paper.
    """

    stochastic = False

    def __init__(self, order: int = 3, denoise: bool = False):
        super().__init__(denoise=denoise)
        self.order = check_order(order, (1, 2, 3), "DPMSolver")
        self.nfe_per_step = self.order

    def init(self, score, sde, x, sched):
        # Every step's intermediate times and coefficients, computed once for the grid.
        return Table(sched, sched.memo((DPMSolver, self.order), lambda: stage_table(sde, sched, self.order)))

    def step(self, score, sde, x, i, state, noise):
        return dpm_solver_stages(score, x, state.table[i], self.order)[-1], state


@dataclass
class Table(State):
    """The state of a solver whose per-step coefficients are computed once per grid."""

    table: list = field(default_factory=list)
