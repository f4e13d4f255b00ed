"""A grid's coefficients, computed once per grid, and the linear combination a step forms with them.

Every solver reads the same few functions of the grid's times (alpha, sigma, the half log-SNR lambda,
sigma / alpha and the lambda steps); `GridCoefficients` computes them once, in float64, and keeps them
as tensors and as Python numbers, so that a step's scalar arithmetic costs no tensor operation.
`weighted_sum` then forms a step's combination of tensors with those numbers as weights.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np
import torch


class GridCoefficients:
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
        # The rest is arithmetic on the grid's few points, done in numpy: a sampling call builds one of these, and on
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
    def of(cls, sde, timesteps: torch.Tensor) -> "GridCoefficients":
        """The coefficients of `timesteps` under `sde`, shared by every call on the same grid.

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
        return _shared(*key)

    def memo(self, key, make):
        """`make()`, computed once per grid and key: a solver's own per-grid coefficients (e.g. its stage times)."""
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
def _shared(sde, times: tuple, dtype, device) -> GridCoefficients:
    # Built from the times' values, which the tuple holds exactly (Python floats hold every float32 and float64).
    return GridCoefficients(sde, torch.tensor(times, dtype=dtype, device=device))


class Numbers(NamedTuple):
    """A grid's coefficients as Python floats (`GridCoefficients.num`); hashable, so solvers can cache by grid."""

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


# The old name, kept importable (`sdeflow.Schedule`): it read as kin of `VPSchedule`, an SDE, which it is not.
Schedule = GridCoefficients
