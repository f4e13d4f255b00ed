"""Time embeddings of the score networks (Song et al. 2021; Ho et al. 2020)."""

from __future__ import annotations

import math

import torch
from torch import nn


class GaussianFourierEmbedding(nn.Module):
    """Random Fourier features [sin(2 pi w t), cos(2 pi w t)], w ~ N(0, scale^2), fixed (NCSN++, VE).

    Fed log sigma(t) in the reference; any affine function of t (such as t itself) is equivalent up to
    the scale, so the SDE time is embedded directly.
    """

    def __init__(self, dim: int = 256, scale: float = 16.0):
        super().__init__()
        if dim % 2:
            raise ValueError(f"embedding dim must be even, got {dim}")
        self.register_buffer("W", torch.randn(dim // 2) * scale)
        self.dim = dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        proj = t[:, None] * self.W[None, :] * 2 * math.pi
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)


class SinusoidalEmbedding(nn.Module):
    """Transformer sinusoidal embedding of t * `scale` (DDPM/DDPM++, VP; the reference feeds 999 t)."""

    def __init__(self, dim: int = 128, scale: float = 999.0, max_positions: int = 10_000):
        super().__init__()
        if dim % 2:
            raise ValueError(f"embedding dim must be even, got {dim}")
        self.dim, self.scale, self.max_positions = dim, float(scale), max_positions

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        freqs = torch.exp(-math.log(self.max_positions) * torch.arange(half, dtype=torch.float32, device=t.device) / (half - 1))
        args = (t.float() * self.scale)[:, None] * freqs[None]
        return torch.cat([torch.sin(args), torch.cos(args)], dim=-1).to(t.dtype if t.is_floating_point() else torch.float32)
