"""DDIM (Song, Meng & Ermon 2021), the deterministic eta = 0 sampler, for any linear SDE."""

from __future__ import annotations

from sdeflow.samplers.base import Sampler
from sdeflow.samplers.exponential import ddim_step

__all__ = ["DDIM"]


class DDIM(Sampler):
    """DDIM: x_t = (sigma_t / sigma_s) x_s + alpha_t (1 - e^{-h}) x0(x_s), h = lambda_t - lambda_s.

    Probability-flow ODE, order 1, 1 score evaluation per step. Identical to DPM-Solver-1 and
    DPM-Solver++(1), written in data prediction.
    """

    order = 1
    nfe_per_step = 1
    stochastic = False

    def step(self, score, sde, x, i, state, noise):
        return ddim_step(x, score.x0(x, state.sched.t[i], state.sched.coef[i]), state.sched, i), state
