"""FIR up- and down-sampling in plain PyTorch (the upfirdn2d of StyleGAN2 / NCSN++, no CUDA extension)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def make_kernel(k=(1, 3, 3, 1)) -> torch.Tensor:
    """Separable 2-D FIR kernel from a 1-D one, normalised to sum 1."""
    k = torch.as_tensor(k, dtype=torch.float32)
    k = k[:, None] * k[None, :]
    return k / k.sum()


def upfirdn2d(
    x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0)
) -> torch.Tensor:
    """Upsample by zero insertion, pad, filter with `kernel` (per channel), then keep every `down`-th pixel."""
    n, c, h, w = x.shape
    if up > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, (0, up - 1, 0, 0, 0, up - 1))
        x = x.reshape(n, c, h * up, w * up)
    x = F.pad(x, (pad[0], pad[1], pad[0], pad[1]))
    weight = torch.flip(kernel, (0, 1)).to(x)[None, None].expand(c, 1, *kernel.shape)
    x = F.conv2d(x, weight, groups=c)
    return x[:, :, ::down, ::down]


def upsample_2d(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """2x FIR upsampling; the kernel is scaled by 4 so that a constant image stays constant."""
    p = kernel.shape[0] - 2
    return upfirdn2d(x, kernel * 4, up=2, pad=((p + 1) // 2 + 1, p // 2))


def downsample_2d(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """2x FIR downsampling."""
    p = kernel.shape[0] - 2
    return upfirdn2d(x, kernel, down=2, pad=((p + 1) // 2, p // 2))
