"""Time grids: the data every sampler integrates along, from T down to eps (N steps, N + 1 times).

A grid is a callable `grid(sde, steps) -> 1-D float64 tensor`; any grid works with any solver.
"""

from __future__ import annotations

import copy

import torch


class Grid:
    """Base for grids between `t_max` (default sde.T) and `t_min` (default sde.eps)."""

    def __init__(self, t_min: float | None = None, t_max: float | None = None):
        self.t_min, self.t_max = t_min, t_max

    def bounds(self, sde) -> tuple[float, float]:
        lo = sde.eps if self.t_min is None else float(self.t_min)
        hi = sde.T if self.t_max is None else float(self.t_max)
        if not sde.eps <= lo < hi <= sde.T:
            raise ValueError(
                f"grid bounds must satisfy eps <= t_min < t_max <= T = {sde.T}; "
                f"got t_min={lo}, t_max={hi} with eps={sde.eps}"
            )
        return lo, hi

    def restricted(self, t_min: float | None = None, t_max: float | None = None) -> "Grid":
        """The same kind of grid on a sub-interval."""
        grid = copy.copy(self)
        grid.t_min = self.t_min if t_min is None else t_min
        grid.t_max = self.t_max if t_max is None else t_max
        return grid

    def __call__(self, sde, steps: int) -> torch.Tensor:
        if int(steps) != steps or steps < 1:
            raise ValueError(f"steps must be a positive integer, got {steps}")
        lo, hi = self.bounds(sde)
        return self.make(sde, int(steps), lo, hi)

    def make(self, sde, steps: int, lo: float, hi: float) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class UniformGrid(Grid):
    """Uniform in t (the reference's `linspace(T, eps, N)`)."""

    def make(self, sde, steps, lo, hi):
        return torch.linspace(hi, lo, steps + 1, dtype=torch.float64)


class QuadraticGrid(Grid):
    """Uniform in sqrt(t): denser near the data (DDIM's and DPM-Solver's 'time_quadratic')."""

    def make(self, sde, steps, lo, hi):
        return _pin_ends(torch.linspace(hi**0.5, lo**0.5, steps + 1, dtype=torch.float64) ** 2, hi, lo)


class LogSNRGrid(Grid):
    """Uniform in the log-SNR lambda(t) (DPM-Solver's 'logSNR')."""

    def make(self, sde, steps, lo, hi):
        ends = torch.tensor([hi, lo], dtype=torch.float64)
        lam = sde.lambda_(ends)
        return _pin_ends(sde.t_from_lambda(torch.linspace(lam[0], lam[1], steps + 1, dtype=torch.float64)), hi, lo)


class KarrasGrid(Grid):
    """EDM's schedule (Karras et al. 2022, eq. 5): uniform in sigma~^(1/rho), sigma~ = sigma / alpha = exp(-lambda)."""

    def __init__(self, rho: float = 7.0, t_min: float | None = None, t_max: float | None = None):
        super().__init__(t_min, t_max)
        if not rho > 0:
            raise ValueError(f"rho must be positive, got {rho}")
        self.rho = float(rho)

    def make(self, sde, steps, lo, hi):
        ends = torch.tensor([hi, lo], dtype=torch.float64)
        s_max, s_min = torch.exp(-sde.lambda_(ends))
        ramp = torch.linspace(0, 1, steps + 1, dtype=torch.float64)
        inv = 1 / self.rho
        sig = (s_max**inv + ramp * (s_min**inv - s_max**inv)) ** self.rho
        return _pin_ends(sde.t_from_nsr(sig), hi, lo)


class LeadingTimesteps(Grid):
    """The training timesteps that diffusers' DDIM and DDPM pipelines step on ("leading" spacing), then t_min.

    On a `sdeflow.DiscreteVPSDE` of N betas, step j evaluates the model at training timestep
    k_j = j (N // steps) + offset, which is time (k_j + 1) / N, for j = steps - 1 .. 0; the last step
    goes to t_min (default sde.eps = 1/N, where alpha^2 is the table's first entry, as with
    `set_alpha_to_one=False`; t_min = 0 gives alpha = 1, as with `set_alpha_to_one=True`).

    Args:
        offset: diffusers' `steps_offset` (1 in Stable Diffusion's scheduler config).
    """

    def __init__(self, offset: int = 1, t_min: float | None = None):
        super().__init__(t_min, None)
        if int(offset) != offset or offset < 0:
            raise ValueError(f"offset must be a non-negative integer, got {offset}")
        self.offset = int(offset)

    def make(self, sde, steps, lo, hi):
        ratio = sde.N // steps
        if ratio < 1:
            raise ValueError(f"{steps} steps need at least as many training timesteps; this SDE has N = {sde.N}")
        timesteps = torch.arange(steps - 1, -1, -1, dtype=torch.float64) * ratio + self.offset
        times = (timesteps + 1) / sde.N
        if not (times[0] <= hi and times[-1] > lo):
            raise ValueError(
                f"timesteps {int(timesteps[0])} .. {int(timesteps[-1])} (times {times[0]:.4g} .. {times[-1]:.4g}) "
                f"must lie in (t_min, T] = ({lo}, {hi}]: raise the offset or lower t_min"
            )
        return torch.cat([times, torch.tensor([lo], dtype=torch.float64)])


class ListGrid:
    """A user's own grid: the given times, used as they are (`steps` must match if given)."""

    def __init__(self, times):
        try:
            self.times = torch.as_tensor(
                list(times) if not isinstance(times, torch.Tensor) else times, dtype=torch.float64
            )
        except (TypeError, ValueError, RuntimeError) as e:
            raise ValueError(f"a user grid must be a list of numbers: {e}") from e
        if not bool(torch.isfinite(self.times).all()):
            raise ValueError("a user grid must hold finite times (no NaN or infinity)")
        if self.times.ndim != 1 or len(self.times) < 2 or not bool((self.times[1:] < self.times[:-1]).all()):
            raise ValueError("a user grid must be a strictly decreasing list of at least two times")

    def __call__(self, sde, steps: int | None = None) -> torch.Tensor:
        if steps is not None and steps != len(self.times) - 1:
            raise ValueError(f"this grid has {len(self.times) - 1} steps, asked for {steps}")
        if self.times[-1] < sde.eps or self.times[0] > sde.T:
            raise ValueError(
                f"user grid [{self.times[-1].item()}, {self.times[0].item()}] leaves [eps, T] = [{sde.eps}, {sde.T}]"
            )
        return self.times.clone()

    def restricted(self, t_min=None, t_max=None):
        raise ValueError(
            "a user grid cannot be restricted to a sub-interval; give the full grid, or use a generated grid"
        )

    def __repr__(self) -> str:
        return f"ListGrid({self.times.tolist()})"


def default_grid(t_min: float | None = None, t_max: float | None = None) -> Grid:
    """The grid used where none is given: by `Sampler.plan`, `sdeflow.sample` and `sdeflow.generate`, and by the apps
    (`timesteps=default`, which builds this same object), on [t_min, t_max] (default the SDE's [eps, T]). Uniform in
    the log-SNR, for every SDE.

    Chosen from measurements with the default solver (`solver=auto`) on the benchmark mixture
    (`python benchmarks/default_grid.py`, docs/default-choice.md): on VP, sub-VP, VE (both ranges), EDM and cosine it
    is the only one of the uniform, quadratic, log-SNR and Karras grids whose error falls from each budget to the next
    (5, 10, 20, 50 NFE), and the most accurate at 20 and 50 NFE on every family. At 5 and 10 NFE a grid quadratic in t
    is 1.2-2.3x more accurate on VP, sub-VP and cosine, but it falls behind above, rises on sub-VP and fails on EDM: so
    the default is one grid, not a property of the SDE. A grid uniform in t gets worse with NFE on VP (6.8e-2 at 10
    NFE, 1.0e-1 at 20).
    """
    return LogSNRGrid(t_min, t_max)


def _pin_ends(t: torch.Tensor, hi: float, lo: float) -> torch.Tensor:
    # Round trips (through lambda, through a square root) move the ends by an ulp; put them back exactly.
    t = t.clone()
    t[0], t[-1] = hi, lo
    return t
