"""A Gaussian mixture with diagonal covariances: exact scores, densities and flows under every linear SDE.

If p_0 = sum_k w_k N(mu_k, diag(s_k^2)) and x_t = alpha(t) x_0 + sigma(t) z, then
p_t = sum_k w_k N(alpha mu_k, diag(alpha^2 s_k^2 + sigma^2)): the score and log-density are
closed-form, so every solver can be checked against the truth.
"""

from __future__ import annotations

import math

import torch

from sdeflow.core.tensors import append_dims, batch_times


class GaussianMixture:
    """p_0 = sum_k w_k N(mu_k, diag(s_k^2)) in d dimensions; samples may have any shape with d elements.

    Args:
        weights: (K,) positive mixture weights (normalised here).
        means: (K, d) component means.
        stds: (K, d) per-dimension standard deviations, or (K,) for isotropic components.
    """

    def __init__(self, weights, means, stds):
        weights = torch.as_tensor(weights, dtype=torch.float64)
        means = torch.as_tensor(means, dtype=torch.float64)
        stds = torch.as_tensor(stds, dtype=torch.float64)
        if means.ndim != 2:
            raise ValueError(f"means must have shape (K, d), got {tuple(means.shape)}")
        K, d = means.shape
        if stds.ndim == 1:
            stds = stds[:, None].expand(K, d)
        if weights.shape != (K,) or stds.shape != (K, d):
            raise ValueError(
                f"weights must be ({K},) and stds ({K},) or ({K}, {d}); "
                f"got {tuple(weights.shape)} and {tuple(stds.shape)}"
            )
        if (weights <= 0).any() or (stds <= 0).any():
            raise ValueError("weights and stds must be positive")
        self.weights = weights / weights.sum()
        self.means = means.contiguous()
        self.stds = stds.contiguous()
        self.dim = d

    @classmethod
    def random(cls, dim: int = 16, components: int = 8, std_range=(0.05, 0.2), seed: int = 0) -> "GaussianMixture":
        """A tight mixture as in the benchmark protocol: means in [-1, 1]^d, stds in `std_range`."""
        g = torch.Generator().manual_seed(seed)
        means = torch.rand(components, dim, generator=g, dtype=torch.float64) * 2 - 1
        lo, hi = std_range
        stds = lo + (hi - lo) * torch.rand(components, dim, generator=g, dtype=torch.float64)
        weights = 0.5 + torch.rand(components, generator=g, dtype=torch.float64)
        return cls(weights, means, stds)

    def __repr__(self) -> str:
        return f"GaussianMixture(components={len(self.weights)}, dim={self.dim})"

    # --- Marginals under an SDE ---------------------------------------------------------------
    def _marginal(self, sde, t, x):
        """Component means (B, K, d) and variances (B, K, d) of p_t at the batch's times."""
        t = batch_times(t, x).to(torch.float64)
        alpha = sde.alpha(t)[:, None, None]
        sigma = sde.sigma(t)[:, None, None]
        means, stds = self.means.to(x.device), self.stds.to(x.device)
        return alpha * means, alpha**2 * stds**2 + sigma**2

    def _flat(self, x):
        if x[0].numel() != self.dim:
            raise ValueError(f"samples must have {self.dim} elements each, got shape {tuple(x.shape[1:])}")
        return x.reshape(x.shape[0], self.dim).to(torch.float64)

    def _component_logp(self, sde, x, t):
        """log w_k + log N_k(x) for each sample and component, (B, K), and what the score needs."""
        xf = self._flat(x)
        t = batch_times(t, x).to(torch.float64)
        if bool((t == t[0]).all()):
            # One time for the whole batch (the usual case): quadratic forms as matrix products, no (B, K, d) tensor.
            mean, var = (m[0] for m in self._marginal(sde, t[:1], x[:1]))
            prec = 1 / var
            quad = (xf**2) @ prec.T - 2 * xf @ (mean * prec).T + (mean**2 * prec).sum(1)
            logp = -0.5 * (quad + torch.log(2 * math.pi * var).sum(1)) + torch.log(self.weights.to(x.device))
            return logp, (lambda resp: resp @ (mean * prec) - xf * (resp @ prec))
        # Every sample at its own time (adaptive per-sample solvers): (B, K, d) terms, each computed once
        # (products and sums: on these shapes einsum is twice as slow).
        mean, var = self._marginal(sde, t, x)
        diff = xf[:, None, :] - mean
        scaled = diff / var
        quad = (scaled * diff).sum(-1)
        logp = -0.5 * (quad + torch.log(var).sum(-1) + self.dim * math.log(2 * math.pi)) + torch.log(
            self.weights.to(x.device)
        )
        return logp, (lambda resp: -(resp[:, :, None] * scaled).sum(1))

    def log_prob(self, x: torch.Tensor, t=0.0, sde=None) -> torch.Tensor:
        """Exact log p_t(x) per sample (float64); with no SDE, log p_0."""
        logp, _ = self._component_logp(sde or _Identity(), x, t)
        return torch.logsumexp(logp, dim=1)

    def score(self, x: torch.Tensor, t, sde) -> torch.Tensor:
        """Exact grad_x log p_t(x) under `sde`, computed in float64 and returned in x's dtype."""
        t = batch_times(t, x)
        if bool((t == t[0]).all()):
            return self._score(x, t, sde)
        # Every sample at its own time makes (B, K, d) intermediates: in blocks of about 64k numbers they stay in
        # cache, which halves the time of a 10,000-sample batch.
        rows = max(1, 65536 // (len(self.weights) * self.dim))
        return torch.cat([self._score(x[i : i + rows], t[i : i + rows], sde) for i in range(0, len(x), rows)])

    def _score(self, x, t, sde):
        logp, score_given = self._component_logp(sde, x, t)
        return score_given(torch.softmax(logp, dim=1)).reshape(x.shape).to(x.dtype)

    def score_fn(self, sde):
        """`model(x, t)` returning the exact score under `sde`, ready for `sdeflow.ScoreFunction`."""
        return _ExactScore(self, sde)

    def assign(self, x: torch.Tensor) -> torch.Tensor:
        """Index of the most probable component of p_0 for each sample (for mode-weight checks)."""
        logp, _ = self._component_logp(_Identity(), x, 0.0)
        return logp.argmax(1)

    # --- Moments and samples ------------------------------------------------------------------
    def mean(self, t=0.0, sde=None) -> torch.Tensor:
        """Mean of p_t, shape (d,)."""
        alpha = (sde or _Identity()).alpha(torch.tensor(float(t), dtype=torch.float64))
        return alpha * (self.weights[:, None] * self.means).sum(0)

    def cov(self, t=0.0, sde=None) -> torch.Tensor:
        """Covariance of p_t, shape (d, d)."""
        sde = sde or _Identity()
        tt = torch.tensor(float(t), dtype=torch.float64)
        alpha, sigma = sde.alpha(tt), sde.sigma(tt)
        m = (self.weights[:, None] * self.means).sum(0)
        dm = self.means - m
        within = torch.diag((self.weights[:, None] * self.stds**2).sum(0))
        between = (self.weights[:, None, None] * dm[:, :, None] * dm[:, None, :]).sum(0)
        return alpha**2 * (within + between) + sigma**2 * torch.eye(self.dim, dtype=torch.float64)

    def sample(
        self, n: int, generator: torch.Generator | None = None, t=0.0, sde=None, dtype=torch.float64
    ) -> torch.Tensor:
        """n exact samples of p_t (p_0 by default), shape (n, d)."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        x0 = self.means[k] + self.stds[k] * torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        if sde is not None:
            tt = torch.full((n,), float(t), dtype=torch.float64)
            x0 = append_dims(sde.alpha(tt), 2) * x0 + append_dims(sde.sigma(tt), 2) * torch.randn(
                n, self.dim, generator=generator, dtype=torch.float64
            )
        return x0.to(dtype)

    def __call__(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n samples of p_0, so a mixture serves wherever a toy sampler `(n, generator)` does."""
        return self.sample(n, generator)

    def ode_reference(
        self, sde, x_T: torch.Tensor, t_end=None, rtol: float = 1e-10, atol: float = 1e-10, method: str = "dopri8"
    ):
        """The probability-flow ODE solution from x_T at sde.T to `t_end` (default sde.eps), adaptive in float64.

        The ODE is solved where it is smooth for every schedule: in x / alpha against log(sigma / alpha) = -lambda,
        in which the trajectory does not depend on the schedule (tests/test_schedules.py). That is a VE SDE
        whose time is linear in log sigma. In t, a discrete-time table's drift jumps at each of its N knots,
        and an adaptive solver crawls.

        This is the benchmark's ground truth: check it against a looser solve when tolerances change.
        """
        from sdeflow.samplers.solvers.ode import ProbabilityFlowODE
        from sdeflow.score.function import ScoreFunction
        from sdeflow.sde.ve import VESDE

        t_end = sde.eps if t_end is None else t_end
        ends = torch.tensor([sde.T, t_end], dtype=torch.float64)
        (alpha_T, alpha_end), (nsr_T, nsr_end) = sde.alpha(ends).tolist(), sde.nsr(ends).tolist()
        log_sigma = VESDE(sigma_min=nsr_end, sigma_max=nsr_T, T=1.0, eps=0.0)
        solver = ProbabilityFlowODE(method=method, rtol=rtol, atol=atol)
        grid = torch.tensor([1.0, 0.0], dtype=torch.float64)
        out = solver.sample(
            ScoreFunction(self.score_fn(log_sigma), log_sigma), log_sigma, x_T.to(torch.float64) / alpha_T, grid
        )
        return alpha_end * out.samples


class _ExactScore:
    """The exact score of a mixture under one SDE, as a model `(x, t) -> score`."""

    def __init__(self, mixture: GaussianMixture, sde):
        self.mixture, self.sde = mixture, sde

    def __call__(self, x, t):
        return self.mixture.score(x, t, self.sde)

    def __repr__(self) -> str:
        return f"ExactScore({self.mixture!r})"


class _Identity:
    """alpha = 1, sigma = 0: the data distribution itself."""

    def alpha(self, t):
        return torch.ones_like(t)

    def sigma(self, t):
        return torch.zeros_like(t)
