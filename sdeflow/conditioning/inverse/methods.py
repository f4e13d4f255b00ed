"""Inverse-problem methods as settings, bound to an observation batch by batch.

The methods act in three different places: replacement is a per-step hook, RePaint wraps the
sampler, DPS and PiGDM wrap the score. The apps and the benchmark take any of them through one
interface: a method's settings come from `conf/inverse/`, and `bind` returns the (score, sampler,
hook) that one batch of samples runs with. The observation is per batch (sample i sees its own y_i),
so a run sharded into batches or over processes conditions each sample exactly as one batch would.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Callable

from sdeflow.conditioning.inverse.dps import DPS
from sdeflow.conditioning.inverse.pigdm import PiGDM
from sdeflow.conditioning.inverse.repaint import RePaint
from sdeflow.conditioning.inverse.replacement import Replacement


@dataclass
class Bound:
    """What one batch samples with: `sampler.sample(score, sde, x, grid, hook=hook)`."""

    score: object
    sampler: object
    hook: Callable | None = None


class InverseMethod(abc.ABC):
    """A way to sample p(x | y) for y = A x + N(0, noise_std^2) with a model of p(x)."""

    @abc.abstractmethod
    def bind(self, score, sde, sampler, operator, y, noise_std: float, seed: int = 0, offset: int = 0) -> Bound:
        """Condition `sampler` with `score` on y (B, ...) for the samples offset .. offset + B - 1.

        `seed` and `offset` key the method's own randomness (the noised observations of replacement)
        per sample, as the solver noise is.
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"


class ReplacementMethod(InverseMethod):
    """score_sde's replacement: the observed part of the state is set from the noised y at every grid
    point (`Replacement`). Any sampler; no extra network pass; biased (the tests measure how much)."""

    def bind(self, score, sde, sampler, operator, y, noise_std, seed=0, offset=0):
        return Bound(score, sampler, Replacement(sde, operator, y, seed=seed, offset=offset))


class RePaintMethod(InverseMethod):
    """RePaint: replacement, each block of `jump` steps taken `resamples` times with re-noising in between
    (`RePaint`). Needs a one-step sampler; costs `resamples` times its NFE."""

    def __init__(self, resamples: int = 10, jump: int = 1):
        for name, v in (("resamples", resamples), ("jump", jump)):
            if int(v) != v or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v}")
        self.resamples, self.jump = int(resamples), int(jump)

    def bind(self, score, sde, sampler, operator, y, noise_std, seed=0, offset=0):
        replacement = Replacement(sde, operator, y, seed=seed, offset=offset)
        return Bound(score, RePaint(sampler, replacement, self.resamples, self.jump))


class DPSMethod(InverseMethod):
    """Diffusion posterior sampling (`DPS`): one forward and one backward per evaluation. `normalised`
    steps with zeta / ||y - A x0|| as Chung et al. do, and then needs no noise level."""

    def __init__(self, zeta: float = 1.0, normalised: bool = False, interval=None):
        self.zeta, self.normalised, self.interval = float(zeta), bool(normalised), interval

    def bind(self, score, sde, sampler, operator, y, noise_std, seed=0, offset=0):
        return Bound(DPS(score, operator, y, noise_std, self.zeta, self.normalised, self.interval), sampler)


class PiGDMMethod(InverseMethod):
    """Pseudoinverse-guided diffusion (`PiGDM`): DPS with the denoiser's variance r_t^2 for data of
    variance `data_var`; one forward and one backward per evaluation."""

    def __init__(self, data_var: float = 1.0, interval=None):
        if not data_var > 0:
            raise ValueError(f"data_var must be positive, got {data_var}")
        self.data_var, self.interval = float(data_var), interval

    def bind(self, score, sde, sampler, operator, y, noise_std, seed=0, offset=0):
        return Bound(PiGDM(score, operator, y, noise_std, self.data_var, self.interval), sampler)
