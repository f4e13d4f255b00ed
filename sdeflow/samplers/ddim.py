"""DDIM (Song, Meng & Ermon 2021), the deterministic eta = 0 sampler, for any linear SDE."""

from __future__ import annotations

from sdeflow.samplers.base import Sampler
from sdeflow.samplers.exponential import Schedule, ddim_step


class DDIM(Sampler):
    """DDIM: x_t = (sigma_t / sigma_s) x_s + alpha_t (1 - e^{-h}) x0(x_s), h = lambda_t - lambda_s.

    Probability-flow ODE, order 1, 1 score evaluation per step. Identical to DPM-Solver-1 and
    DPM-Solver++(1), written in data prediction.
    """

    order = 1
    nfe_per_step = 1
    stochastic = False

    def solve(self, score, sde, x, timesteps, noise, record):
        sched = Schedule(sde, timesteps)
        for i in range(len(timesteps) - 1):
            x = ddim_step(x, score.x0(x, timesteps[i]), sched, i)
            record(x)
        return x
