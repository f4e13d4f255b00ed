"""RePaint (Lugmayr et al. 2022): replacement with resampling jumps, which let the unknown part agree with the known."""

from __future__ import annotations

import math

from sdeflow.conditioning.inverse.base import Bound, InverseMethod
from sdeflow.conditioning.inverse.replacement import _ReplacementHook
from sdeflow.samplers.base import IncompatibleSampler, Sampler, Step


class RePaint(InverseMethod):
    """Replacement (`Replacement`) at every grid point, the steps taken in blocks of `jump` grid steps, each block
    `resamples` times: after a pass through the block, the state is noised back to the block's start along
    the forward process and the block is taken again. Lugmayr et al. use jump 10, resamples 10 on 250 steps.

    Drives any one-step solver (no multistep history, whose outputs would belong to an abandoned path);
    others are refused at `bind` (`IncompatibleSampler`). NFE per step: the solver's times `resamples`,
    whatever the jump. Stochastic (the re-noising).

    Args:
        resamples: U, the times each block is taken (1: plain replacement).
        jump: j, the grid steps of a block, the length of each jump back in time (the last block may be shorter).
        limit: the watch on the iterates (`InverseMethod`).
    """

    usage = "sf.inverse.RePaint(resamples=10, jump=10).bind(score, sde, solver, operator, y, noise_std)"

    def __init__(self, *, resamples: int = 10, jump: int = 1, limit: float | None = 1000.0):
        for name, v in (("resamples", resamples), ("jump", jump)):
            if int(v) != v or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v}")
        self.resamples, self.jump = int(resamples), int(jump)
        super().__init__(limit=limit)

    def bind(self, score, sde, solver, operator, y, noise_std, seed=0, offset=0):
        replacement = _ReplacementHook(sde, operator, y, seed=seed, offset=offset)
        return Bound(score, self.watched(_RePaintSampler(solver, replacement, self.resamples, self.jump)))


class _RePaintSampler(Sampler):
    stochastic = True

    def __init__(self, solver: Sampler, replacement, resamples: int, jump: int):
        super().__init__(denoise=solver.denoise)
        if solver.nfe_per_step is None or solver.warmup_order is not None or solver.fixed_head:
            raise IncompatibleSampler(
                f"RePaint repeats steps, so it needs a one-step grid solver; {type(solver).__name__} is not one"
            )
        self.solver, self.replacement, self.resamples, self.jump = solver, replacement, resamples, jump
        self.order = solver.order
        self.nfe_per_step = solver.nfe_per_step * resamples

    # Its own driver: the one loop visits each grid interval once, and RePaint takes each block `resamples` times.
    def solve(self, score, sde, x, sched, noise, record):
        num, n = sched.num, len(sched) - 1
        state = self.solver.init(score, sde, x, sched)
        for start in range(0, n, self.jump):
            stop = min(start + self.jump, n)
            for u in range(self.resamples):
                last = u == self.resamples - 1
                x_i = x
                for i in range(start, stop):
                    x_i, state, _ = Step(*self.solver.step(score, sde, x_i, i, state, noise))  # a fixed step
                    x_i = self.replacement(x_i, sched.t[i + 1])
                    if last:
                        x_i = record(x_i, i + 1)
                if not last:
                    # Back to the block's start by the forward transition from its end:
                    # x_start = r x_stop + sqrt(s_start^2 - r^2 s_stop^2) z, r = alpha_start / alpha_stop.
                    r = num.alpha[start] / num.alpha[stop]
                    std = math.sqrt(max(num.sigma[start] ** 2 - r**2 * num.sigma[stop] ** 2, 0.0))
                    x = r * x_i + std * noise.randn(x_i.shape, dtype=x_i.dtype, device=x_i.device)
            x = x_i
        return x

    def __repr__(self) -> str:
        return f"RePaint({self.solver!r}, resamples={self.resamples}, jump={self.jump})"
