"""Restart sampling (Xu et al. 2023): EDM's Heun sampler, with jumps back up in noise and re-integration."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from sdeflow.samplers.base import BudgetError, State
from sdeflow.samplers.solvers.heun import EDMHeun, grid_point

__all__ = ["Restart"]


@dataclass
class RestartState(State):
    """Where the restarts happen: {grid index: [(K, the restart sub-grid from t_max down to that grid time)]}."""

    restarts: dict | None = None


class Restart(EDMHeun):
    """Heun steps on the probability-flow ODE, with restart intervals where noise is added and the ODE re-run.

    For each restart interval (s_min, s_max, K, steps), given in sigma~ = sigma / alpha: when the main
    grid reaches the point nearest s_min, K times, fresh noise lifts x from there to s_max
    (x~ += sqrt(s_max^2 - s^2) z, exactly the forward process's transition) and `steps` Heun steps on
    an EDM (rho = 7) grid bring it back. The contraction of the forward-backward cycle shrinks the
    errors accumulated before it. Stochastic; 2 score evaluations per main step plus 2 K steps per
    interval (budgets count both). With no intervals it is `EDMHeun`.

    Args:
        restarts: a list of [s_min, s_max, K, steps]; the default is one interval [0.06, 0.30] with
            K = 2 and 3 steps, in the range the paper uses for CIFAR-10.
        rho: the exponent of the restart sub-grids.
    """

    stochastic = True
    order = 1

    def __init__(self, restarts=((0.06, 0.30, 2, 3),), rho: float = 7.0, denoise: bool = False):
        super().__init__(denoise=denoise)
        self.restarts = []
        for item in restarts:
            try:
                s_min, s_max, k, steps = item
            except (TypeError, ValueError):
                raise ValueError(f"a restart interval is [s_min, s_max, K, steps], got {item!r}") from None
            if not 0 < s_min < s_max or int(k) != k or k < 0 or int(steps) != steps or steps < 1:
                raise ValueError(
                    f"a restart interval needs 0 < s_min < s_max, an integer K >= 0 and steps >= 1, got {item!r}"
                )
            self.restarts.append((float(s_min), float(s_max), int(k), int(steps)))
        if not rho > 0:
            raise ValueError(f"rho must be positive, got {rho}")
        self.rho = float(rho)
        self.stochastic = any(k > 0 for _, _, k, _ in self.restarts)
        self.order = 1 if self.stochastic else EDMHeun.order

    @property
    def restart_nfe(self) -> int:
        """Score evaluations the restarts add to any grid."""
        return sum(2 * k * steps for _, _, k, steps in self.restarts)

    def steps_for_nfe(self, nfe: int) -> int:
        steps = (int(nfe) - int(self.denoise) - self.restart_nfe) // self.nfe_per_step
        if steps < 1:
            raise BudgetError(
                f"Restart needs at least {self.restart_nfe + self.nfe_per_step + int(self.denoise)} NFE "
                f"({self.restart_nfe} for its restarts), got {nfe}"
            )
        return steps

    def init(self, score, sde, x, sched):
        nsr = sched.num.nsr
        t_cap = torch.as_tensor(sde.T, dtype=torch.float64)
        s_cap = float(sde.nsr(t_cap))
        restarts: dict = {}
        for s_min, s_max, k, steps in self.restarts:
            if k == 0:
                continue
            # The grid point (after the first) whose sigma~ is nearest s_min, as in the reference code.
            j = min(range(1, len(sched)), key=lambda i: abs(nsr[i] - s_min))
            s_lo, s_hi = nsr[j], min(s_max, s_cap)
            if not s_hi > s_lo:
                continue  # the grid ends above this interval's top: nothing to restart
            ramp = torch.linspace(0, 1, steps + 1, dtype=torch.float64)
            sig = (s_hi ** (1 / self.rho) + ramp * (s_lo ** (1 / self.rho) - s_hi ** (1 / self.rho))) ** self.rho
            times = sde.t_from_nsr(sig).clamp(max=sde.T)
            times[-1] = sched.num.t[j]
            restarts.setdefault(j, []).append((k, times.to(sched.t.dtype).to(sched.t.device), s_lo, s_hi))
        return RestartState(sched, restarts)

    def step(self, score, sde, x, i, state, noise):
        sched = state.sched
        x = self.heun(score, sde, x, sched.t[i], sched.t[i + 1], grid_point(sched, i), grid_point(sched, i + 1))
        for k, times, s_lo, s_hi in state.restarts.get(i + 1, ()):
            lift = math.sqrt(s_hi**2 - s_lo**2)
            for _ in range(k):
                z = noise.randn(x.shape, dtype=x.dtype, device=x.device)
                x = sde.alpha(times[0]) * (x / sde.alpha(times[-1]) + lift * z)
                for q in range(len(times) - 1):
                    x = self.heun(score, sde, x, times[q], times[q + 1])
        return x, state
