"""The analytic high-noise phase: the probability-flow ODE of Gaussian data in closed form.

For p_0 = N(mu, Sigma) = N(mu, U diag(lam) U^T), p_t is Gaussian and the flow is affine:

x_t = alpha_t mu + U diag(r_t / r_s) U^T (x_s - alpha_s mu), r^2 = alpha^2 lam + sigma^2 per
eigen-direction (Wang & Vastola 2023). At high noise every data distribution is close to its
Gaussian approximation, so the flow from T down to a chosen time costs no score evaluation.
"""

from __future__ import annotations

import torch

from sdeflow.samplers.base import Sampler
from sdeflow.samplers.coefficients import GridCoefficients

__all__ = ["AnalyticJump", "GaussianStats"]


class GaussianStats:
    """Mean and (optionally low-rank plus isotropic) covariance of the data, for the analytic phase.

    Args:
        mean: (d,) data mean.
        eigvecs: (d, k) orthonormal principal directions.
        eigvals: (k,) their variances.
        rest: variance along every direction orthogonal to `eigvecs` (0 when k = d).
    """

    def __init__(self, mean, eigvecs, eigvals, rest: float = 0.0):
        self.mean = torch.as_tensor(mean, dtype=torch.float64).flatten()
        self.eigvecs = torch.as_tensor(eigvecs, dtype=torch.float64)
        self.eigvals = torch.as_tensor(eigvals, dtype=torch.float64).clamp_min(0)
        self.rest = float(rest)
        d = self.mean.numel()
        if self.eigvecs.shape[0] != d or self.eigvecs.shape[1] != self.eigvals.numel():
            raise ValueError(f"eigvecs must be ({d}, k) with k = len(eigvals), got {tuple(self.eigvecs.shape)}")

    @classmethod
    def from_cov(cls, mean, cov) -> "GaussianStats":
        """Full-rank statistics from a covariance matrix."""
        lam, U = torch.linalg.eigh(torch.as_tensor(cov, dtype=torch.float64))
        return cls(mean, U, lam)

    @classmethod
    def from_distribution(cls, data) -> "GaussianStats":
        """From any object with `mean()` and `cov()` (e.g. `sdeflow.GaussianMixture`)."""
        return cls.from_cov(data.mean(), data.cov())

    @classmethod
    def from_samples(cls, x: torch.Tensor, rank: int | None = None) -> "GaussianStats":
        """From data samples (n, ...); `rank` keeps the top principal directions and an isotropic rest (for images)."""
        x = x.flatten(1).to(torch.float64)
        mean = x.mean(0)
        xc = x - mean
        if rank is None or rank >= x.shape[1]:
            return cls.from_cov(mean, xc.T @ xc / (len(x) - 1))
        _, s, V = torch.linalg.svd(xc, full_matrices=False)
        var = s**2 / (len(x) - 1)
        rest = float(var[rank:].sum() / (x.shape[1] - rank))
        return cls(mean, V[:rank].T, var[:rank], rest)

    def flow(self, sde, x: torch.Tensor, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The exact probability-flow map of N(mean, cov) from time s to time t."""
        shape, dtype = x.shape, x.dtype
        xf = x.flatten(1).to(torch.float64)
        s, t = s.to(torch.float64), t.to(torch.float64)
        a_s, a_t, sg_s, sg_t = sde.alpha(s), sde.alpha(t), sde.sigma(s), sde.sigma(t)
        mean, U, lam = self.mean.to(xf.device), self.eigvecs.to(xf.device), self.eigvals.to(xf.device)
        dev = xf - a_s * mean
        coef = U.T @ dev.T  # (k, n)
        ratio = torch.sqrt((a_t**2 * lam + sg_t**2) / (a_s**2 * lam + sg_s**2))
        out = (U @ (ratio[:, None] * coef)).T
        if self.eigvecs.shape[1] < self.mean.numel():
            rest_ratio = torch.sqrt((a_t**2 * self.rest + sg_t**2) / (a_s**2 * self.rest + sg_s**2))
            out = out + rest_ratio * (dev - (U @ coef).T)
        return (a_t * mean + out).reshape(shape).to(dtype)


class AnalyticJump(Sampler):
    """Jump analytically over the grid's first interval, then let `solver` take the rest.

    The first interval of the grid, [t_1, T], is crossed by the Gaussian flow of `stats` at zero
    NFE; `grid_for` builds such a grid from any other grid: T, then that grid on [eps, t_jump].
    Order, NFE per step and stochasticity are the inner solver's.

    Args:
        solver: any sdeflow sampler.
        stats: `GaussianStats` of the data, or an object with `mean()` and `cov()`.
        sigma_jump: where the jump lands, as the noise-to-signal ratio sigma / alpha (EDM's sigma),
            so that one value means the same noise level on every SDE.
    """

    def __init__(self, solver: Sampler, stats, sigma_jump: float, denoise: bool = False):
        super().__init__(denoise=denoise)
        self.solver = solver
        if stats is None:
            raise ValueError(
                "AnalyticJump needs the data's mean and covariance: stats=GaussianStats(...) or a distribution "
                "with mean() and cov() (the benchmark passes its problem)"
            )
        self.stats = stats if isinstance(stats, GaussianStats) else GaussianStats.from_distribution(stats)
        if not sigma_jump > 0:
            raise ValueError(f"sigma_jump must be positive, got {sigma_jump}")
        self.sigma_jump = float(sigma_jump)
        self.order, self.nfe_per_step, self.stochastic = solver.order, solver.nfe_per_step, solver.stochastic
        self.warmup_order, self.strong_order = solver.warmup_order, solver.strong_order

    # The first interval, [t_jump, T], is the jump's own: a grid search moves only the inner solver's grid.
    fixed_head = 1
    reversible = False  # its first step is a jump from T, not a step of the ODE

    def t_jump(self, sde) -> float:
        """The SDE time at which sigma / alpha = sigma_jump."""
        return float(sde.t_from_nsr(torch.tensor(self.sigma_jump, dtype=torch.float64)))

    def steps_for_nfe(self, nfe: int) -> int:
        return self.solver.steps_for_nfe(nfe - int(self.denoise) + int(self.solver.denoise))

    def timesteps(self, grid, sde, steps: int) -> torch.Tensor:
        t_jump = self.t_jump(sde)
        if not sde.eps < t_jump < sde.T:
            ends = torch.exp(-sde.lambda_(torch.tensor([sde.eps, sde.T], dtype=torch.float64))).tolist()
            raise ValueError(
                f"sigma_jump must lie inside this SDE's range of sigma / alpha, ({ends[0]:.4g}, {ends[1]:.4g}); "
                f"got {self.sigma_jump}"
            )
        inner = grid.restricted(t_max=t_jump)(sde, steps)
        return torch.cat([torch.tensor([sde.T], dtype=inner.dtype), inner])

    # Its own driver: the first interval is a closed-form jump, the rest another solver's whole run (its own driver).
    def solve(self, score, sde, x, sched, noise, record):
        t = sched.t
        x = record(self.stats.flow(sde, x, t[0], t[1]), 1)
        # The inner solver records its own grid points, one further on: a state for every time of the grid.
        x = self.solver.solve(score, sde, x, GridCoefficients(sde, t[1:]), noise, lambda y, i: record(y, i + 1))
        return score.x0(x, t[-1]) if self.solver.denoise else x
