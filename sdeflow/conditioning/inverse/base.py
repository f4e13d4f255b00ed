"""What every inverse method shares: the settings base, what a batch samples with, the watch on its iterates.

An inverse method is one class: its settings come by keyword (from `conf/inverse/`), and
`bind(score, sde, solver, operator, y, noise_std, seed, offset)` returns the `Bound` (score, sampler,
hook) that one batch of samples runs with, whether the method acts as a hook (replacement), wraps the
sampler (RePaint) or wraps the score (DPS, PiGDM). The observation is per batch (sample i sees its own
y_i, or every sample one y), so a run sharded into batches or over processes conditions each sample
exactly as one batch would; `Observed` cuts a run's observations into its batches for `generate`.

Every bound sampler watches its iterates: a state x_t that leaves |x_t| <= limit (alpha_t + sigma_t),
`limit` times the scale of data in [-1, 1] noised to t, stops the run with `DivergenceError`, naming
the step and the time, where a finite but exploding state would otherwise pass as a sample. The
default, 1000, is far from both sides: a diverging method grows geometrically and passes it within a
few steps, while an under-trained model's own samples (|x| of a few hundred) stay inside.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Callable

import torch

from sdeflow.conditioning.guidance import Method
from sdeflow.samplers.base import Sampler, SolverError, check_timesteps
from sdeflow.samplers.coefficients import GridCoefficients
from sdeflow.samplers.sample import sample


class DivergenceError(SolverError):
    """An inverse method's iterates left their bound (a sibling of `NonFiniteError`), named by step and time."""


@dataclass
class Bound:
    """What one batch samples with: `sampler.sample(score, sde, x, grid, hook=hook)`, or `sample(sde, shape, ...)`."""

    score: object
    sampler: object
    hook: Callable | None = None

    def sample(self, sde, shape, **kwargs):
        """`sdeflow.sample(score, sde, sampler, shape, hook=hook, **kwargs)`: the batch, drawn."""
        return sample(self.score, sde, self.sampler, shape, hook=self.hook, **kwargs)


def as_batch(y: torch.Tensor, measured: torch.Tensor) -> torch.Tensor:
    """The observations y for a batch whose measurement `operator.A(x)` is `measured` (B, ...), on its device and dtype.

    y is one observation per sample, (B, ...), or one for every sample, (...) or (1, ...); any other
    shape is refused in one line.
    """
    y = torch.as_tensor(y).to(measured.device, measured.dtype)
    if y.ndim == measured.ndim - 1:
        y = y[None]
    if y.shape[1:] != measured.shape[1:] or len(y) not in (1, len(measured)):
        one = tuple(measured.shape[1:])
        raise ValueError(
            f"observations of shape {tuple(y.shape)} do not fit a batch of {len(measured)} measured as {one}: give "
            f"one per sample, ({len(measured)}, {', '.join(map(str, one))}), or one for all, {one} or (1, ...)"
        )
    return y


class InverseMethod(Method, abc.ABC):
    """A way to sample p(x | y) for y = A x + N(0, noise_std^2) with a model of p(x).

    Args (every method's):
        limit: the watch on the iterates: a state with max |x_t| > limit (alpha_t + sigma_t) stops the
            run with `DivergenceError` (None: not watched).
    """

    def __init__(self, *, limit: float | None = 1000.0):
        if limit is not None and not limit > 0:
            raise ValueError(f"limit must be positive (or None: not watched), got {limit}")
        self.limit = None if limit is None else float(limit)

    @abc.abstractmethod
    def bind(self, score, sde, solver, operator, y, noise_std: float, seed: int = 0, offset: int = 0) -> Bound:
        """Condition `solver` with `score` on y ((B, ...) as `operator.A` gives them, or one for all) for the samples
        offset .. offset + B - 1.

        `seed` and `offset` key the method's own randomness (the noised observations of replacement)
        per sample, as the solver noise is.
        """

    def watched(self, solver: Sampler, on_grid: Callable | None = None) -> Sampler:
        """`solver` with its iterates watched (see `limit`); `on_grid(sched)` hears each run's grid first."""
        return _Watched(solver, type(self).__name__, self.limit, on_grid)


# The facts a sampler declares (`Sampler`): a watched solver declares the solver's own.
_FACTS = (
    "order",
    "nfe_per_step",
    "stochastic",
    "strong_order",
    "warmup_order",
    "reversible",
    "controller",
    "max_steps",
    "fixed_head",
)


class _Watched(Sampler):
    """A solver run as it is, its states checked at every grid point against the method's bound.

    It has the solver's facts (order, NFE per step, grid, ...), and `sample` is the solver's own, with the
    check before the run's hook: a run plans, steps and fails (naming the solver) as the solver alone would.
    """

    def __init__(self, solver: Sampler, method: str, limit: float | None, on_grid: Callable | None = None):
        super().__init__(denoise=solver.denoise)
        self.solver, self.method, self.limit, self.on_grid = solver, method, limit, on_grid
        for fact in _FACTS:
            setattr(self, fact, getattr(solver, fact))

    def steps_for_nfe(self, nfe: int) -> int:
        return self.solver.steps_for_nfe(nfe)

    def timesteps(self, grid, sde, steps: int) -> torch.Tensor:
        return self.solver.timesteps(grid, sde, steps)

    def solve(self, score, sde, x, sched, noise, record):
        if self.on_grid is not None:
            self.on_grid(sched)
        return self.solver.solve(score, sde, x, sched, noise, record)

    def sample(
        self, score, sde, x, timesteps, generator=None, return_trajectory=False, hook=None, progress=None, grad=False
    ):
        timesteps = check_timesteps(timesteps, sde, x, forward_ok=True)
        sched = GridCoefficients.of(sde, timesteps)
        if self.on_grid is not None:
            self.on_grid(sched)
        if self.limit is None:
            return self.solver.sample(score, sde, x, timesteps, generator, return_trajectory, hook, progress, grad)
        num, n = sched.num, len(sched) - 1
        # As the NaN check does: on a CPU each point is checked where it is reached; on a GPU the flags stay on the
        # device and are read once, after the run, so that the check costs no host sync per step.
        flags, cpu = [], x.device.type == "cpu"

        def watch(x_i, t):
            i = len(flags) + 1  # the loop reaches every grid point once, in order, and hooks it
            over = x_i.detach().abs().amax() > self.bound(num, i)  # NaN is not over: the NaN check names it
            if cpu and bool(over):
                raise self.diverged(num, i, n, float(x_i.abs().amax()))
            flags.append(over)
            return x_i if hook is None else hook(x_i, t)

        out = self.solver.sample(score, sde, x, timesteps, generator, return_trajectory, watch, progress, grad)
        if not cpu and flags:
            over = torch.stack(flags).tolist()
            if any(over):
                raise self.diverged(num, over.index(True) + 1, n, None)
        return out

    def bound(self, num, i: int) -> float:
        return self.limit * (num.alpha[i] + num.sigma[i])

    def diverged(self, num, i: int, n: int, size: float | None) -> DivergenceError:
        seen = "|x|" if size is None else f"max |x| = {size:.3g}"
        return DivergenceError(
            f"{self.method} with {type(self.solver).__name__}: the iterates diverged at step {i} of {n} "
            f"(t = {num.t[i]:.6g}): {seen} > {self.bound(num, i):.3g} = {self.limit:g} (alpha_t + sigma_t); "
            "lower the method's weight, act on an interval of lower noise or take more steps; a model whose own "
            "samples leave the bound (an untrained one) needs limit=None, which turns the watch off"
        )

    def __repr__(self) -> str:
        return repr(self.solver)


@dataclass
class Observed:
    """An inverse problem for `sdeflow.generate(..., inverse=...)`: sample i observes y[i mod N] through `operator`.

    `bind(score, sde, solver, start, b)` is `method.bind` on the observations of samples start ..
    start + b - 1, so sample i is conditioned the same whatever the batch size or the rank.

    Args:
        method: an `InverseMethod` (`Replacement()`, `RePaint(...)`, `DPS(...)`, `PiGDM(...)`).
        operator: the `LinearOperator` of the measurement.
        y: (N, ...) observations, as `operator.A` gives them (one for every sample: y[None]).
        noise_std: the observation noise the method is told.
        seed: keys the method's own per-sample randomness.
    """

    method: InverseMethod
    operator: object
    y: torch.Tensor
    noise_std: float = 0.0
    seed: int = 0

    def bind(self, score, sde, solver, start: int, b: int) -> Bound:
        y = self.y[torch.arange(start, start + b) % len(self.y)]
        return self.method.bind(score, sde, solver, self.operator, y, self.noise_std, self.seed, start)
