"""A residual MLP score network for low-dimensional data."""

from __future__ import annotations

import torch
from torch import nn

from sdeflow.nets.embeddings import GaussianFourierEmbedding, LabelEmbedding, check_labels


class ScoreMLP(nn.Module):
    """MLP on flattened data with a time embedding added in every residual block; output has x's shape.

    Args:
        dim: number of data elements per sample.
        hidden: width.
        blocks: residual blocks.
        embedding: a time-embedding module (default Gaussian Fourier features of width `hidden`).
        label_dim: number of classes of a class-conditional network (0: unconditional); it is then
            called as net(x, t, y=labels), label -1 meaning no class.
    """

    def __init__(
        self, dim: int = 2, hidden: int = 128, blocks: int = 3, embedding: nn.Module | None = None, label_dim: int = 0
    ):
        super().__init__()
        if dim < 1 or hidden < 2 or blocks < 1:
            raise ValueError(f"need dim >= 1, hidden >= 2, blocks >= 1; got {dim}, {hidden}, {blocks}")
        self.dim = dim
        self.embed = embedding if embedding is not None else GaussianFourierEmbedding(hidden, scale=4.0)
        emb_dim = self.embed.dim
        self.label_dim = int(label_dim)
        self.label = LabelEmbedding(self.label_dim, emb_dim) if self.label_dim else None
        self.inp = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(
            nn.ModuleDict(
                {
                    "t": nn.Linear(emb_dim, hidden),
                    "f": nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden)),
                }
            )
            for _ in range(blocks)
        )
        self.out = nn.Sequential(nn.SiLU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        check_labels(self.label_dim, y, len(x), "ScoreMLP")
        emb = self.embed(t)
        if self.label is not None:
            emb = emb + self.label(y.to(x.device))
        h = self.inp(x.flatten(1))
        for block in self.blocks:
            h = h + block["f"](h + block["t"](emb))
        return self.out(h).reshape(x.shape)
