"""What every sampler shares: the call signature, the result, the checks at the door, the final denoising."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Callable, ClassVar

import torch

from sdeflow.random import as_noise


class SolverError(RuntimeError):
    """A solver could not produce a solution (step-size underflow, non-finite state, bad time request)."""


class NonFiniteError(SolverError):
    """NaN or infinity appeared in a sampler's state: raised where it appeared, naming the solver, step and time."""


def non_finite(solver, where: str) -> NonFiniteError:
    """The error for NaN or infinity found by `solver` at `where` (its step and time)."""
    return NonFiniteError(f"{solver}: NaN or infinity in the state {where}; the score model returned non-finite values "
                          "or the step diverged (check the model's weights, the grid and the SDE)")


@dataclass
class SampleResult:
    """What a sampler returns.

    Attributes:
        samples: the final states.
        nfe: score-model evaluations actually made (counted on the score function, denoising included).
        timesteps: the grid the sampler ran on, from T down to its last time.
        trajectory: states at every grid point, shape (len(timesteps), *samples.shape), if asked for.
    """

    samples: torch.Tensor
    nfe: int
    timesteps: torch.Tensor
    trajectory: torch.Tensor | None = None


class Sampler(abc.ABC):
    """Integrates from x_T at timesteps[0] down to timesteps[-1] on an explicit, decreasing time grid.

    Subclasses declare `order`, `nfe_per_step` and `stochastic`, and implement `solve`.

    Args:
        denoise: after the last step, replace x by Tweedie's denoised estimate E[x_0 | x_eps]
            (one more score evaluation, counted).
    """

    order: ClassVar[float]
    nfe_per_step: ClassVar[int | None]
    stochastic: ClassVar[bool]
    # Multistep methods start with lower-order steps; None means there is no such warm-up.
    warmup_order: ClassVar[int | None] = None

    @property
    def convergence_order(self) -> float:
        """The global order guaranteed asymptotically: the method's order, or one more than its warm-up steps'."""
        return self.order if self.warmup_order is None else min(self.order, self.warmup_order + 1)

    def require_steps(self, timesteps: torch.Tensor, order: int) -> None:
        """Multistep methods: refuse grids too short for the requested order to ever be used."""
        if len(timesteps) - 1 < order:
            raise ValueError(f"{type(self).__name__} of order {order} needs at least {order} steps, got {len(timesteps) - 1}; "
                             f"use a lower order or more steps")

    def __init__(self, denoise: bool = False):
        self.denoise = bool(denoise)

    @abc.abstractmethod
    def solve(self, score, sde, x: torch.Tensor, timesteps: torch.Tensor, noise, record: Callable) -> torch.Tensor:
        """Integrate x over `timesteps`; call `record(x)` after every grid point is reached."""

    def steps_for_nfe(self, nfe: int) -> int:
        """The number of steps this sampler takes within a budget of `nfe` score evaluations."""
        if self.nfe_per_step is None:
            raise ValueError(f"{type(self).__name__} chooses its own steps; its NFE cannot be budgeted")
        steps = (int(nfe) - int(self.denoise)) // self.nfe_per_step
        if steps < 1:
            raise ValueError(f"{type(self).__name__} needs at least {self.nfe_per_step + int(self.denoise)} NFE, got {nfe}")
        return steps

    def timesteps(self, grid, sde, steps: int) -> torch.Tensor:
        """The grid this sampler runs on for `steps` steps (samplers that reshape grids override this)."""
        return grid(sde, steps)

    def sample(self, score, sde, x: torch.Tensor, timesteps, generator=None, return_trajectory: bool = False) -> SampleResult:
        """Run the sampler from x (a draw of p_T) along `timesteps`.

        Args:
            score: a `sdeflow.ScoreFunction` (its calls are counted).
            sde: the forward SDE.
            x: the initial state at timesteps[0].
            timesteps: 1-D decreasing grid inside [sde.eps, sde.T], at least two points.
            generator: a torch.Generator or a `sdeflow.PerSampleNoise`, for stochastic samplers.
            return_trajectory: also return the state at every grid point.
        """
        timesteps = check_timesteps(timesteps, sde, x)
        check_score_input(score, x)
        noise = as_noise(generator)
        name = type(self).__name__
        if not bool(torch.isfinite(x).all()):
            raise NonFiniteError(f"{name}: the initial state holds NaN or infinity")
        states = [x] if return_trajectory else None
        reached = [0]
        n = len(timesteps) - 1

        def record(x_i: torch.Tensor) -> None:
            # Every grid point is checked where it is reached, so a NaN is reported at its step, not at the end.
            reached[0] += 1
            i = reached[0]
            if not bool(torch.isfinite(x_i).all()):
                raise non_finite(name, f"at step {i} of {n} (t = {float(timesteps[min(i, n)]):.6g})")
            if states is not None:
                states.append(x_i)

        nfe0 = score.nfe
        x = self.solve(score, sde, x, timesteps, noise, record)
        if self.denoise:
            # Tweedie's formula: the posterior mean of x_0 given x at the last time.
            x = score.x0(x, timesteps[-1])
            if not bool(torch.isfinite(x).all()):
                raise non_finite(name, f"after the final denoising step (t = {float(timesteps[-1]):.6g})")
        trajectory = torch.stack(states) if return_trajectory else None
        return SampleResult(samples=x, nfe=score.nfe - nfe0, timesteps=timesteps, trajectory=trajectory)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


class StepSampler(Sampler):
    """A one-step method: `step` maps x at t to x at t_next; the loop is written here once."""

    @abc.abstractmethod
    def step(self, score, sde, x: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor, noise, last: bool) -> torch.Tensor:
        """One step from t to t_next < t; `last` is true for the final step of the grid."""

    def solve(self, score, sde, x, timesteps, noise, record):
        n = len(timesteps) - 1
        for i in range(n):
            x = self.step(score, sde, x, timesteps[i], timesteps[i + 1], noise, last=i == n - 1)
            record(x)
        return x


def check_score_input(score, x: torch.Tensor) -> None:
    """Refuse, in one line, samples that the score model cannot take: another device or floating dtype."""
    params = getattr(getattr(score, "model", None), "parameters", None)
    first = next((p for p in params() if p.is_floating_point()), None) if callable(params) else None
    if first is None:
        return
    if first.device != x.device:
        raise ValueError(f"the score model is on {first.device} but the samples are on {x.device}; "
                         f"sample on the model's device (device={first.device.type!r}) or move the model")
    if first.dtype != x.dtype:
        raise ValueError(f"the score model's weights are {first.dtype} but the samples are {x.dtype}; "
                         f"sample in {first.dtype} (dtype=...) or convert the model (e.g. model.to({x.dtype}))")


def check_timesteps(timesteps, sde, x: torch.Tensor) -> torch.Tensor:
    """Validate a grid at the door: 1-D, at least two points, strictly decreasing, inside [eps, T]."""
    timesteps = torch.as_tensor(timesteps, dtype=x.dtype, device=x.device)
    if timesteps.ndim != 1 or len(timesteps) < 2:
        raise ValueError(f"timesteps must be a 1-D grid of at least two times, got shape {tuple(timesteps.shape)}")
    if not bool((timesteps[1:] < timesteps[:-1]).all()):
        raise ValueError("timesteps must be strictly decreasing (from T towards eps)")
    lo, hi = float(timesteps[-1]), float(timesteps[0])
    slack = 1e-6 * sde.T
    if lo < sde.eps - slack or hi > sde.T + slack:
        raise ValueError(f"timesteps must lie in [eps, T] = [{sde.eps}, {sde.T}], got [{lo}, {hi}]")
    return timesteps
