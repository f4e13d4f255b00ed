"""The probability-flow ODE dx/dt = f(t) x - g(t)^2 score / 2, integrated by torchdiffeq (Song et al. 2021,
Sec. 4.3)."""

from __future__ import annotations

import torch

from sdeflow.samplers.base import Sampler, SolverError, non_finite

__all__ = ["ProbabilityFlowODE"]


# torchdiffeq's methods that step on the given grid: (order, score evaluations per step).

FIXED_GRID = {"euler": (1, 1), "midpoint": (2, 2), "heun3": (3, 3), "rk4": (4, 4)}
# Its embedded Runge-Kutta pairs, which choose their own steps: their order.
ADAPTIVE = {"dopri5": 5, "dopri8": 8, "bosh3": 3, "fehlberg2": 2, "adaptive_heun": 2}


def is_adaptive(method: str) -> bool:
    """Whether a torchdiffeq method chooses its own steps (and so may step past the last time)."""
    return method in ADAPTIVE


def pinned_options(method: str, t_end: torch.Tensor, options: dict | None = None) -> dict:
    """torchdiffeq options that make an adaptive method end a step exactly at `t_end` instead of stepping past it."""
    options = dict(options or {})
    if is_adaptive(method):
        options.setdefault("step_t", t_end.reshape(1).clone())
    return options


class ProbabilityFlowODE(Sampler):
    """Deterministic sampling along the probability-flow ODE with any torchdiffeq method.

    Fixed-grid methods (euler, midpoint, heun3, rk4) step on the given time grid; adaptive ones
    (dopri5, dopri8, bosh3, ...) choose their own steps within each grid interval, and are pinned
    to end exactly at its end, so the score is never evaluated outside [eps, T]. Order: the
    method's. NFE per step: see `FIXED_GRID`; adaptive: counted.

    Adaptive methods control one error norm for the whole batch, so a sample's path depends on its
    batch to within the tolerance; fixed-grid methods give each sample the same result in any batch.

    Args:
        method: a torchdiffeq method name.
        rtol, atol: tolerances of adaptive methods.
        options: extra torchdiffeq options (e.g. {"first_step": 1e-3}).
        denoise: finish with Tweedie's denoising step (one more evaluation, counted).
    """

    stochastic = False

    def __init__(
        self,
        method: str = "dopri5",
        rtol: float = 1e-5,
        atol: float = 1e-5,
        options: dict | None = None,
        denoise: bool = False,
    ):
        super().__init__(denoise=denoise)
        if method not in FIXED_GRID and method not in ADAPTIVE:
            raise ValueError(f"unknown torchdiffeq method {method!r}; choose one of {sorted([*FIXED_GRID, *ADAPTIVE])}")
        if not (rtol > 0 and atol > 0):
            raise ValueError(f"rtol and atol must be positive, got rtol={rtol}, atol={atol}")
        self.method = method
        self.rtol, self.atol = float(rtol), float(atol)
        self.options = dict(options or {})
        self.adaptive = is_adaptive(method)
        self.order = ADAPTIVE[method] if self.adaptive else FIXED_GRID[method][0]
        self.nfe_per_step = None if self.adaptive else FIXED_GRID[method][1]

    # Its own driver: torchdiffeq integrates (the project never hand-writes ODE integration), one call per interval.
    def solve(self, score, sde, x, sched, noise, record):
        import torchdiffeq  # imported where it is used: it brings scipy.integrate with it

        def flow(t, y):
            # The probability-flow drift f(t) y - g(t)^2 score / 2 (`sde.reverse(score, True)`), its coefficients taken
            # at the scalar time: three tensor operations for the combination rather than a dozen per-sample ones.
            return sde.f(t) * y - (0.5 * sde.g2(t)) * score(y, t)

        # One grid interval at a time, so the per-step hook acts at every grid point (a fixed-grid
        # method takes exactly its one step per interval either way).
        for i in range(len(sched) - 1):
            span = sched.t[i : i + 2]
            # The interval's ends; on an increasing grid (encoding) the ODE runs forwards in time.
            t_lo, t_hi = sorted((sched.num.t[i], sched.num.t[i + 1]))
            slack = 1e-9 * max(1.0, abs(t_hi))

            def checked_velocity(t, y):
                # Adaptive methods choose their own times and stop only on a finite error: both are checked
                # at every evaluation. A fixed-grid method's stages lie inside the interval by construction,
                # and its grid points are checked by `record`, so its evaluations cost no host sync.
                t_now = t.item()
                if not t_lo - slack <= t_now <= t_hi + slack:
                    raise SolverError(
                        f"{self.method} asked for the score at t={t_now:.6g}, outside [{t_lo:.6g}, {t_hi:.6g}]"
                    )
                v = flow(t, y)
                if not bool(torch.isfinite(v).all()):
                    raise non_finite(
                        f"ProbabilityFlowODE({self.method})", f"at t = {t_now:.6g} (the velocity is not finite)"
                    )
                return v

            velocity = checked_velocity if self.adaptive else flow

            # torchdiffeq steps past the last output time and interpolates back; pin a step end there.
            options = pinned_options(self.method, span[-1], self.options)
            if self.adaptive:
                # Its first-step heuristic probes t0 + h0 with an unbounded h0; start inside the interval instead.
                options.setdefault("first_step", (t_hi - t_lo) / 100)
            try:
                x = torchdiffeq.odeint(
                    velocity, x, span, rtol=self.rtol, atol=self.atol, method=self.method, options=options
                )[-1]
            except AssertionError as e:
                raise SolverError(
                    f"torchdiffeq's {self.method} failed ({e or 'assertion'}); try looser rtol/atol "
                    f"(now {self.rtol}, {self.atol}), a fixed-grid method, or a larger eps"
                ) from e
            x = record(x, i + 1)
        return x
