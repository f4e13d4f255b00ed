"""Exact paths for Gaussian data N(mean, diag(std^2)) under a linear SDE: the flow map and the reverse transition.

With Gaussian data every marginal p_t is Gaussian, N(alpha_t mean, alpha_t^2 std^2 + sigma_t^2), the
score is linear in x, and both the probability-flow ODE and the reverse SDE act on each coordinate
by known affine maps. These are the truths that ODE inversion, SDEdit and strong convergence are
tested against. `mean` and `std` broadcast against the samples (a number, or one per coordinate).
"""

from __future__ import annotations

import torch

from sdeflow.problems.gmm import GaussianMixture


def _coefs(sde, t, like: torch.Tensor):
    t = torch.as_tensor(t, dtype=torch.float64)
    return float(sde.alpha(t)), float(sde.sigma(t))


def gaussian_data(mean, std, dim: int) -> GaussianMixture:
    """N(mean, std^2) in `dim` coordinates as a one-component mixture (its exact score, marginals, samples)."""
    mean = torch.as_tensor(mean, dtype=torch.float64).expand(dim)
    std = torch.as_tensor(std, dtype=torch.float64).expand(dim)
    return GaussianMixture([1.0], mean[None], std[None])


def flow_map(sde, mean, std, x: torch.Tensor, s: float, t: float) -> torch.Tensor:
    """The probability-flow ODE's solution at time t from x at time s (either direction):
    x_t = alpha_t mean + (sd_t / sd_s)(x_s - alpha_s mean), sd_u = sqrt(alpha_u^2 std^2 + sigma_u^2)."""
    mean, std = torch.as_tensor(mean, dtype=x.dtype), torch.as_tensor(std, dtype=x.dtype)
    a_s, s_s = _coefs(sde, s, x)
    a_t, s_t = _coefs(sde, t, x)
    sd_s, sd_t = torch.sqrt(a_s**2 * std**2 + s_s**2), torch.sqrt(a_t**2 * std**2 + s_t**2)
    return a_t * mean + sd_t / sd_s * (x - a_s * mean)


def reverse_transition(sde, mean, std, s: float, t: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(A, b, C) with x_s | x_t ~ N(A x_t + b, C), s < t: the reverse SDE's exact transition, whatever x_t's law.

    It is the forward process's conditional law of x_s given x_t: with V_u = alpha_u^2 std^2 + sigma_u^2 and
    Cov(x_s, x_t) = alpha_s alpha_t std^2 + (alpha_t / alpha_s) sigma_s^2, A = Cov / V_t, C = V_s - Cov^2 / V_t.
    """
    if not s < t:
        raise ValueError(f"the reverse transition runs from t down to s < t, got s={s}, t={t}")
    mean, std = torch.as_tensor(mean, dtype=torch.float64), torch.as_tensor(std, dtype=torch.float64)
    a_s, s_s = _coefs(sde, s, mean)
    a_t, s_t = _coefs(sde, t, mean)
    v_s, v_t = a_s**2 * std**2 + s_s**2, a_t**2 * std**2 + s_t**2
    cov = a_s * a_t * std**2 + (a_t / a_s) * s_s**2
    A = cov / v_t
    return A, a_s * mean - A * a_t * mean, v_s - cov**2 / v_t
