"""Diffusion posterior sampling (Chung et al. 2023): the likelihood of y through the denoiser's x0, differentiated."""

from __future__ import annotations

import numpy as np
import torch

from sdeflow.conditioning.guidance import GuidedScore, check_interval, mix
from sdeflow.conditioning.inverse.base import Bound, InverseMethod, as_batch
from sdeflow.core.tensors import append_dims
from sdeflow.samplers.base import IncompatibleSampler


class DPS(InverseMethod):
    """s(x) + zeta grad_x log N(y; A x0(x), noise_std^2 I): the posterior score, p(y | x_t) ~ p(y | x0 = E[x0 | x_t]).

    One forward and one backward through the network per evaluation (counted), with any sampler. zeta = 1
    is the approximation as derived. Biased where p(x0 | x_t) is far from a point mass. The gradient
    passes through dx0/dx ~ 1 / alpha, large at high noise: with an explicit SDE step and a small
    noise_std it can diverge (the bound sampler then names the step).

    `normalised=True` is Chung et al.'s step in their units (their Algorithm 1, and their code's
    `PosteriorSampling`): each step moves the state by -zeta grad_{x_t} ||y - A x0(x_t)|| (the norm,
    per sample) beyond what the unguided step gives, so zeta = 1 is their step with scale 1, and
    noise_std is not used (0 is allowed). Guidance acts through the score, so the term added to the
    score is that move divided by the score's coefficient in the step being taken (`step_coefficients`):
    the ancestral step's for stochastic solvers, DDIM's for deterministic ones. The move is then exact,
    to rounding, with `PCSampler(Ancestral())` (DDPM's sampler, their Algorithm 1) and with `DDIM` (their
    DDIM variant), and holds to first order in the step with any other grid solver (a multistage
    solver spreads it over its stages; a corrector's evaluations add to it). Solvers that choose their
    own steps have no step to scale by, and are refused.

    Args:
        zeta: the guidance weight.
        normalised: Chung et al.'s normalised step (above), rather than the likelihood's gradient as derived.
        interval: (t_lo, t_hi), where guidance acts (the plain score elsewhere, with no backward).
        limit: the watch on the iterates (`InverseMethod`).
    """

    usage = "sf.inverse.DPS(zeta=1.0).bind(score, sde, solver, operator, y, noise_std)"

    def __init__(self, *, zeta: float = 1.0, normalised: bool = False, interval=None, limit: float | None = 1000.0):
        self.zeta, self.normalised, self.interval = float(zeta), bool(normalised), check_interval(interval)
        super().__init__(limit=limit)

    def bind(self, score, sde, solver, operator, y, noise_std, seed=0, offset=0):
        if not (noise_std > 0 or (self.normalised and noise_std == 0)):
            raise ValueError(
                f"noise_std must be positive (or 0 with normalised=True, which does not use it), got {noise_std}"
            )
        if self.normalised and solver.nfe_per_step is None:
            raise IncompatibleSampler(
                f"normalised DPS scales its term by each grid step; {type(solver).__name__} chooses its own steps"
            )
        guided = _DPSScore(score, operator, y, float(noise_std), self, solver.stochastic)
        return Bound(guided, self.watched(solver, guided.on_grid if self.normalised else None))


def step_coefficients(num, stochastic: bool) -> np.ndarray:
    """c_i, the score's coefficient in the mean of step i (t = t_i to s = t_{i+1}): how far one unit of score moves x.

    The ancestral step (`Ancestral`, Ho et al.'s posterior mean) reads the score through x0 with
        c = var_ts / a_ts = (alpha_s / alpha_t) sigma_t^2 - (alpha_t / alpha_s) sigma_s^2,  a_ts = alpha_t / alpha_s,
    (on DDPM's own grid beta_i / sqrt(1 - beta_i)), and DDIM's step (`DDIM`) with
        c = alpha_s sigma_t (sigma_t / alpha_t - sigma_s / alpha_s) = (alpha_s / alpha_t) sigma_t^2 - sigma_t sigma_s.
    To first order in the step they are g(t)^2 dt and g(t)^2 dt / 2: Euler-Maruyama's on the reverse SDE
    and Euler's on the probability-flow ODE. `num`: a grid's `GridCoefficients.num`.
    """
    a, s = np.array(num.alpha), np.array(num.sigma)
    with np.errstate(divide="ignore"):  # alpha_t = 0 (a flow's t = 1): no finite step, and no term
        ratio = a[1:] / a[:-1]
    if stochastic:
        return ratio * s[:-1] ** 2 - s[1:] ** 2 / ratio
    return ratio * s[:-1] ** 2 - s[:-1] * s[1:]


class _DPSScore(GuidedScore):
    def __init__(self, base, operator, y, noise_std: float, method: DPS, stochastic: bool):
        super().__init__(base, method.interval)
        self.operator, self.y, self.noise_std = operator, y, noise_std
        self.zeta, self.normalised, self.stochastic = method.zeta, method.normalised, stochastic
        self.steps = None  # normalised: (the grid's times, each step's score coefficient), told by the bound sampler

    def on_grid(self, sched) -> None:
        if sched.num.t[-1] > sched.num.t[0]:
            raise ValueError("normalised DPS samples on a decreasing grid (from T towards eps)")
        c = torch.as_tensor(step_coefficients(sched.num, self.stochastic), dtype=sched.t.dtype, device=sched.t.device)
        self.steps = (sched.t.flip(0).contiguous(), c)

    def coefficient(self, t: torch.Tensor) -> torch.Tensor:
        """c_i of the step each time lies in, t_{i+1} < t <= t_i (the grid's last time: the last step's)."""
        rising, c = self.steps
        i = len(c) - torch.searchsorted(rising, t.to(rising.device, rising.dtype).contiguous())
        return c[i.clamp(0, len(c) - 1)].to(t.device)

    def guided(self, x, t, alpha, sigma, active):
        if not bool(active.any()):  # outside the guidance interval: the plain score, no backward
            return self.base_score(self.base, x, t, alpha, sigma)
        if self.normalised and self.steps is None:
            raise RuntimeError(
                "normalised DPS moves each step by zeta grad ||y - A x0||: sample with its bound sampler"
            )
        with torch.enable_grad():
            xg, score, x0 = self.score_and_x0(x, t, alpha, sigma)
            measured = self.operator.A(x0)
            residual = (as_batch(self.y, measured) - measured).flatten(1)
            if self.normalised:
                objective = -residual.norm(dim=1)
            else:
                objective = -0.5 * (residual**2).sum(1) / self.noise_std**2
            (grad,) = torch.autograd.grad(objective.sum(), xg)
            self.backwards += 1
        score = score.detach()
        if self.normalised:
            # The step moves x by c_i times the score: the term c_i^-1 zeta grad moves it by zeta grad.
            grad = grad / append_dims(self.coefficient(t), x.ndim)
        return mix(active, score + self.zeta * grad, score)
