"""Discrete-time VP as in DDPM and ADM: a table of N betas read in continuous time.

Training timestep k = 0 .. N-1 of a DDPM model is time t = (k + 1) / N here, where
alpha(t)^2 = prod_{i <= k} (1 - beta_i) exactly. Between those times log alpha is interpolated
linearly (DPM-Solver's discrete wrapper does the same), from log alpha(0) = 0. So solvers that step
on the training times (`sdeflow.LeadingTimesteps`) evaluate the model at its own timesteps and use
the table's alphas exactly; continuous solvers on any other grid (log-SNR, Karras) interpolate, and
the model is read at fractional timesteps (`sdeflow.hub.DiscreteTimeModel`).
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import torch

from sdeflow.sde.beta_schedule import VPSchedule


def linear_betas(n: int = 1000, start: float = 1e-4, end: float = 0.02) -> list[float]:
    """DDPM's linear table (Ho et al. 2020): beta_k evenly spaced from `start` to `end`."""
    return np.linspace(start, end, int(n), dtype=np.float64).tolist()


def scaled_linear_betas(n: int = 1000, start: float = 0.00085, end: float = 0.012) -> list[float]:
    """Latent diffusion's table: sqrt(beta_k) evenly spaced from sqrt(start) to sqrt(end)."""
    return (np.linspace(start**0.5, end**0.5, int(n), dtype=np.float64) ** 2).tolist()


def cosine_betas(n: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> list[float]:
    """Nichol & Dhariwal's table (eq. 17): beta_k = min(1 - abar((k+1)/n) / abar(k/n), max_beta),
    abar(t) = cos^2((t+s)/(1+s) pi/2)."""
    t = np.arange(int(n) + 1, dtype=np.float64) / n
    abar = np.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    return np.minimum(1 - abar[1:] / abar[:-1], max_beta).tolist()


class DiscreteVPSDE(VPSchedule):
    """The VP process of a table of betas (DDPM, ADM, latent diffusion), on t in [0, 1] with N = len(betas).

    Args:
        betas: beta_0 .. beta_{N-1}, each in (0, 1): `linear_betas()`, `cosine_betas()`, or a model's own table.
        eps: the smallest time sampled to; default 1/N, the first training timestep (alpha^2 = 1 - beta_0).
            0 is allowed: there alpha = 1, where DDIM pipelines with `set_alpha_to_one` end.
    """

    def __init__(self, betas, eps: float | None = None):
        table = np.asarray(betas, dtype=np.float64)
        if table.ndim != 1 or len(table) < 2:
            raise ValueError(f"betas must be a list of at least two numbers, got shape {table.shape}")
        if not (np.isfinite(table).all() and (table > 0).all() and (table < 1).all()):
            raise ValueError("every beta must lie in (0, 1)")
        n = len(table)
        super().__init__(T=1.0, eps=1.0 / n if eps is None else eps, N=n)
        self.betas = tuple(table.tolist())
        # log alpha at t = k / N, k = 0 .. N: the knots of the interpolation.
        self._knots = torch.from_numpy(np.concatenate([[0.0], 0.5 * np.cumsum(np.log1p(-table))]))
        self._on = {}

    def knots(self, like: torch.Tensor) -> torch.Tensor:
        """log alpha at t = k / N, k = 0 .. N, in float64 on `like`'s device (cached per device)."""
        if like.device not in self._on:
            self._on[like.device] = self._knots.to(like.device)
        return self._on[like.device]

    def _segment(self, t):
        knots = self.knots(t)
        pos = t.double() * self.N
        k = pos.detach().floor().clamp(0, self.N - 1).long()
        return knots, k, pos - k

    def log_alpha(self, t):
        knots, k, w = self._segment(t)
        return (knots[k] + w * (knots[k + 1] - knots[k])).to(t.dtype)

    def f(self, t):
        knots, k, _ = self._segment(t)
        return ((knots[k + 1] - knots[k]) * self.N).to(t.dtype) + 0 * t

    def t_from_log_alpha(self, log_alpha):
        knots = self.knots(log_alpha)
        la = log_alpha.double()
        # knots decrease: find the segment with knots[k] >= la > knots[k + 1].
        k = (torch.searchsorted(-knots, -la.detach().contiguous(), right=True) - 1).clamp(0, self.N - 1)
        return ((k + (la - knots[k]) / (knots[k + 1] - knots[k])) / self.N).to(log_alpha.dtype)

    # The table is the process: equality, hashing and the name compare it, not every cached tensor.
    def __eq__(self, other) -> bool:
        return type(other) is type(self) and (other.betas, other.eps) == (self.betas, self.eps)

    def __hash__(self) -> int:
        return hash((type(self), self.betas, self.eps))

    def __repr__(self) -> str:
        digest = hashlib.sha256(np.asarray(self.betas).tobytes()).hexdigest()[:8]
        return (
            f"DiscreteVPSDE(N={self.N}, betas=[{self.betas[0]:.3g} .. {self.betas[-1]:.3g}], "
            f"sha256={digest}, eps={self.eps:.3g})"
        )
