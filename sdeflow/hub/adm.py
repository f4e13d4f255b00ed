"""guided-diffusion's checkpoints (Dhariwal & Nichol 2021, openai/guided-diffusion), read as data into sdeflow's
DhariwalUNet.

A `64x64_diffusion.pt` (and the 128, 256, 512 and LSUN models) is a bare state dict of ADM's
`UNetModel`: modules numbered in `input_blocks`, `middle_block` and `output_blocks`, in the order the
forward pass calls them, which is the order of DhariwalUNet's blocks (EDM's layout of the same
network), so one walk over our network matches the two (`layout`). The model predicts the noise of
its discrete-time schedule at integer timesteps, plus its learned variances (ignored here: every
sdeflow solver needs only the noise). Loaded strictly: every key used, every shape equal.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch

from sdeflow.core.checkpoint import CheckpointError, read_weights_only
from sdeflow.hub.discrete_time import DiscreteTimeModel
from sdeflow.hub.edm import LabelledNet
from sdeflow.hub.format import CheckpointFormat, Loaded
from sdeflow.hub.strict import AFFINE, load_strict
from sdeflow.nets.song_unet import Conv2d, DhariwalUNet
from sdeflow.score.function import EpsPrediction, ScoreFunction

BLOCK = {
    "in_layers.0.weight": "norm0.weight",
    "in_layers.0.bias": "norm0.bias",
    "in_layers.2.weight": "conv0.weight",
    "in_layers.2.bias": "conv0.bias",
    "emb_layers.1.weight": "affine.weight",
    "emb_layers.1.bias": "affine.bias",
    "out_layers.0.weight": "norm1.weight",
    "out_layers.0.bias": "norm1.bias",
    "out_layers.3.weight": "conv1.weight",
    "out_layers.3.bias": "conv1.bias",
    "skip_connection.weight": "skip.weight",
    "skip_connection.bias": "skip.bias",
}
ATTENTION = {
    "norm.weight": "norm2.weight",
    "norm.bias": "norm2.bias",
    "qkv.weight": "qkv.weight",
    "qkv.bias": "qkv.bias",
    "proj_out.weight": "proj.weight",
    "proj_out.bias": "proj.bias",
}


def layout(net: DhariwalUNet) -> list[tuple[str, dict, str]]:
    """ADM's modules in state-dict order as (its prefix, its names -> ours, our prefix)."""
    units = [("time_embed.0", AFFINE, "map_layer0"), ("time_embed.2", AFFINE, "map_layer1")]
    if net.map_label is not None:
        units.append(("label_emb", {"weight": "weight"}, "map_label"))
    k = 0
    for name, module in net.enc.items():
        if isinstance(module, Conv2d):
            units.append(("input_blocks.0.0", AFFINE, f"enc.{name}"))
        else:
            units.append((f"input_blocks.{k}.0", BLOCK, f"enc.{name}"))
            if module.heads:
                units.append((f"input_blocks.{k}.1", ATTENTION, f"enc.{name}"))
        k += 1
    k, sub = -1, 0
    for name, module in net.dec.items():
        if name.endswith(("_in0", "_in1")):  # the middle block: ResBlock, AttentionBlock, ResBlock
            units.append((f"middle_block.{0 if name.endswith('_in0') else 2}", BLOCK, f"dec.{name}"))
            if module.heads:
                units.append(("middle_block.1", ATTENTION, f"dec.{name}"))
        elif name.endswith("_up"):  # ADM's upsampling block closes the output block before it
            units.append((f"output_blocks.{k}.{sub}", BLOCK, f"dec.{name}"))
        else:
            k += 1
            units.append((f"output_blocks.{k}.0", BLOCK, f"dec.{name}"))
            sub = 1
            if module.heads:
                units.append((f"output_blocks.{k}.1", ATTENTION, f"dec.{name}"))
                sub = 2
    units += [("out.0", AFFINE, "out_norm"), ("out.2", AFFINE, "out_conv")]
    return units


def _qkv_order(channels: int, heads: int, new_order: bool) -> torch.Tensor:
    """For each of our qkv channels (head h, channel c, q/k/v j at h 3ch + 3c + j), the ADM channel it holds.

    ADM's legacy attention splits heads first (h 3ch + j ch + c); `use_new_attention_order` splits q, k, v first
    (j C + h ch + c).
    """
    ch = channels // heads
    h, c, j = torch.meshgrid(torch.arange(heads), torch.arange(ch), torch.arange(3), indexing="ij")
    source = j * channels + h * ch + c if new_order else h * 3 * ch + j * ch + c
    return source.flatten()


def _converters(net: DhariwalUNet, new_order: bool):
    """(ours from theirs, theirs from ours) for each parameter whose layout differs: 1-D convolutions, the label table,
    qkv."""
    to_ours, to_theirs = {}, {}
    for prefix, names, mine in layout(net):
        module = net.get_submodule(mine)
        if names is ATTENTION:
            order = _qkv_order(module.proj.c_out, module.heads, new_order)
            inverse = torch.argsort(order)
            to_ours[f"{mine}.qkv.weight"] = lambda w, o=order: w[o][..., None]
            to_ours[f"{mine}.qkv.bias"] = lambda b, o=order: b[o]
            to_ours[f"{mine}.proj.weight"] = lambda w: w[..., None]
            to_theirs[f"{mine}.qkv.weight"] = lambda w, i=inverse: w[i][..., 0]
            to_theirs[f"{mine}.qkv.bias"] = lambda b, i=inverse: b[i]
            to_theirs[f"{mine}.proj.weight"] = lambda w: w[..., 0]
        elif mine == "map_label":
            to_ours["map_label.weight"] = to_theirs["map_label.weight"] = lambda w: (
                w.T
            )  # nn.Embedding's table is (classes, emb)
    return to_ours, to_theirs


def from_adm(
    state: dict, net: DhariwalUNet, new_attention_order: bool = False, where: str = "checkpoint"
) -> dict[str, torch.Tensor]:
    """Our state dict for `net` from a guided-diffusion `UNetModel` state dict; `CheckpointError` names what does not
    fit."""
    if any(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    to_ours, _ = _converters(net, new_attention_order)
    ours, used = {}, set()
    for prefix, names, mine in layout(net):
        for theirs, name in names.items():
            key = f"{prefix}.{theirs}"
            if key in state:
                value, convert = state[key], to_ours.get(f"{mine}.{name}")
                try:
                    value = convert(value) if convert else value
                except (IndexError, RuntimeError):
                    pass  # a tensor of another shape than the config's: load_strict names it
                ours[f"{mine}.{name}"] = value
                used.add(key)
    unused = sorted(set(state) - used)
    if unused:
        raise CheckpointError(
            f"{where}: {len(unused)} tensors the config's network does not have ({', '.join(unused[:3])}"
            f"{' ...' if len(unused) > 3 else ''}): it was trained with another config"
        )
    # Resampling filters are fixed by the architecture; ADM does not store them.
    ours |= {k: v for k, v in net.state_dict().items() if k.endswith("resample_filter")}
    return ours


def to_adm(net: DhariwalUNet, new_attention_order: bool = False) -> OrderedDict:
    """guided-diffusion's state dict of our network, in its order: the inverse of `from_adm`."""
    ours = {k: v.detach() for k, v in net.state_dict().items()}
    _, to_theirs = _converters(net, new_attention_order)
    state = OrderedDict()
    for prefix, names, mine in layout(net):
        for theirs, name in names.items():
            if f"{mine}.{name}" in ours:
                state[f"{prefix}.{theirs}"] = to_theirs.get(f"{mine}.{name}", lambda v: v)(
                    ours[f"{mine}.{name}"]
                ).clone()
    return state


class ADMFormat(CheckpointFormat):
    """guided-diffusion's model files (`checkpoint_format=adm_<model>` in the apps) and the flags each was trained with.

    guided-diffusion publishes one set of weights per model, so `use_ema` chooses nothing.

    Args:
        network: `DhariwalUNet` arguments equivalent to the model's flags (out_channels 6: eps and the learned
            variances).
        sde: its discrete VP schedule (`DiscreteVPSDE` of `cosine_betas` or `linear_betas`), timestep k at
            t = (k + 1) / N.
        new_attention_order: the model's `use_new_attention_order` (the 64 x 64 model's), which orders its qkv channels.
        name: the model, for messages and the run record.
    """

    def __init__(self, network: dict, sde, new_attention_order: bool = False, name: str = "adm"):
        self.network, self.sde, self.new_attention_order, self.name = (
            dict(network),
            sde,
            bool(new_attention_order),
            name,
        )

    def load(self, path, use_ema: bool = True, device="cpu") -> Loaded:
        state = read_weights_only(path)
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise CheckpointError(f"{path} is not a guided-diffusion model file (a state dict of tensors)")
        net = DhariwalUNet(**self.network)
        where = f"{path} (guided-diffusion {self.name})"
        load_strict(net, from_adm(state, net, self.new_attention_order, where), where)
        channels, size = int(self.network["in_channels"]), int(self.network["img_resolution"])
        model = DiscreteTimeModel(LabelledNet(net, channels), self.sde.N).to(device).eval().requires_grad_(False)
        return Loaded(
            ScoreFunction(model, self.sde, EpsPrediction()),
            self.sde,
            (channels, size, size),
            f"guided-diffusion:{self.name}:{Path(path)}",
            label_dim=net.label_dim,
        )


ADMCheckpoint = ADMFormat  # the former name (sdeflow.hub.ADMCheckpoint in older configs and code)
