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
    """Where the restarts happen: {grid index: [`Interval`, ...]}, each interval's way back prepared for the grid."""

    restarts: dict | None = None


@dataclass(frozen=True)
class Interval:
    """One restart interval on a grid: K, the jump from the grid time up to the sub-grid's top, and the sub-grid.

    Attributes:
        k: the number of restarts.
        times: the restart sub-grid, from the top (sigma~ = s_max) down to the grid time.
        lift: the jump x -> lift[0] x + lift[1] z: alpha(top) / alpha(grid time), and alpha(top) sqrt(s_max^2 -
            s_min^2) S_noise.
        churn: {sub-step q: (t^, alpha(t^) / alpha(t_q), the noise's scale in x at t^)}, for the sub-steps that churn.
    """

    k: int
    times: torch.Tensor
    lift: tuple
    churn: dict


class Restart(EDMHeun):
    """Heun steps on the probability-flow ODE, with restart intervals where noise is added and the ODE re-run.

    Each restart interval is [N, K, s_min, s_max], in the reference code's
    `restart_info` layout and units (sigma~ = sigma / alpha): when the main grid reaches the point
    nearest s_min, K times, fresh noise lifts x from there to s_max (x~ += sqrt(s_max^2 - s^2) S_noise z,
    the forward process's transition) and N - 1 Heun steps on an EDM (rho) grid of N points bring it
    back. Within those steps, where S_tmin <= sigma~ <= S_tmax, each step first raises sigma~ by the
    factor 1 + restart_gamma with fresh noise (EDM's churn). The contraction of the forward-backward
    cycle shrinks the errors accumulated before it. Stochastic (weak order 1); 2 score evaluations per
    main step plus 2 K (N - 1) per interval (budgets count both). With no intervals, or K = 0, it is
    `EDMHeun`.

    The defaults are the reference's: the interval of its first CIFAR-10 setting (`params_cifar10_vp.txt`:
    18 main steps, `restart_info='{"0": [3, 2, 0.06, 0.30]}'`), the README's `--S_min=0.01 --S_max=1
    --S_noise 1.003`, and its `restart_gamma` of 0.05. Departures from the
    reference code: its main grid ends at sigma = 0 with an Euler step, where every grid here ends at eps
    with a Heun step (as `EDMHeun`); its restart sub-grids are computed in float32, here in the grid's dtype.

    Args:
        restarts: a list of [N, K, s_min, s_max]: N points (N - 1 steps) on the way back, K restarts.
        restart_gamma: the churn of each step on the way back (0: none).
        S_noise: a multiplier on the noise of the jumps and the churn.
        S_tmin, S_tmax: the sigma~ range in which the way back churns.
        rho: the exponent of the restart sub-grids.
    """

    stochastic = True
    order = 1

    def __init__(
        self,
        restarts=((3, 2, 0.06, 0.30),),
        restart_gamma: float = 0.05,
        S_noise: float = 1.003,
        S_tmin: float = 0.01,
        S_tmax: float = 1.0,
        rho: float = 7.0,
        denoise: bool = False,
    ):
        super().__init__(denoise=denoise)
        self.restarts = []
        for item in restarts:
            try:
                points, k, s_min, s_max = item
            except (TypeError, ValueError):
                raise ValueError(f"a restart interval is [N, K, s_min, s_max], got {item!r}") from None
            if int(points) != points or points < 2 or int(k) != k or k < 0 or not 0 < s_min < s_max:
                raise ValueError(
                    "a restart interval is [N, K, s_min, s_max] as the reference's restart_info writes it: "
                    f"an integer N >= 2 of points, an integer K >= 0 and 0 < s_min < s_max; got {item!r}"
                )
            self.restarts.append((int(points), int(k), float(s_min), float(s_max)))
        if restart_gamma < 0 or S_noise <= 0 or S_tmin < 0 or S_tmax < S_tmin:
            raise ValueError(
                "need restart_gamma >= 0, S_noise > 0 and 0 <= S_tmin <= S_tmax; "
                f"got {restart_gamma}, {S_noise}, {S_tmin}, {S_tmax}"
            )
        if not rho > 0:
            raise ValueError(f"rho must be positive, got {rho}")
        self.restart_gamma, self.S_noise = float(restart_gamma), float(S_noise)
        self.S_tmin, self.S_tmax, self.rho = float(S_tmin), float(S_tmax), float(rho)
        self.stochastic = any(k > 0 for _, k, _, _ in self.restarts)
        self.order = 1 if self.stochastic else EDMHeun.order

    @property
    def restart_nfe(self) -> int:
        """Score evaluations the restarts add to any grid."""
        return sum(2 * k * (points - 1) for points, k, _, _ in self.restarts)

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
        s_cap = float(sde.nsr(torch.as_tensor(sde.T, dtype=torch.float64)))
        restarts: dict = {}
        for points, k, s_min, s_max in self.restarts:
            # The grid point whose sigma~ is nearest s_min, as in the reference code; the first one restarts nothing.
            j = min(range(len(sched)), key=lambda i: abs(nsr[i] - s_min))
            s_lo, s_hi = nsr[j], min(s_max, s_cap)
            if k == 0 or j == 0 or not s_hi > s_lo:
                continue  # no restart, or the grid ends above this interval's top: nothing to restart
            ramp = torch.linspace(0, 1, points, dtype=torch.float64)
            sig = (s_hi ** (1 / self.rho) + ramp * (s_lo ** (1 / self.rho) - s_hi ** (1 / self.rho))) ** self.rho
            times = sde.t_from_nsr(sig).clamp(max=sde.T)
            times[-1] = sched.num.t[j]
            alpha = sde.alpha(times).tolist()
            churn = {}
            for q, s in enumerate(sig[:-1].tolist()):
                if self.restart_gamma > 0 and self.S_tmin <= s <= self.S_tmax:
                    s_hat = min(s * (1 + self.restart_gamma), s_cap)
                    t_hat = sde.t_from_nsr(torch.tensor(s_hat, dtype=torch.float64)).clamp(max=sde.T)
                    scale = math.sqrt(max(s_hat**2 - s**2, 0.0)) * self.S_noise
                    a_hat = float(sde.alpha(t_hat))
                    churn[q] = (t_hat.to(sched.t.dtype).to(sched.t.device), a_hat / alpha[q], a_hat * scale)
            lift = (alpha[0] / alpha[-1], alpha[0] * math.sqrt(s_hi**2 - s_lo**2) * self.S_noise)
            interval = Interval(k, times.to(sched.t.dtype).to(sched.t.device), lift, churn)
            restarts.setdefault(j, []).append(interval)
        return RestartState(sched, restarts)

    def step(self, score, sde, x, i, state, noise):
        sched = state.sched
        x = self.heun(score, sde, x, sched.t[i], sched.t[i + 1], grid_point(sched, i), grid_point(sched, i + 1))
        for interval in state.restarts.get(i + 1, ()):
            times = interval.times
            for _ in range(interval.k):
                # The jump up to s_max: the forward process's transition, in x = alpha x~.
                x = interval.lift[0] * x + interval.lift[1] * noise.randn(x.shape, dtype=x.dtype, device=x.device)
                for q in range(len(times) - 1):
                    t_from = times[q]
                    if q in interval.churn:
                        # EDM's churn: raise sigma~ to (1 + restart_gamma) sigma~ with fresh noise, and step from
                        # there.
                        t_from, ratio, scale = interval.churn[q]
                        x = ratio * x + scale * noise.randn(x.shape, dtype=x.dtype, device=x.device)
                    x = self.heun(score, sde, x, t_from, times[q + 1])
        return x, state
