"""Time embeddings of the score networks (Song et al. 2021; Ho et al. 2020)."""

from __future__ import annotations

import math

import torch
from torch import nn

from sdeflow.core.checks import integer


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
        freqs = torch.exp(
            -math.log(self.max_positions) * torch.arange(half, dtype=torch.float32, device=t.device) / (half - 1)
        )
        args = (t.float() * self.scale)[:, None] * freqs[None]
        return torch.cat([torch.sin(args), torch.cos(args)], dim=-1).to(
            t.dtype if t.is_floating_point() else torch.float32
        )


class LabelEmbedding(nn.Module):
    """Class labels to an embedding added to the time embedding (EDM's `map_label`): one-hot, then a linear map.

    Label -1 is the null class (all-zero one-hot, so a zero embedding): what label dropout trains,
    and what classifier-free guidance evaluates as the unconditional branch.
    """

    def __init__(self, label_dim: int, dim: int):
        super().__init__()
        integer("label_dim", label_dim)
        self.label_dim = int(label_dim)
        self.map = nn.Linear(self.label_dim, dim, bias=False)
        # One-hot inputs: unit-variance rows, as a time embedding's scale.
        nn.init.normal_(self.map.weight, std=1.0)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.map(one_hot_labels(y, self.label_dim, self.map.weight.dtype))


def one_hot_labels(y: torch.Tensor, label_dim: int, dtype) -> torch.Tensor:
    """(batch, label_dim) one-hot rows of integer labels; label -1 (no class) is the zero row."""
    y = y.long()
    return nn.functional.one_hot(y.clamp_min(0), label_dim).to(dtype) * (y >= 0)[:, None].to(dtype)


def check_labels(label_dim: int, y, batch: int, name: str) -> None:
    """Refuse, in one line, labels for an unconditional network, none for a conditional one, or labels out of range."""
    if label_dim and y is None:
        raise ValueError(
            f"{name} is class-conditional (label_dim={label_dim}): call it with labels y (a (batch,) tensor of "
            f"0..{label_dim - 1}, or -1 for no class), e.g. ScoreFunction(model, sde, prediction, y=labels) or "
            "sdeflow-sample labels=[...]"
        )
    if not label_dim and y is not None:
        raise ValueError(f"{name} is unconditional (label_dim=0): it takes no labels")
    if y is not None:
        y = torch.as_tensor(y)
        if y.shape != (batch,):
            raise ValueError(f"{name}: need one label per sample, shape ({batch},), got {tuple(y.shape)}")
        if bool(((y < -1) | (y >= label_dim)).any()):
            raise ValueError(
                f"{name}: labels must lie in -1..{label_dim - 1} (-1: no class), got {y.unique().tolist()}"
            )
