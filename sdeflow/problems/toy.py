"""Standard 2-D toy distributions for pictures: exact mixtures and sample-only shapes."""

from __future__ import annotations

import math

import torch

from sdeflow.problems.gmm import GaussianMixture


def eight_gaussians(radius: float = 2.0, std: float = 0.1) -> GaussianMixture:
    """Eight equal Gaussians on a circle (exact score)."""
    angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    means = radius * torch.stack([torch.cos(angles), torch.sin(angles)], 1)
    return GaussianMixture(torch.ones(8), means, torch.full((8,), std))


def grid_gaussians(n: int = 5, spacing: float = 1.0, std: float = 0.05) -> GaussianMixture:
    """An n x n grid of equal Gaussians centred at the origin (exact score)."""
    c = (torch.arange(n, dtype=torch.float64) - (n - 1) / 2) * spacing
    means = torch.cartesian_prod(c, c)
    return GaussianMixture(torch.ones(n * n), means, torch.full((n * n,), std))


def two_moons(n: int, generator: torch.Generator | None = None, noise: float = 0.05) -> torch.Tensor:
    """n points on two interleaved half circles (sample only)."""
    u = torch.rand(n, generator=generator, dtype=torch.float64) * math.pi
    upper = torch.rand(n, generator=generator) < 0.5
    x = torch.where(upper, torch.cos(u), 1 - torch.cos(u))
    y = torch.where(upper, torch.sin(u), 0.5 - torch.sin(u))
    pts = torch.stack([x - 0.5, y - 0.25], 1) * 2
    return pts + noise * torch.randn(n, 2, generator=generator, dtype=torch.float64)


def swiss_roll(n: int, generator: torch.Generator | None = None, noise: float = 0.05) -> torch.Tensor:
    """n points on a 2-D Swiss roll scaled to about [-2, 2]^2 (sample only)."""
    u = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=generator, dtype=torch.float64))
    pts = torch.stack([u * torch.cos(u), u * torch.sin(u)], 1) / 7.5
    return pts + noise * torch.randn(n, 2, generator=generator, dtype=torch.float64)


def checkerboard(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """n points uniform on the black squares of a 4 x 4 board on [-2, 2]^2 (sample only)."""
    x1 = torch.rand(n, generator=generator, dtype=torch.float64) * 4 - 2
    x2 = torch.rand(n, generator=generator, dtype=torch.float64) - torch.randint(0, 2, (n,), generator=generator) * 2.0
    x2 = x2 + (torch.floor(x1) % 2)
    return torch.stack([x1, x2], 1)
