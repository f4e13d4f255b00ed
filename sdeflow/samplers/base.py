"""What every sampler shares: the plan, the one integration loop, the result, the checks at the door.

A solver is configuration (its order, its options) plus two methods, in the manner of diffrax:

- `init(score, sde, x, sched) -> state`: what it carries from step to step (a multistep history,
  an adaptive solver's position and step size),
- `step(score, sde, x, i, state, noise) -> (x, state)`: one step towards grid point i + 1. An adaptive
  step returns `Step(x, state, error)`: a proposal and its error norm, which the loop accepts or
  rejects and from which the solver's `controller` sizes the next attempt.

`Sampler.sample` owns everything else, once: the checks at the door, the grid's coefficients
(`GridCoefficients`), the loop over fixed and adaptive steps alike, the per-step hook, the NaN check
naming the step and time, the progress callback, the trajectory and the final denoising. Solvers hold
no state of their own between calls, so one solver object serves any number of concurrent runs. A
solver that cannot be written as steps (one that hands the integration to torchdiffeq, or wraps another
solver) overrides `solve` and reports every grid point through `record`.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Callable, ClassVar, NamedTuple

import torch

from sdeflow.core.tensors import append_dims
from sdeflow.noise.generators import as_noise
from sdeflow.samplers.adaptive import StepSizeController
from sdeflow.samplers.coefficients import GridCoefficients


class SolverError(RuntimeError):
    """A solver could not produce a solution (step-size underflow, non-finite state, bad time request)."""


class NonFiniteError(SolverError):
    """NaN or infinity appeared in a sampler's state: raised where it appeared, naming the solver, step and time."""


def non_finite(solver, where: str) -> NonFiniteError:
    """The error for NaN or infinity found by `solver` at `where` (its step and time)."""
    return NonFiniteError(
        f"{solver}: NaN or infinity in the state {where}; the score model returned non-finite values "
        "or the step diverged (check the model's weights, the grid and the SDE)"
    )


class BudgetError(ValueError):
    """A solver cannot run within the NFE budget or number of steps asked for (a benchmark skips such a cell)."""


class IncompatibleSampler(ValueError):
    """A wrapper (RePaint's resampling) cannot drive this sampler (a benchmark skips such a cell)."""


@dataclass
class SampleResult:
    """What a sampler returns.

    Attributes:
        samples: the final states.
        nfe: score-model evaluations actually made (counted on the score function, denoising included).
        timesteps: the grid the sampler ran on, from T down to its last time.
        trajectory: states at every grid point, shape (len(timesteps), *samples.shape), if asked for.
        forwards, backwards: the network's forward and backward passes behind those evaluations
            (guidance may make two forwards, or a forward and a backward, per evaluation).
    """

    samples: torch.Tensor
    nfe: int
    timesteps: torch.Tensor
    trajectory: torch.Tensor | None = None
    forwards: int | None = None
    backwards: int | None = None


@dataclass
class State:
    """What a one-step solver carries between steps: the grid's coefficients. Multistep solvers extend it."""

    sched: GridCoefficients


@dataclass
class Multistep(State):
    """The state of a multistep solver: model outputs at earlier grid points (each solver says in which order)."""

    history: list = field(default_factory=list)


@dataclass
class Adaptive(State):
    """The state of an adaptive solver between attempts.

    With one error per sample (each sample steps on its own), every tensor field has one entry per sample.

    Attributes:
        t: the time reached: 0-d (the batch steps together) or one per sample.
        h: the step to attempt next, in the solver's own variable (t, or lambda), shaped as `t`; the solver
            shortens it to what is left of the grid interval.
        lower: the lower-order solution of the last accepted step (x at the start), the scale of the next error.
    """

    t: torch.Tensor
    h: torch.Tensor
    lower: torch.Tensor


class Step(NamedTuple):
    """What `step` returns: the proposed x and solver state, and the proposal's error norm.

    `error` is None for a fixed step, which the loop always takes (a plain pair (x, state) reads as one).
    An adaptive step gives its error norm, below 1 within tolerance: one number for the batch, or a tensor
    with one per sample. The loop takes the proposal where the error is at most 1 and keeps the previous x
    and state elsewhere.
    """

    x: torch.Tensor
    state: State
    error: float | torch.Tensor | None = None


class Sampler(abc.ABC):
    """Integrates from x_T at timesteps[0] down to timesteps[-1] on an explicit, decreasing time grid.

    Every solver declares, as attributes: on its class where the value is fixed, in `__init__` where it
    follows the arguments (they are facts of the instance, which a class value only defaults):
        order: the order of convergence it is tested for: of the ODE solution for deterministic
            solvers, the weak order (of expectations) for stochastic ones.
        nfe_per_step: score evaluations per step (None: the solver chooses its own steps).
        stochastic: whether it integrates the reverse SDE (True) or the probability-flow ODE.
    and, where they apply:
        strong_order: stochastic solvers only: the pathwise order, where one is claimed (None: not claimed).
        warmup_order: multistep solvers start with steps of this order (None: no warm-up).
        reversible: whether a deterministic solver also integrates forwards, on an increasing grid
            (ODE inversion, `sdeflow.encode`).
        controller: adaptive solvers: the `StepSizeController` that sizes each attempt from the last
            one's error (None: fixed steps).
        max_steps: adaptive solvers: the attempts allowed before the run gives up.

    Args:
        denoise: after the last step, replace x by Tweedie's denoised estimate E[x_0 | x_eps]
            (one more score evaluation, counted).
    """

    order: int
    nfe_per_step: int | None
    stochastic: bool
    strong_order: float | None = None
    warmup_order: int | None = None
    reversible: bool = True
    controller: StepSizeController | None = None
    max_steps: int = 10_000
    # Leading grid points the solver places itself (an analytic jump's first interval): grid searches leave them alone.
    fixed_head: ClassVar[int] = 0

    def __init__(self, denoise: bool = False):
        self.denoise = bool(denoise)

    @property
    def convergence_order(self) -> float:
        """The global order guaranteed asymptotically: the method's order, or one more than its warm-up steps'."""
        return self.order if self.warmup_order is None else min(self.order, self.warmup_order + 1)

    # --- The solver: its state and one step ----------------------------------------------------------------
    def init(self, score, sde, x: torch.Tensor, sched: GridCoefficients) -> State:
        """The state before the first step (one-step solvers need only the grid's coefficients)."""
        return State(sched)

    def step(self, score, sde, x: torch.Tensor, i: int, state: State, noise) -> Step:
        """One step from grid point i towards i + 1: the new x and state (see `Step`; a pair (x, state) is one)."""
        raise NotImplementedError(f"{type(self).__name__} defines neither step() nor solve()")

    def reached(self, state: State, i: int) -> bool:
        """Adaptive solvers: whether every sample of `state` has reached grid point i + 1 (a fixed step always has)."""
        return True

    def solve(self, score, sde, x: torch.Tensor, sched: GridCoefficients, noise, record: Callable) -> torch.Tensor:
        """The one loop over the grid; `record(x, i)` is called at every grid point i reached and returns x (hooked).

        A fixed step is taken once per grid interval. An adaptive step is attempted until the interval's end is
        reached: its error norm decides which proposals are taken, and the solver's `controller` sizes the next
        attempt; a NaN error stops the run where it appeared, and `max_steps` attempts in all end it.
        """
        name, n = type(self).__name__, len(sched) - 1
        state = self.init(score, sde, x, sched)
        attempts = 0
        for i in range(n):
            done = False
            while not done:
                proposal = Step(*self.step(score, sde, x, i, state, noise))
                if proposal.error is None:
                    x, state, done = proposal.x, proposal.state, True
                    continue
                attempts += 1
                # Only NaN or infinity in the proposal gives a NaN norm; shrinking the step would not help.
                at = nan_at(proposal.error, state.t)
                if at is not None:
                    raise non_finite(name, f"at attempt {attempts} (towards step {i + 1} of {n}){at}")
                h_before = state.h
                accept, h = self.controller.adapt(proposal.state.h, proposal.error)
                x, state = taken(accept, proposal, x, state)
                # A sample that only waited at the interval's end (an attempt of size 0) keeps its step for the next.
                state = dataclasses.replace(state, h=torch.where(proposal.state.h > 0, h, h_before))
                done = self.reached(state, i)
                if not done and attempts >= self.max_steps:
                    raise SolverError(
                        f"{name} did not reach t = {float(sched.t[i + 1]):.6g} in {self.max_steps} "
                        "attempted steps; loosen its tolerances"
                    )
            x = record(x, i + 1)
        return x

    # --- The plan ------------------------------------------------------------------------------------------
    def steps_for_nfe(self, nfe: int) -> int:
        """The number of steps this sampler takes within a budget of `nfe` score evaluations."""
        if self.nfe_per_step is None:
            raise BudgetError(f"{type(self).__name__} chooses its own steps; its NFE cannot be budgeted")
        steps = (int(nfe) - int(self.denoise)) // self.nfe_per_step
        if steps < 1:
            raise BudgetError(
                f"{type(self).__name__} needs at least {self.nfe_per_step + int(self.denoise)} NFE, got {nfe}"
            )
        return steps

    def timesteps(self, grid, sde, steps: int) -> torch.Tensor:
        """The grid this sampler runs on for `steps` steps (samplers that reshape grids override this)."""
        return grid(sde, steps)

    def plan(self, sde, grid=None, nfe: int | None = None, steps: int | None = None) -> torch.Tensor:
        """The time grid this sampler will run: `steps` steps of `grid`, or as many as `nfe` evaluations allow.

        Adaptive solvers choose their own steps: they run from T to eps, and a budget is ignored.
        `grid` defaults to `default_grid()`, the log-SNR grid (`sdeflow.samplers.grids.default_grid`).
        """
        if nfe is not None and steps is not None:
            raise ValueError("give nfe or steps, not both")
        if self.nfe_per_step is None:
            if steps is not None:
                raise BudgetError(f"{type(self).__name__} chooses its own steps; do not give steps")
            return torch.tensor([sde.T, sde.eps], dtype=torch.float64)
        if nfe is None and steps is None:
            raise ValueError(
                f"{type(self).__name__} steps on a grid: give `steps` or `nfe` (a budget of score evaluations); "
                "only adaptive solvers choose their own steps"
            )
        if steps is None:
            steps = self.steps_for_nfe(nfe)
        elif int(steps) != steps or steps < 1:
            raise ValueError(f"steps must be a positive integer, got {steps!r}")
        if grid is None:
            from sdeflow.samplers.grids import default_grid

            grid = default_grid()
        return self.timesteps(grid, sde, int(steps))

    def require_steps(self, sched: GridCoefficients, order: int) -> None:
        """Multistep methods: refuse grids too short for the requested order to ever be used."""
        if len(sched) - 1 < order:
            raise BudgetError(
                f"{type(self).__name__} of order {order} needs at least {order} steps, got {len(sched) - 1}; "
                f"use a lower order or more steps"
            )

    # --- The run -------------------------------------------------------------------------------------------
    def sample(
        self,
        score,
        sde,
        x: torch.Tensor,
        timesteps,
        generator=None,
        return_trajectory: bool = False,
        hook: Callable | None = None,
        progress: Callable | None = None,
        grad: bool = False,
    ) -> SampleResult:
        """Run the sampler from x (a draw of p_T) along `timesteps`.

        Args:
            score: a `sdeflow.ScoreFunction` of this `sde` (its calls are counted).
            sde: the forward SDE.
            x: the initial state at timesteps[0].
            timesteps: 1-D decreasing grid inside [sde.eps, sde.T], at least two points (see `plan`).
            generator: a torch.Generator or a `sdeflow.PerSampleNoise`, for stochastic samplers.
            return_trajectory: also return the state at every grid point.
            hook: `hook(x, t) -> x`, applied to the state at every grid point after the first (for
                inverse problems: replacement, projection); the next step starts from what it returns.
            progress: `progress(i, n)`, called when grid point i of n steps is reached.
            grad: record the autograd graph through the model and the solver (for guidance or
                losses that differentiate through sampling). Off by default: sampling then keeps
                no activations, and the samples come back without `requires_grad`.
        """
        timesteps = check_timesteps(timesteps, sde, x, forward_ok=True)
        if timesteps[-1] > timesteps[0]:
            self.check_forward()
        check_score_input(score, sde, x)
        noise = as_noise(generator)
        name = type(self).__name__
        if not all_finite(x):
            raise NonFiniteError(f"{name}: the initial state holds NaN or infinity")
        n = len(timesteps) - 1
        # Preallocated: a list of states and its stacked copy would hold the trajectory twice.
        trajectory = x.new_empty((n + 1, *x.shape)) if return_trajectory else None
        if trajectory is not None:
            trajectory[0] = x

        # Every grid point is checked. On a CPU the check is made where the point is reached, so a run
        # stops at the first NaN. On a GPU reading a flag back stalls the queue of kernels each step
        # (20-30% of the time at batch 128 on an H200), so there the flags stay on the device and are
        # read once, after the loop: the error still names the first step where NaN appeared.
        deferred = [] if x.device.type != "cpu" else None

        def where(i: int) -> str:
            return f"at step {i} of {n} (t = {float(timesteps[i]):.6g})"

        def record(x_i: torch.Tensor, i: int) -> torch.Tensor:
            if deferred is not None:
                deferred.append((i, finite_flag(x_i)))
            elif not all_finite(x_i):
                raise non_finite(name, where(i))
            if hook is not None:
                x_i = hook(x_i, timesteps[i])
            if trajectory is not None:
                trajectory[i] = x_i
            if progress is not None:
                progress(i, n)
            return x_i

        nfe0 = score.nfe
        passes0 = (getattr(score, "forwards", None), getattr(score, "backwards", None))
        # no_grad rather than inference_mode: the samples stay ordinary tensors that a caller may
        # later use in autograd (a loss on generated data), which inference tensors forbid.
        with torch.set_grad_enabled(grad):
            x = self.solve(score, sde, x, GridCoefficients.of(sde, timesteps), noise, record)
            if deferred:
                flags = torch.stack([f for _, f in deferred]).tolist()
                if not all(flags):
                    raise non_finite(name, where(deferred[flags.index(False)][0]))
            if self.denoise:
                # Tweedie's formula: the posterior mean of x_0 given x at the last time.
                x = score.x0(x, timesteps[-1])
                if not bool(torch.isfinite(x).all()):
                    raise non_finite(name, f"after the final denoising step (t = {float(timesteps[-1]):.6g})")
        passes = [None if p0 is None else getattr(score, k) - p0 for k, p0 in zip(("forwards", "backwards"), passes0)]
        return SampleResult(
            samples=x,
            nfe=score.nfe - nfe0,
            timesteps=timesteps,
            trajectory=trajectory,
            forwards=passes[0],
            backwards=passes[1],
        )

    def check_forward(self) -> None:
        """Refuse, at the door, an increasing grid for a solver that cannot integrate forwards in time."""
        name = type(self).__name__
        if self.stochastic:
            raise ValueError(
                f"{name} is stochastic: it runs only from T towards eps (a decreasing grid); "
                "encode data with a deterministic solver"
            )
        if not self.reversible:
            raise ValueError(
                f"{name} cannot integrate forwards in time; encode with a grid solver such as DDIM, "
                "DPMSolverPP, UniPC, EDMHeun or ProbabilityFlowODE"
            )
        if self.denoise:
            raise ValueError(
                f"{name}(denoise=True) ends with a denoising step, which has no meaning on an increasing grid; "
                "use denoise=False to encode"
            )

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


def taken(accept, proposal: Step, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
    """The proposal where `accept` holds, the previous x and state elsewhere: for the batch (a bool), or per sample
    (a bool tensor, applied to x and to every tensor field of the state)."""
    if not isinstance(accept, torch.Tensor):
        return (proposal.x, proposal.state) if accept else (x, state)

    def pick(new, old):
        return torch.where(append_dims(accept, new.ndim), new, old) if isinstance(new, torch.Tensor) else new

    fields = {f.name: pick(getattr(proposal.state, f.name), getattr(state, f.name)) for f in dataclasses.fields(state)}
    return pick(proposal.x, x), dataclasses.replace(proposal.state, **fields)


def nan_at(error, t: torch.Tensor) -> str | None:
    """Where an error norm is NaN, for a message: the first such sample (one norm per sample) and its time `t`, or
    the batch's time (one norm for the batch); None where it is not."""
    if not isinstance(error, torch.Tensor):
        return f", from t = {float(t):.6g}" if math.isnan(error) else None
    if not bool(error.isnan().any()):
        return None
    bad = int(error.isnan().flatten().nonzero()[0])
    return f", sample {bad}, from t = {float(t.reshape(-1)[bad] if t.ndim else t):.6g}"


def check_order(order: int, allowed: tuple[int, ...], name: str) -> int:
    """A solver's order, refused at the door unless it is one of `allowed`."""
    if order not in allowed:
        raise ValueError(f"{name} supports order {' or '.join(map(str, allowed))}, got {order}")
    return int(order)


def check_noise_scale(eta: float, s_noise: float, name: str) -> tuple[float, float, bool]:
    """(eta, s_noise, whether noise is drawn) of an ancestral-type solver, refused at the door unless both are >= 0."""
    if eta < 0 or s_noise < 0:
        raise ValueError(f"{name} needs eta >= 0 and s_noise >= 0, got eta={eta}, s_noise={s_noise}")
    return float(eta), float(s_noise), eta > 0 and s_noise > 0


def finite_flag(x: torch.Tensor) -> torch.Tensor:
    """A 0-d boolean tensor on x's device: whether x holds no NaN or infinity (a sum propagates both)."""
    return torch.isfinite(_total(x))


def all_finite(x: torch.Tensor) -> bool:
    """Whether x holds no NaN or infinity: one reduction, accumulated in at least float32, read back as a number."""
    return math.isfinite(_total(x).item())


def _total(x: torch.Tensor) -> torch.Tensor:
    # A NaN or infinity anywhere makes the sum NaN or infinite (a state whose sum overflows float32 has diverged
    # anyway). Half precision is summed in float32, where a float16 batch cannot overflow.
    return x.sum(dtype=torch.float64 if x.dtype == torch.float64 else torch.float32)


def check_score_input(score, sde, x: torch.Tensor) -> None:
    """Refuse, in one line, what the score model cannot take: another SDE, device or floating dtype."""
    own = getattr(score, "sde", None)
    if own is not None and own is not sde and own != sde:
        raise ValueError(
            f"the score function reads its model through {own!r}, but the sampler was given {sde!r}; "
            "sample with the score function's own SDE"
        )
    params = getattr(getattr(score, "model", None), "parameters", None)
    first = next((p for p in params() if p.is_floating_point()), None) if callable(params) else None
    if first is None:
        return
    if first.device != x.device:
        raise ValueError(
            f"the score model is on {first.device} but the samples are on {x.device}; "
            f"sample on the model's device (device={first.device.type!r}) or move the model"
        )
    if first.dtype != x.dtype:
        raise ValueError(
            f"the score model's weights are {first.dtype} but the samples are {x.dtype}; "
            f"sample in {first.dtype} (dtype=...) or convert the model (e.g. model.to({x.dtype}))"
        )


def check_timesteps(timesteps, sde, x: torch.Tensor, forward_ok: bool = False) -> torch.Tensor:
    """Validate a grid at the door: 1-D, at least two points, strictly decreasing (or, with `forward_ok`,
    strictly increasing), inside [eps, T]."""
    timesteps = torch.as_tensor(timesteps, dtype=x.dtype, device=x.device)
    if timesteps.ndim != 1 or len(timesteps) < 2:
        raise ValueError(f"timesteps must be a 1-D grid of at least two times, got shape {tuple(timesteps.shape)}")
    # Checked on Python numbers: one read of the grid, rather than a dozen tensor operations per sampling call.
    t = timesteps.tolist()
    decreasing = all(b < a for a, b in zip(t, t[1:]))
    if not decreasing and not (forward_ok and all(b > a for a, b in zip(t, t[1:]))):
        raise ValueError(
            "timesteps must be strictly decreasing (from T towards eps)"
            + ("; or strictly increasing to encode data with a deterministic solver" if forward_ok else "")
        )
    lo, hi = (t[-1], t[0]) if decreasing else (t[0], t[-1])
    slack = 1e-6 * sde.T
    if lo < sde.eps - slack or hi > sde.T + slack:
        raise ValueError(f"timesteps must lie in [eps, T] = [{sde.eps}, {sde.T}], got [{lo}, {hi}]")
    return timesteps
