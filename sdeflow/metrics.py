"""Sample-quality metrics of the benchmark protocol (benchmarks/README.md, section 1)."""

from __future__ import annotations

import math

import torch


def rms_error(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Per-sample RMS error ||x - ref|| / sqrt(d)."""
    if x.shape != ref.shape:
        raise ValueError(f"shapes differ: {tuple(x.shape)} vs {tuple(ref.shape)}")
    diff = (x.to(torch.float64) - ref.to(torch.float64)).flatten(1)
    return diff.norm(dim=1) / math.sqrt(diff.shape[1])


def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, n_directions: int = 256, generator: torch.Generator | None = None) -> float:
    """Sliced Wasserstein-2 distance between two equally sized sample sets, over random unit directions."""
    x, y = x.flatten(1).to(torch.float64), y.flatten(1).to(torch.float64)
    if x.shape != y.shape:
        raise ValueError(f"sliced Wasserstein needs equal sample sets, got {tuple(x.shape)} and {tuple(y.shape)}")
    dirs = torch.randn(x.shape[1], n_directions, generator=generator, dtype=torch.float64)
    dirs = dirs / dirs.norm(dim=0, keepdim=True)
    px, _ = torch.sort(x @ dirs, dim=0)
    py, _ = torch.sort(y @ dirs, dim=0)
    return float(((px - py) ** 2).mean().sqrt())


def gaussian_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance (float64) of samples, one per row."""
    x = x.flatten(1).to(torch.float64)
    return x.mean(0), torch.cov(x.T).reshape(x.shape[1], x.shape[1])


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Squared Frechet distance between N(mu1, sigma1) and N(mu2, sigma2) (the quantity FID reports).

    tr(sqrt(sigma1^(1/2) sigma2 sigma1^(1/2))) is taken through symmetric eigendecompositions,
    which stay real and stable where a general matrix square root does not.
    """
    mu1, mu2 = torch.as_tensor(mu1, dtype=torch.float64), torch.as_tensor(mu2, dtype=torch.float64)
    s1, s2 = torch.as_tensor(sigma1, dtype=torch.float64), torch.as_tensor(sigma2, dtype=torch.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.numel(), mu1.numel()):
        raise ValueError("frechet_distance needs means of shape (d,) and covariances of shape (d, d) on both sides")
    w, v = torch.linalg.eigh((s1 + s1.T) / 2)
    root1 = (v * w.clamp_min(0).sqrt()) @ v.T
    inner = root1 @ s2 @ root1
    tr_cross = torch.linalg.eigvalsh((inner + inner.T) / 2).clamp_min(0).sqrt().sum()
    return float((mu1 - mu2).pow(2).sum() + torch.trace(s1) + torch.trace(s2) - 2 * tr_cross)
