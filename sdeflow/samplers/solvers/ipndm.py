"""iPNDM: improved pseudo-numerical multistep (Zhang & Chen 2023, DEIS appendix), in EDM's variables."""

from __future__ import annotations

from sdeflow.samplers.base import Multistep, Sampler
from sdeflow.samplers.exponential import weighted_sum

__all__ = ["IPNDM"]


# Adams-Bashforth weights for equal steps, newest derivative first; iPNDM uses them on any grid.

AB_WEIGHTS = {1: (1.0,), 2: (3 / 2, -1 / 2), 3: (23 / 12, -16 / 12, 5 / 12), 4: (55 / 24, -59 / 24, 37 / 24, -9 / 24)}


class IPNDM(Sampler):
    """iPNDM on dx~/dsigma~ = eps: Adams-Bashforth with fixed-step weights, warming up from order 1.

    Probability-flow ODE, order `order` on uniform steps in sigma~ (fewer on strongly varying
    grids, where the fixed weights are no longer exact), 1 score evaluation per step.
    """

    nfe_per_step = 1
    stochastic = False
    warmup_order = 1

    def __init__(self, order: int = 4, denoise: bool = False):
        super().__init__(denoise=denoise)
        if order not in AB_WEIGHTS:
            raise ValueError(f"IPNDM supports order 1 to 4, got {order}")
        self.order = int(order)

    def init(self, score, sde, x, sched):
        self.require_steps(sched, self.order)
        return Multistep(sched)

    def step(self, score, sde, x, i, state, noise):
        sched = state.sched
        ds = ([score.eps(x, sched.t[i], sched.coef[i])] + state.history)[: self.order]  # eps at earlier grid points, newest first
        num = sched.num
        # x_next = (alpha_next / alpha) x + alpha_next (nsr_next - nsr) sum_k w_k d_k, each weight one number.
        scale = num.alpha[i + 1] * (num.nsr[i + 1] - num.nsr[i])
        x = weighted_sum((num.alpha[i + 1] / num.alpha[i], x), *((scale * w, d) for w, d in zip(AB_WEIGHTS[len(ds)], ds)))
        return x, Multistep(sched, ds)
