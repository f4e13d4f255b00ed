"""The NCSN++ / DDPM++ U-Net family (Song et al. 2021), in plain PyTorch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sdeflow.nets.embeddings import GaussianFourierEmbedding, LabelEmbedding, check_labels
from sdeflow.nets.layers import AttnBlock, Resample, ResBlockBigGAN, ResBlockDDPM, conv, group_norm


class NCSNpp(nn.Module):
    """U-Net with residual blocks at every resolution, attention at chosen ones, and a time embedding.

    NCSN++ is `biggan=True, fir=True` with a Gaussian-Fourier embedding (VE); DDPM++ is the same
    network with a sinusoidal embedding (VP). Its raw output is best read as noise (`EpsPrediction`),
    which is the reference's output scaling by 1 / sigma; a `ScorePrediction` reads it as the score.

    Args:
        in_channels: image channels.
        resolution: input height = width (a power of two times 2^(levels - 1)).
        nf: base width.
        ch_mult: width multiplier per resolution level.
        num_res_blocks: residual blocks per level.
        attn_resolutions: resolutions (in pixels) with self-attention.
        dropout: in residual blocks.
        biggan: BigGAN residual blocks that also resample (else DDPM blocks and separate resampling).
        fir: FIR up/down-sampling (else nearest / average pooling).
        fir_kernel: the 1-D FIR kernel.
        skip_rescale: divide residual sums by sqrt(2).
        embedding: time-embedding module (default Gaussian Fourier features of width nf, scale 16).
        label_dim: number of classes of a class-conditional network (0: unconditional); their embedding
            is added to the time embedding before its MLP, as in EDM, and the network is called as
            net(x, t, y=labels), label -1 meaning no class.
    """

    def __init__(
        self,
        in_channels: int = 3,
        resolution: int = 32,
        nf: int = 128,
        ch_mult=(1, 2, 2, 2),
        num_res_blocks: int = 4,
        attn_resolutions=(16,),
        dropout: float = 0.1,
        biggan: bool = True,
        fir: bool = True,
        fir_kernel=(1, 3, 3, 1),
        skip_rescale: bool = True,
        embedding: nn.Module | None = None,
        label_dim: int = 0,
    ):
        super().__init__()
        levels = len(ch_mult)
        if resolution % (2 ** (levels - 1)):
            raise ValueError(
                f"resolution {resolution} is not divisible by 2^{levels - 1} for {levels} levels "
                f"(ch_mult={tuple(ch_mult)})"
            )
        if num_res_blocks < 1 or nf < 8 or nf % 4:
            raise ValueError(f"need num_res_blocks >= 1 and nf a multiple of 4, >= 8; got {num_res_blocks}, {nf}")
        self.resolution, self.in_channels = resolution, in_channels
        self.embed = embedding if embedding is not None else GaussianFourierEmbedding(nf, scale=16.0)
        temb_dim = 4 * nf
        self.label_dim = int(label_dim)
        self.label = LabelEmbedding(self.label_dim, self.embed.dim) if self.label_dim else None
        self.temb = nn.Sequential(nn.Linear(self.embed.dim, temb_dim), nn.SiLU(), nn.Linear(temb_dim, temb_dim))
        block = ResBlockBigGAN if biggan else ResBlockDDPM
        res_kw = dict(temb_dim=temb_dim, dropout=dropout, skip_rescale=skip_rescale)
        resample_kw = dict(fir=fir, fir_kernel=fir_kernel)
        attn = set(attn_resolutions)

        self.conv_in = conv(in_channels, nf)
        self.down = nn.ModuleList()
        chans, c, res = [nf], nf, resolution
        for level, mult in enumerate(ch_mult):
            for _ in range(num_res_blocks):
                self.down.append(block(c, nf * mult, **res_kw))
                c = nf * mult
                if res in attn:
                    self.down.append(AttnBlock(c, skip_rescale))
                chans.append(c)
            if level != levels - 1:
                self.down.append(
                    ResBlockBigGAN(c, c, down=True, **res_kw, **resample_kw)
                    if biggan
                    else Resample(False, **resample_kw)
                )
                chans.append(c)
                res //= 2
        self.mid = nn.ModuleList([block(c, c, **res_kw), AttnBlock(c, skip_rescale), block(c, c, **res_kw)])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(ch_mult))):
            for _ in range(num_res_blocks + 1):
                self.up.append(block(c + chans.pop(), nf * mult, **res_kw))
                c = nf * mult
            if res in attn:
                self.up.append(AttnBlock(c, skip_rescale))
            if level != 0:
                self.up.append(
                    ResBlockBigGAN(c, c, up=True, **res_kw, **resample_kw) if biggan else Resample(True, **resample_kw)
                )
                res *= 2
        self.norm_out = group_norm(c)
        self.conv_out = conv(c, in_channels, init_scale=0.0)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if x.shape[1:] != (self.in_channels, self.resolution, self.resolution):
            raise ValueError(
                f"expected images of shape ({self.in_channels}, {self.resolution}, {self.resolution}), "
                f"got {tuple(x.shape[1:])}"
            )
        check_labels(self.label_dim, y, len(x), "NCSNpp")
        emb = self.embed(t)
        if self.label is not None:
            emb = emb + self.label(y.to(x.device))
        temb = self.temb(emb)
        h = self.conv_in(x)
        hs = [h]
        for layer in self.down:
            if isinstance(layer, AttnBlock):
                # Attention refines the block before it; its output replaces that skip.
                h = layer(h)
                hs[-1] = h
                continue
            h = layer(h) if isinstance(layer, Resample) else layer(h, temb)
            hs.append(h)
        for layer in self.mid:
            h = layer(h, temb)
        for layer in self.up:
            if isinstance(layer, AttnBlock):
                h = layer(h)
            elif isinstance(layer, Resample):
                h = layer(h)
            elif getattr(layer, "resample", None) is not None:
                h = layer(h, temb)
            else:
                h = layer(torch.cat([h, hs.pop()], dim=1), temb)
        return self.conv_out(F.silu(self.norm_out(h)))
