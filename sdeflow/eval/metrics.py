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


class SlicedWasserstein:
    """Sliced Wasserstein-2 distance to a fixed reference set, its projections sorted once.

    A benchmark scores many sample sets against one exact set: projecting and sorting the
    reference once per run, not once per row, halves the metric's cost.
    """

    def __init__(self, reference: torch.Tensor, n_directions: int = 256, generator: torch.Generator | None = None):
        ref = reference.flatten(1).to(torch.float64)
        dirs = torch.randn(ref.shape[1], n_directions, generator=generator, dtype=torch.float64)
        self.directions = dirs / dirs.norm(dim=0, keepdim=True)
        self.sorted_reference = torch.sort(ref @ self.directions, dim=0).values

    def __call__(self, x: torch.Tensor) -> float:
        x = x.flatten(1).to(torch.float64)
        if x.shape[0] != self.sorted_reference.shape[0] or x.shape[1] != self.directions.shape[0]:
            raise ValueError(
                f"sliced Wasserstein needs a sample set shaped like the reference "
                f"({self.sorted_reference.shape[0]}, {self.directions.shape[0]}), got {tuple(x.shape)}"
            )
        px = torch.sort(x @ self.directions, dim=0).values
        return float(((px - self.sorted_reference) ** 2).mean().sqrt())


def sliced_wasserstein(
    x: torch.Tensor, y: torch.Tensor, n_directions: int = 256, generator: torch.Generator | None = None
) -> float:
    """Sliced Wasserstein-2 distance between two equally sized sample sets, over random unit directions."""
    return SlicedWasserstein(y, n_directions, generator)(x)


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
