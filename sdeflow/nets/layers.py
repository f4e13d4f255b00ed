"""Building blocks of the NCSN++ / DDPM++ U-Nets (Song et al. 2021, Appendix H)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from sdeflow.nets.fir import downsample_2d, make_kernel, upsample_2d


def conv(c_in: int, c_out: int, k: int = 3, init_scale: float = 1.0) -> nn.Conv2d:
    """Convolution with the reference's variance-scaling ("fan_avg", uniform) initialisation, zero bias."""
    layer = nn.Conv2d(c_in, c_out, k, padding=k // 2)
    scale = max(init_scale, 1e-10)
    fan = (c_in + c_out) * k * k / 2
    bound = math.sqrt(3 * scale / fan)
    nn.init.uniform_(layer.weight, -bound, bound)
    nn.init.zeros_(layer.bias)
    return layer


def group_norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(c // 4, 32), c, eps=1e-6)


class Resample(nn.Module):
    """2x up- or down-sampling: FIR filtering (NCSN++) or nearest / average pooling (DDPM++)."""

    def __init__(self, up: bool, fir: bool = True, fir_kernel=(1, 3, 3, 1)):
        super().__init__()
        self.up, self.fir = up, fir
        self.register_buffer("kernel", make_kernel(fir_kernel), persistent=False)

    def forward(self, x):
        if self.fir:
            return upsample_2d(x, self.kernel) if self.up else downsample_2d(x, self.kernel)
        return F.interpolate(x, scale_factor=2, mode="nearest") if self.up else F.avg_pool2d(x, 2)


class AttnBlock(nn.Module):
    """Single-head self-attention over pixels, with a residual connection."""

    def __init__(self, c: int, skip_rescale: bool = True):
        super().__init__()
        self.norm = group_norm(c)
        self.qkv = conv(c, 3 * c, 1)
        self.out = conv(c, c, 1, init_scale=0.0)
        self.skip_rescale = skip_rescale

    def forward(self, x, temb=None):
        n, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(n, 3, c, h * w).unbind(1)
        attn = torch.softmax(torch.einsum("nci,ncj->nij", q, k) / math.sqrt(c), dim=-1)
        y = self.out(torch.einsum("nij,ncj->nci", attn, v).reshape(n, c, h, w))
        return (x + y) / math.sqrt(2.0) if self.skip_rescale else x + y


class ResBlockDDPM(nn.Module):
    """DDPM residual block: norm, act, conv, + time, norm, act, dropout, conv; 1x1 skip on channel change."""

    def __init__(self, c_in: int, c_out: int, temb_dim: int, dropout: float = 0.1, skip_rescale: bool = True):
        super().__init__()
        self.norm1, self.conv1 = group_norm(c_in), conv(c_in, c_out)
        self.temb = nn.Linear(temb_dim, c_out)
        nn.init.zeros_(self.temb.bias)
        self.norm2, self.drop, self.conv2 = group_norm(c_out), nn.Dropout(dropout), conv(c_out, c_out, init_scale=0.0)
        self.skip = conv(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        self.skip_rescale = skip_rescale

    def forward(self, x, temb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.drop(F.silu(self.norm2(h))))
        x = self.skip(x)
        return (x + h) / math.sqrt(2.0) if self.skip_rescale else x + h


class ResBlockBigGAN(nn.Module):
    """BigGAN residual block; it also resamples (up or down) both paths when asked."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        temb_dim: int,
        dropout: float = 0.1,
        skip_rescale: bool = True,
        up: bool = False,
        down: bool = False,
        fir: bool = True,
        fir_kernel=(1, 3, 3, 1),
    ):
        super().__init__()
        self.resample = Resample(up, fir, fir_kernel) if (up or down) else None
        self.norm1, self.conv1 = group_norm(c_in), conv(c_in, c_out)
        self.temb = nn.Linear(temb_dim, c_out)
        nn.init.zeros_(self.temb.bias)
        self.norm2, self.drop, self.conv2 = group_norm(c_out), nn.Dropout(dropout), conv(c_out, c_out, init_scale=0.0)
        self.skip = conv(c_in, c_out, 1) if (c_in != c_out or up or down) else nn.Identity()
        self.skip_rescale = skip_rescale

    def forward(self, x, temb):
        h = F.silu(self.norm1(x))
        if self.resample is not None:
            h, x = self.resample(h), self.resample(x)
        h = self.conv1(h) + self.temb(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.drop(F.silu(self.norm2(h))))
        x = self.skip(x)
        return (x + h) / math.sqrt(2.0) if self.skip_rescale else x + h
