"""RePaint (Lugmayr et al. 2022): replacement with resampling, which lets the unknown part agree with the known."""

from __future__ import annotations

import math

from sdeflow.samplers.base import IncompatibleSampler, Sampler


class RePaint(Sampler):
    """Each step is taken `resamples` times: after the step and the replacement at t_{i+1}, the state is
    noised back to t_i along the forward process and the step is taken again (jump length 1).

    Wraps any one-step solver (no multistep history, whose outputs would belong to an abandoned
    path). NFE per step: the solver's times `resamples`. Stochastic (the re-noising).

    Args:
        solver: a one-step sampler (DDIM, PCSampler(...), EDMHeun, ...).
        replacement: a `Replacement` hook, the observation it enforces.
        resamples: U, the times each step is taken (1: plain replacement).
    """

    stochastic = True

    def __init__(self, solver: Sampler, replacement, resamples: int = 10, denoise: bool = False):
        super().__init__(denoise=denoise)
        if solver.nfe_per_step is None or solver.warmup_order is not None or solver.fixed_head:
            raise IncompatibleSampler(f"RePaint repeats steps, so it needs a one-step grid solver; {type(solver).__name__} is not one")
        if int(resamples) != resamples or resamples < 1:
            raise ValueError(f"resamples must be a positive integer, got {resamples}")
        self.solver, self.replacement, self.resamples = solver, replacement, int(resamples)
        self.order = solver.order
        self.nfe_per_step = solver.nfe_per_step * self.resamples

    def solve(self, score, sde, x, sched, noise, record):
        num = sched.num
        state = self.solver.init(score, sde, x, sched)
        for i in range(len(sched) - 1):
            for u in range(self.resamples):
                x_next, state = self.solver.step(score, sde, x, i, state, noise)
                x_next = self.replacement(x_next, sched.t[i + 1])
                if u < self.resamples - 1:
                    # Back to t_i by the forward transition from t_{i+1}: x_i = r x_{i+1} + sqrt(s_i^2 - r^2 s_{i+1}^2) z.
                    r = num.alpha[i] / num.alpha[i + 1]
                    std = math.sqrt(max(num.sigma[i] ** 2 - r**2 * num.sigma[i + 1] ** 2, 0.0))
                    x = r * x_next + std * noise.randn(x.shape, dtype=x.dtype, device=x.device)
            x = record(x_next, i + 1)
        return x
