"""Shared pieces of the solvers: the grid's coefficients, and the exponential integrators' kernels.

The exponential integrators (DDIM, DPM-Solver, DPM-Solver++, UniPC) integrate the probability-flow
ODE exactly in its linear part and approximate the model's output by a polynomial in the half
log-SNR lambda = log(alpha / sigma); for every linear SDE the same formulas hold, written through
alpha(t), sigma(t) and lambda(t).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np
import torch


class Schedule:
    """A grid's coefficients, computed once in float64 and kept in the grid's dtype and as Python numbers.

    Attributes (one entry per grid point, in the grid's dtype):
        t: the grid times.
        alpha, sigma, lam: alpha(t), sigma(t) and the half log-SNR lambda(t).
        nsr: sigma / alpha, the noise-to-signal ratio (EDM's sigma).
        h: lambda steps, h[i] = lambda(t[i + 1]) - lambda(t[i]) > 0 (one fewer entry).
        coef: (alpha, sigma) of each grid point as 0-d tensors, passed to the score function so that it
            does not recompute them at every evaluation.
        num: the same as tuples of Python floats (float64), `num.t`, `num.alpha`, ... `num.h`: the
            per-step coefficients of a solver are scalar arithmetic, which on Python numbers costs no
            tensor operations (nor, on a GPU, kernel launches or host syncs) inside the loop.
    """

    def __init__(self, sde, timesteps: torch.Tensor):
        t64 = timesteps.to(torch.float64)
        alpha, sigma = sde.alpha(t64), sde.sigma(t64)
        self.t = timesteps
        # The rest is arithmetic on the grid's few points, done in numpy: a sampling call builds one Schedule, and on
        # a small network a dozen tensor operations more would show in its overhead.
        a, s = np.array(alpha.tolist()), np.array(sigma.tolist())
        with np.errstate(divide="ignore", invalid="ignore"):  # alpha or sigma 0 at an end: infinities, as in torch
            lam, nsr = np.log(a) - np.log(s), s / a
        self.num = Numbers(tuple(t64.tolist()), *(tuple(v.tolist()) for v in (a, s, lam, nsr, np.diff(lam))))
        self.alpha, self.sigma = alpha.to(timesteps.dtype), sigma.to(timesteps.dtype)
        # (alpha, sigma) at each grid point, for the score function (`ScoreFunction.evaluate(..., coef=)`).
        self.coef = list(zip(self.alpha.unbind(), self.sigma.unbind()))
        self._memo: dict = {}

    @classmethod
    def of(cls, sde, timesteps: torch.Tensor) -> "Schedule":
        """The schedule of `timesteps` under `sde`, shared by every call on the same grid.

        Sampling many batches on one grid (an app's run, a benchmark's rounds) then builds its
        coefficients once. A grid that records gradients (times being learned) gets its own, and so
        does an SDE that cannot be hashed.
        """
        if timesteps.requires_grad:
            return cls(sde, timesteps)
        key = (sde, tuple(timesteps.tolist()), timesteps.dtype, timesteps.device)
        try:
            hash(key)
        except TypeError:
            return cls(sde, timesteps)
        return _shared_schedule(*key)

    def memo(self, key, make):
        """`make()`, computed once per schedule and key: a solver's own per-grid coefficients (e.g. its stage times)."""
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    def _tensor(self, values) -> torch.Tensor:
        return torch.tensor(values, dtype=self.t.dtype, device=self.t.device)

    # Few solvers read these as tensors: they are made when first asked for.
    @functools.cached_property
    def lam(self) -> torch.Tensor:
        return self._tensor(self.num.lam)

    @functools.cached_property
    def nsr(self) -> torch.Tensor:
        return self._tensor(self.num.nsr)

    @functools.cached_property
    def h(self) -> torch.Tensor:
        return self._tensor(self.num.h)

    def __len__(self) -> int:
        return len(self.t)


@functools.lru_cache(maxsize=64)
def _shared_schedule(sde, times: tuple, dtype, device) -> Schedule:
    # Built from the times' values, which the tuple holds exactly (Python floats hold every float32 and float64).
    return Schedule(sde, torch.tensor(times, dtype=dtype, device=device))


class Numbers(NamedTuple):
    """A grid's coefficients as tuples of Python floats (see `Schedule.num`); hashable, so solvers can cache by grid."""

    t: tuple
    alpha: tuple
    sigma: tuple
    lam: tuple
    nsr: tuple
    h: tuple


def weighted_sum(*terms: tuple[float, torch.Tensor]) -> torch.Tensor:
    """c_0 v_0 + c_1 v_1 + ... for Python-number weights c_k: one tensor operation per term.

    A solver's step is a linear combination of its state and model outputs whose weights depend on
    the grid alone; folding each weight into one Python number first, and adding each term with
    `add(v, alpha=c)`, keeps a step to as many tensor operations as it has terms.
    """
    (c, v), *rest = terms
    out = v * c
    for c, v in rest:
        out = out.add(v, alpha=c)
    return out


def ddim_step(x: torch.Tensor, x0: torch.Tensor, sched: Schedule, i: int) -> torch.Tensor:
    """First-order data-prediction step from grid point i to i + 1: sigma_t/sigma_s x + alpha_t (1 - e^-h) x0."""
    num = sched.num
    return weighted_sum((num.sigma[i + 1] / num.sigma[i], x), (-num.alpha[i + 1] * math.expm1(-num.h[i]), x0))


class Stages(NamedTuple):
    """The coefficients of a DPM-Solver step from time s to t (lambda_t = lambda_s + h), for `dpm_solver_stages`.

    Either 0-d tensors (a step chosen on the fly) or, for a fixed grid, Python numbers with the
    stage times as tensors (`stage_table`): the same formulas then make no tensor operation for them.
    `coef` holds the (alpha, sigma) of s, s1 and s2 for the score function, or Nones.
    """

    s: torch.Tensor
    s1: torch.Tensor | None
    s2: torch.Tensor | None
    h: float
    a_s: float
    a_t: float
    s_t: float
    a_s1: float
    s_s1: float
    a_s2: float
    s_s2: float
    phi: float  # expm1(h)
    e1: float  # expm1(r1 h)
    e2: float  # expm1(r2 h)
    coef: tuple = (None, None, None)


# The intermediate points of DPM-Solver-2 and -3 as fractions of the step in lambda (Lu et al. 2022).
R1 = {1: 0.5, 2: 0.5, 3: 1 / 3}
R2 = 2 / 3


def stages(sde, s, t, lam_s, h, order: int, like: torch.Tensor) -> Stages:
    """The coefficients of a step from s to t as tensors; with 1-D s, t, lam_s and h, those of every step at once."""
    s1 = time_at_lambda(sde, lam_s + R1[order] * h, like)
    s2 = time_at_lambda(sde, lam_s + R2 * h, like) if order == 3 else s1
    return Stages(s, s1, s2, h, sde.alpha(s), sde.alpha(t), sde.sigma(t), sde.alpha(s1), sde.sigma(s1), sde.alpha(s2), sde.sigma(s2),
                  torch.expm1(h), torch.expm1(R1[order] * h), torch.expm1(R2 * h))


def stage_table(sde, sched: Schedule, order: int) -> list[Stages]:
    """Every step's `Stages` on a fixed grid, as Python numbers (the stage times as tensors), computed once in float64."""
    t64, lam = sched.t.to(torch.float64), torch.tensor(sched.num.lam, dtype=torch.float64, device=sched.t.device)
    table = stages(sde, t64[:-1], t64[1:], lam[:-1], lam[1:] - lam[:-1], order, t64)
    dtype = sched.t.dtype
    s1, s2 = table.s1.to(dtype), table.s2.to(dtype)
    coef1 = zip(table.a_s1.to(dtype).unbind(), table.s_s1.to(dtype).unbind())
    coef2 = zip(table.a_s2.to(dtype).unbind(), table.s_s2.to(dtype).unbind())
    numbers = zip(*(v.tolist() for v in table[3:14]))
    return [Stages(sched.t[i], s1[i], s2[i], *nums, coef=(sched.coef[i], c1, c2))
            for i, (nums, c1, c2) in enumerate(zip(numbers, coef1, coef2))]


def dpm_solver_stages(score, x, c: Stages, order: int) -> list[torch.Tensor]:
    """The solutions of DPM-Solver-1 to -`order` from x at time c.s across the step `c`, sharing evaluations.

    Lu et al. 2022, Algorithms 1 and 2: intermediate points at r1 = 1/2 (order 2) or r1 = 1/3,
    r2 = 2/3 (order 3). The last entry is the order-`order` solution; the one before it is the
    embedded lower-order solution that the adaptive solver compares it with. The scalars are grouped
    so that, as numbers, they cost no tensor operation.
    """
    phi, h = c.phi, c.h
    eps_s = score.eps(x, c.s, c.coef[0])
    out = [(c.a_t / c.a_s) * x - (c.s_t * phi) * eps_s]
    if order == 1:
        return out
    r1 = R1[order]
    u1 = (c.a_s1 / c.a_s) * x - (c.s_s1 * c.e1) * eps_s
    d1 = score.eps(u1, c.s1, c.coef[1]) - eps_s
    out.append(out[0] - (c.s_t / (2 * r1) * phi) * d1)
    if order == 2:
        return out
    u2 = (c.a_s2 / c.a_s) * x - (c.s_s2 * c.e2) * eps_s - (c.s_s2 * (R2 / r1) * (c.e2 / (R2 * h) - 1)) * d1
    d2 = score.eps(u2, c.s2, c.coef[2]) - eps_s
    out.append(out[0] - ((c.s_t / R2) * (phi / h - 1)) * d2)
    return out


def lower_order_final(order: int, i: int, n: int, second_until: int = 0) -> int:
    """The order of step i of n on a short grid (under 15 steps), whose long final lambda-steps make high orders unsteady.

    At most the number of steps left (UniPC's rule); with `second_until` = k, also at most second
    order over the last k steps (DPM-Solver++'s: ..., 3, 2, 2, 1 for 3M). Grids of 15 steps or more
    keep `order`.
    """
    if n >= 15:
        return order
    order = min(order, n - i)
    return min(order, 2) if n - i <= second_until else order


def check_order(order: int, allowed: tuple[int, ...], name: str) -> int:
    if order not in allowed:
        raise ValueError(f"{name} supports order {' or '.join(map(str, allowed))}, got {order}")
    return int(order)


def check_noise_scale(eta: float, s_noise: float, name: str) -> tuple[float, float]:
    """(eta, s_noise) of an ancestral-type solver, refused at the door unless both are >= 0."""
    if eta < 0 or s_noise < 0:
        raise ValueError(f"{name} needs eta >= 0 and s_noise >= 0, got eta={eta}, s_noise={s_noise}")
    return float(eta), float(s_noise)


def time_at_lambda(sde, lam: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The SDE time with log-SNR `lam`, in `like`'s dtype (for intermediate stages)."""
    return sde.t_from_lambda(lam.to(torch.float64)).to(like.dtype)
