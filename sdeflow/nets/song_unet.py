"""EDM's SongUNet and DhariwalUNet (Karras et al. 2022): DDPM++, NCSN++ and ADM in the parameter layout of EDM's
pickles.

Written here from the architecture's description so that EDM's published networks, and the score_sde
baselines EDM converted to this layout, load strictly into our own definition (`sdeflow.hub.edm`).
Module and parameter names follow EDM's (`enc.32x32_block0.conv0.weight`, ...); they are the
file format. Called as F(x, c_noise, class_labels); the preconditioning around it is `EDMDenoiser`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class Linear(nn.Module):
    def __init__(self, c_in: int, c_out: int, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(c_out, c_in))
        self.bias = nn.Parameter(torch.zeros(c_out)) if bias else None
        nn.init.xavier_uniform_(self.weight)

    def forward(self, x):
        return F.linear(x, self.weight.to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))


class Conv2d(nn.Module):
    """A k x k convolution (k = 0: none) after optional 2x resampling with a separable FIR filter.

    `fused`: the residual encoder's layout, which convolves before downsampling (padding both at once).
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel: int,
        bias: bool = True,
        up: bool = False,
        down: bool = False,
        resample_filter=(1, 1),
        fused: bool = False,
    ):
        super().__init__()
        self.c_in, self.c_out, self.up, self.down, self.fused = c_in, c_out, up, down, fused
        self.weight = nn.Parameter(torch.empty(c_out, c_in, kernel, kernel)) if kernel else None
        self.bias = nn.Parameter(torch.zeros(c_out)) if kernel and bias else None
        if self.weight is not None:
            nn.init.xavier_uniform_(self.weight)
        f = torch.as_tensor(resample_filter, dtype=torch.float32)
        self.register_buffer("resample_filter", (torch.outer(f, f) / f.sum() ** 2)[None, None] if up or down else None)

    def forward(self, x):
        w = None if self.weight is None else self.weight.to(x.dtype)
        f = None if self.resample_filter is None else self.resample_filter.to(x.dtype)
        w_pad = 0 if w is None else w.shape[-1] // 2
        f_pad = 0 if f is None else (f.shape[-1] - 1) // 2
        if self.fused and self.up and w is not None:
            x = F.conv_transpose2d(
                x, (4 * f).tile(self.c_in, 1, 1, 1), groups=self.c_in, stride=2, padding=w_pad + f_pad
            )
            x = F.conv2d(x, w)
        elif self.fused and self.down and w is not None:
            x = F.conv2d(x, w, padding=w_pad + f_pad)
            x = F.conv2d(x, f.tile(self.c_out, 1, 1, 1), groups=self.c_out, stride=2)
        else:
            if self.up:
                x = F.conv_transpose2d(x, (4 * f).tile(self.c_in, 1, 1, 1), groups=self.c_in, stride=2, padding=f_pad)
            if self.down:
                x = F.conv2d(x, f.tile(self.c_in, 1, 1, 1), groups=self.c_in, stride=2, padding=f_pad)
            if w is not None:
                x = F.conv2d(x, w, padding=w_pad)
        return x if self.bias is None else x + self.bias.to(x.dtype)[None, :, None, None]


class GroupNorm(nn.Module):
    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.groups, self.eps = min(32, channels // 4), eps
        self.weight, self.bias = nn.Parameter(torch.ones(channels)), nn.Parameter(torch.zeros(channels))

    def forward(self, x):
        return F.group_norm(x, self.groups, self.weight.to(x.dtype), self.bias.to(x.dtype), self.eps)


class PositionalNoise(nn.Module):
    """[sin, cos] of c_noise times 10000^(-i / (half - 1)), i = 0 .. half - 1 (DDPM++'s embedding, with the endpoint);
    ADM's divides by half instead (`endpoint=False`) and keeps [cos, sin]."""

    def __init__(self, channels: int, endpoint: bool = True):
        super().__init__()
        self.half, self.endpoint = channels // 2, endpoint

    def forward(self, c_noise, cos_first: bool = False):
        steps = torch.arange(self.half, dtype=torch.float32, device=c_noise.device) / (
            self.half - (1 if self.endpoint else 0)
        )
        x = torch.outer(c_noise, ((1 / 10000) ** steps).to(c_noise.dtype))
        return torch.cat([x.cos(), x.sin()] if cos_first else [x.sin(), x.cos()], dim=1)


class FourierNoise(nn.Module):
    """[sin, cos] of 2 pi c_noise times random frequencies of scale 16 (NCSN++'s embedding)."""

    def __init__(self, channels: int):
        super().__init__()
        self.register_buffer("freqs", torch.randn(channels // 2) * 16)

    def forward(self, c_noise):
        x = torch.outer(c_noise, (2 * math.pi * self.freqs).to(c_noise.dtype))
        return torch.cat([x.sin(), x.cos()], dim=1)


class UNetBlock(nn.Module):
    """Residual block with the time embedding, optional 2x resampling and optional multi-head attention.

    SongUNet's blocks add the embedding and scale sums by sqrt(1/2); DhariwalUNet's (ADM) use it as a
    scale and shift of the normalised activations (`adaptive_scale`), sum without scaling, and give
    attention one head per 64 channels.
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        emb: int,
        up: bool = False,
        down: bool = False,
        attention: bool = False,
        dropout: float = 0.0,
        resample_filter=(1, 1),
        heads: int = 1,
        adaptive_scale: bool = False,
        skip_scale: float = math.sqrt(0.5),
        eps: float = 1e-6,
        resample_proj: bool = True,
    ):
        super().__init__()
        self.in_channels, self.dropout, self.adaptive_scale, self.skip_scale = c_in, dropout, adaptive_scale, skip_scale
        self.norm0 = GroupNorm(c_in, eps=eps)
        self.conv0 = Conv2d(c_in, c_out, 3, up=up, down=down, resample_filter=resample_filter)
        self.affine = Linear(emb, c_out * (2 if adaptive_scale else 1))
        self.norm1 = GroupNorm(c_out, eps=eps)
        self.conv1 = Conv2d(c_out, c_out, 3)
        self.skip = None
        if c_out != c_in or up or down:
            kernel = 1 if resample_proj or c_out != c_in else 0  # ADM resamples its skip path without a projection
            self.skip = Conv2d(c_in, c_out, kernel, up=up, down=down, resample_filter=resample_filter)
        self.heads = heads if attention else 0
        if self.heads:
            self.norm2 = GroupNorm(c_out, eps=eps)
            self.qkv = Conv2d(c_out, 3 * c_out, 1)
            self.proj = Conv2d(c_out, c_out, 1)

    def forward(self, x, emb):
        h = self.conv0(F.silu(self.norm0(x)))
        params = self.affine(emb)[:, :, None, None].to(h.dtype)
        if self.adaptive_scale:
            scale, shift = params.chunk(2, dim=1)
            h = F.silu(torch.addcmul(shift, self.norm1(h), scale + 1))
        else:
            h = F.silu(self.norm1(h + params))
        h = self.conv1(F.dropout(h, p=self.dropout, training=self.training))
        x = (h + (x if self.skip is None else self.skip(x))) * self.skip_scale
        if self.heads:
            n, c, hh, ww = x.shape
            q, k, v = self.qkv(self.norm2(x)).reshape(n * self.heads, c // self.heads, 3, hh * ww).unbind(2)
            w = torch.einsum("ncq,nck->nqk", q.float(), k.float() / math.sqrt(q.shape[1])).softmax(dim=2).to(q.dtype)
            x = (self.proj(torch.einsum("nqk,nck->ncq", w, v).reshape(n, c, hh, ww)) + x) * self.skip_scale
        return x


class SongUNet(nn.Module):
    """DDPM++ (`embedding_type="positional"`, standard encoder, filter [1, 1]) or NCSN++ ("fourier", "residual" encoder,
    filter [1, 3, 3, 1]), with EDM's argument names, so a pickle's recorded arguments build it directly."""

    def __init__(
        self,
        img_resolution: int,
        in_channels: int,
        out_channels: int,
        label_dim: int = 0,
        augment_dim: int = 0,
        model_channels: int = 128,
        channel_mult=(1, 2, 2, 2),
        channel_mult_emb: int = 4,
        num_blocks: int = 4,
        attn_resolutions=(16,),
        dropout: float = 0.10,
        label_dropout: float = 0.0,
        embedding_type: str = "positional",
        channel_mult_noise: int = 1,
        encoder_type: str = "standard",
        decoder_type: str = "standard",
        resample_filter=(1, 1),
    ):
        super().__init__()
        if (
            embedding_type not in ("positional", "fourier")
            or encoder_type not in ("standard", "skip", "residual")
            or decoder_type not in ("standard", "skip")
        ):
            raise ValueError(
                f"SongUNet: unknown embedding_type {embedding_type!r}, encoder_type {encoder_type!r} or "
                f"decoder_type {decoder_type!r}"
            )
        self.label_dim, self.in_channels = int(label_dim), in_channels
        emb, noise = model_channels * channel_mult_emb, model_channels * channel_mult_noise
        self.map_noise = FourierNoise(noise) if embedding_type == "fourier" else PositionalNoise(noise)
        self.map_label = Linear(label_dim, noise) if label_dim else None
        self.map_augment = Linear(augment_dim, noise, bias=False) if augment_dim else None
        self.map_layer0, self.map_layer1 = Linear(noise, emb), Linear(emb, emb)
        block = dict(emb=emb, dropout=dropout, resample_filter=resample_filter)

        self.enc = nn.ModuleDict()
        c, aux = in_channels, in_channels
        for level, mult in enumerate(channel_mult):
            res = img_resolution >> level
            if level == 0:
                self.enc[f"{res}x{res}_conv"] = Conv2d(c, model_channels, 3)
                c = model_channels
            else:
                self.enc[f"{res}x{res}_down"] = UNetBlock(c, c, down=True, **block)
                if encoder_type == "skip":
                    self.enc[f"{res}x{res}_aux_down"] = Conv2d(aux, aux, 0, down=True, resample_filter=resample_filter)
                    self.enc[f"{res}x{res}_aux_skip"] = Conv2d(aux, c, 1)
                if encoder_type == "residual":
                    self.enc[f"{res}x{res}_aux_residual"] = Conv2d(
                        aux, c, 3, down=True, resample_filter=resample_filter, fused=True
                    )
                    aux = c
            for i in range(num_blocks):
                self.enc[f"{res}x{res}_block{i}"] = UNetBlock(
                    c, model_channels * mult, attention=res in attn_resolutions, **block
                )
                c = model_channels * mult
        skips = [
            m.c_out if isinstance(m, Conv2d) else m.conv1.c_out for name, m in self.enc.items() if "aux" not in name
        ]

        self.dec = nn.ModuleDict()
        for level, mult in reversed(list(enumerate(channel_mult))):
            res = img_resolution >> level
            if level == len(channel_mult) - 1:
                self.dec[f"{res}x{res}_in0"] = UNetBlock(c, c, attention=True, **block)
                self.dec[f"{res}x{res}_in1"] = UNetBlock(c, c, **block)
            else:
                self.dec[f"{res}x{res}_up"] = UNetBlock(c, c, up=True, **block)
            for i in range(num_blocks + 1):
                self.dec[f"{res}x{res}_block{i}"] = UNetBlock(
                    c + skips.pop(),
                    model_channels * mult,
                    attention=i == num_blocks and res in attn_resolutions,
                    **block,
                )
                c = model_channels * mult
            if decoder_type == "skip" or level == 0:
                if decoder_type == "skip" and level < len(channel_mult) - 1:
                    self.dec[f"{res}x{res}_aux_up"] = Conv2d(
                        out_channels, out_channels, 0, up=True, resample_filter=resample_filter
                    )
                self.dec[f"{res}x{res}_aux_norm"] = GroupNorm(c, eps=1e-6)
                self.dec[f"{res}x{res}_aux_conv"] = Conv2d(c, out_channels, 3)

    def forward(self, x, c_noise, class_labels=None):
        emb = self.map_noise(c_noise)
        if self.map_label is not None:
            emb = emb + self.map_label(class_labels * math.sqrt(self.label_dim))
        emb = F.silu(self.map_layer1(F.silu(self.map_layer0(emb))))
        skips, aux = [], x
        for name, layer in self.enc.items():
            if "aux_down" in name:
                aux = layer(aux)
            elif "aux_skip" in name:
                x = skips[-1] = x + layer(aux)
            elif "aux_residual" in name:
                x = skips[-1] = aux = (x + layer(aux)) * math.sqrt(0.5)
            else:
                x = layer(x, emb) if isinstance(layer, UNetBlock) else layer(x)
                skips.append(x)
        out, tmp = None, None
        for name, layer in self.dec.items():
            if "aux_up" in name:
                out = layer(out)
            elif "aux_norm" in name:
                tmp = layer(x)
            elif "aux_conv" in name:
                tmp = layer(F.silu(tmp))
                out = tmp if out is None else tmp + out
            else:
                if x.shape[1] != layer.in_channels:
                    x = torch.cat([x, skips.pop()], dim=1)
                x = layer(x, emb)
        return out


class DhariwalUNet(nn.Module):
    """ADM (Dhariwal & Nichol 2021) with EDM's argument and parameter names: EDM's ImageNet networks.

    `num_heads` (> 0: that many attention heads) and `channels_per_head` (otherwise; EDM's and most of ADM's
    models use 64) are guided-diffusion's `num_heads` and `num_head_channels`; a channel multiplier may be
    fractional, as in its 512 x 512 model.
    """

    def __init__(
        self,
        img_resolution: int,
        in_channels: int,
        out_channels: int,
        label_dim: int = 0,
        augment_dim: int = 0,
        model_channels: int = 192,
        channel_mult=(1, 2, 3, 4),
        channel_mult_emb: int = 4,
        num_blocks: int = 3,
        attn_resolutions=(32, 16, 8),
        dropout: float = 0.10,
        label_dropout: float = 0.0,
        num_heads: int = -1,
        channels_per_head: int = 64,
    ):
        super().__init__()
        self.label_dim, self.in_channels = int(label_dim), in_channels
        emb = model_channels * channel_mult_emb
        self.map_noise = PositionalNoise(model_channels, endpoint=False)
        self.map_augment = Linear(augment_dim, model_channels, bias=False) if augment_dim else None
        self.map_layer0, self.map_layer1 = Linear(model_channels, emb), Linear(emb, emb)
        self.map_label = Linear(label_dim, emb, bias=False) if label_dim else None

        def block(c_in, c_out, **kw):
            heads = num_heads if num_heads > 0 else c_out // channels_per_head
            return UNetBlock(
                c_in,
                c_out,
                emb,
                dropout=dropout,
                heads=heads,
                adaptive_scale=True,
                skip_scale=1.0,
                eps=1e-5,
                resample_proj=False,
                **kw,
            )

        self.enc = nn.ModuleDict()
        c = in_channels
        for level, mult in enumerate(channel_mult):
            res = img_resolution >> level
            if level == 0:
                self.enc[f"{res}x{res}_conv"] = Conv2d(c, int(model_channels * mult), 3)
                c = int(model_channels * mult)
            else:
                self.enc[f"{res}x{res}_down"] = block(c, c, down=True)
            for i in range(num_blocks):
                self.enc[f"{res}x{res}_block{i}"] = block(
                    c, int(model_channels * mult), attention=res in attn_resolutions
                )
                c = int(model_channels * mult)
        skips = [m.c_out if isinstance(m, Conv2d) else m.conv1.c_out for m in self.enc.values()]

        self.dec = nn.ModuleDict()
        for level, mult in reversed(list(enumerate(channel_mult))):
            res = img_resolution >> level
            if level == len(channel_mult) - 1:
                self.dec[f"{res}x{res}_in0"] = block(c, c, attention=True)
                self.dec[f"{res}x{res}_in1"] = block(c, c)
            else:
                self.dec[f"{res}x{res}_up"] = block(c, c, up=True)
            for i in range(num_blocks + 1):
                self.dec[f"{res}x{res}_block{i}"] = block(
                    c + skips.pop(), int(model_channels * mult), attention=res in attn_resolutions
                )
                c = int(model_channels * mult)
        self.out_norm = GroupNorm(c)
        self.out_conv = Conv2d(c, out_channels, 3)

    def forward(self, x, c_noise, class_labels=None):
        emb = F.silu(self.map_layer0(self.map_noise(c_noise, cos_first=True)))
        emb = self.map_layer1(emb)
        if self.map_label is not None:
            emb = emb + self.map_label(class_labels)
        emb = F.silu(emb)
        skips = []
        for layer in self.enc.values():
            x = layer(x, emb) if isinstance(layer, UNetBlock) else layer(x)
            skips.append(x)
        for layer in self.dec.values():
            if x.shape[1] != layer.in_channels:
                x = torch.cat([x, skips.pop()], dim=1)
            x = layer(x, emb)
        return self.out_conv(F.silu(self.out_norm(x)))
