"""Adaptive reverse-SDE solver of Jolicoeur-Martineau et al. 2021 ("Gotta Go Fast"), per-sample steps."""

from __future__ import annotations

import torch

from sdeflow.core.tensors import append_dims
from sdeflow.samplers.adaptive import StepSizeController, error_norm
from sdeflow.samplers.base import Adaptive, Sampler, Step

__all__ = ["GottaGoFast"]


class GottaGoFast(Sampler):
    """Euler-Maruyama / stochastic improved Euler pair with the same noise; every sample has its own step.

    One attempt from t with step h: K1 = -h f(x, t) + g(t) sqrt(h) z, K2 = -h f(x + K1, t - h) +
    g(t - h) sqrt(h) z; the error E = RMS((K2 - K1) / 2 / delta), delta = max(abstol, reltol
    max(|x + K1|, |x'_prev|)). Accepted samples (E <= 1) move to x + (K1 + K2) / 2 (extrapolation);
    then h <- min(what is left, safety h E^(-exp)). Reverse SDE, weak order 1, 2 score evaluations per
    attempt (counted for the whole batch until its last sample arrives). With `sdeflow.PerSampleNoise`
    each sample's path is independent of its batch. Runs through every grid point given (`plan` gives
    the grid's two ends).

    As published, a rejected attempt draws fresh noise, which biases the result where the error norm
    is dominated by a few coordinates: on 2-D data we measured mode weights off by 0.03 at
    reltol 0.01, and the bias grows as the tolerance tightens; from d = 16 up it is below Monte Carlo
    error. Rejection sampling with memory (Rackauckas & Nie 2017) would remove it; it is not done here.
    """

    order = 1
    nfe_per_step = None
    stochastic = True

    def __init__(
        self,
        reltol: float = 0.01,
        abstol: float = 0.0078,
        h_init: float = 0.01,
        safety: float = 0.9,
        exp: float = 0.9,
        max_steps: int = 10_000,
        denoise: bool = False,
    ):
        super().__init__(denoise=denoise)
        if not (reltol > 0 and abstol > 0 and h_init > 0 and 0 < safety <= 1 and exp > 0):
            raise ValueError("need reltol > 0, abstol > 0, h_init > 0, 0 < safety <= 1 and exp > 0")
        self.reltol, self.abstol, self.h_init = float(reltol), float(abstol), float(h_init)
        # h <- safety h E^(-exp), for each sample from its own error norm.
        self.controller = StepSizeController(float(safety), float(exp))
        self.max_steps = int(max_steps)

    def init(self, score, sde, x, sched):
        t = sched.t[0].expand(x.shape[0]).clone()
        return Adaptive(sched, t, torch.full_like(t, self.h_init), x)

    def step(self, score, sde, x, i, state, noise):
        end, t = state.sched.t[i + 1], state.t
        h = torch.minimum(state.h, t - end)
        rsde = sde.reverse(score)
        z = noise.randn(x.shape, dtype=x.dtype, device=x.device)
        hd = append_dims(h, x.ndim)
        drift, g = rsde.sde(x, t)
        k1 = -hd * drift + append_dims(g, x.ndim) * hd.sqrt() * z
        drift2, g2 = rsde.sde(x + k1, t - h)
        k2 = -hd * drift2 + append_dims(g2, x.ndim) * hd.sqrt() * z
        x_check = x + k1
        err = error_norm((k2 - k1) / 2, state.lower, x_check, self.reltol, self.abstol)
        # Land exactly on the end time once within rounding of it.
        t_next = t - h
        t_next = torch.where(t_next - end <= 1e-12 * max(1.0, float(end)), end.expand(len(t)), t_next)
        return Step(x + (k1 + k2) / 2, Adaptive(state.sched, t_next, h, x_check), err)

    def reached(self, state, i):
        return not bool((state.t > state.sched.t[i + 1]).any())
