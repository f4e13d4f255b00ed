"""Pictures of samples: image grids and 2-D scatter plots, saved as PNG."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch


def save_samples_png(x: torch.Tensor, path, centered: bool = True, title: str = "", cols: int | None = None) -> Path:
    """Images (n, C, H, W) as a grid (`cols` columns, default about square); points (n, 2) as a scatter plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    x = x.detach().float().cpu()
    if x.ndim == 4:
        img = (x + 1) / 2 if centered else x
        img = img.clamp(0, 1)
        n, c, h, w = img.shape
        cols = cols or math.ceil(math.sqrt(n))
        rows = math.ceil(n / cols)
        grid = torch.ones(c, rows * (h + 1) + 1, cols * (w + 1) + 1)
        for i in range(n):
            r, q = divmod(i, cols)
            grid[:, 1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + q * (w + 1) : 1 + q * (w + 1) + w] = img[i]
        arr = grid.permute(1, 2, 0).numpy()
        fig = plt.figure(figsize=(max(3, cols * 0.6), max(3, rows * 0.6)))
        plt.imshow(arr[..., 0] if c == 1 else arr, cmap="gray" if c == 1 else None, interpolation="nearest")
        plt.axis("off")
    elif x.ndim == 2 and x.shape[1] == 2:
        fig = plt.figure(figsize=(5, 5))
        plt.scatter(x[:, 0].numpy(), x[:, 1].numpy(), s=2, alpha=0.5)
        plt.gca().set_aspect("equal")
    else:
        raise ValueError(f"can draw images (n, C, H, W) or 2-D points (n, 2), got shape {tuple(x.shape)}")
    if title:
        plt.title(title, fontsize=9)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def to_numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy()
