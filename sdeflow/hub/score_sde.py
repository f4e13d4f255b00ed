"""score_sde's PyTorch checkpoints (Song et al. 2021, yang-song/score_sde_pytorch), read as data into sdeflow's
SongUNet.

A `checkpoint_*.pth` holds `model` (the network's state dict, keys prefixed `module.` by DataParallel),
`ema` (`shadow_params`: the averaged weights as a bare list, in the order of the network's trainable
parameters), `optimizer` and `step`. It records no config: the published configs are in
`conf/checkpoint_format/score_sde/`. Its NCSN++ and DDPM++ are EDM's `SongUNet` with other names:
score_sde numbers its modules (`all_modules.17.Conv_0.weight`) in the order it calls them, which is
the order of SongUNet's blocks, so the two layouts are matched by one walk over our network (`layout`).
The import is strict: every key used, every shape equal, the EMA list as long as the trainable
parameters, and the stored noise levels equal to the config's (the one thing that tells apart
configs of equal shapes, such as LSUN church and FFHQ-256).
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from pathlib import Path

import torch

from sdeflow.core.checkpoint import CheckpointError, read_weights_only, save_torch
from sdeflow.hub.edm import LabelledNet
from sdeflow.hub.format import CheckpointFormat, Loaded
from sdeflow.hub.scaling import ScaledNoise
from sdeflow.hub.strict import AFFINE, load_strict
from sdeflow.nets.song_unet import Conv2d, FourierNoise, GroupNorm, SongUNet, UNetBlock
from sdeflow.score.function import EpsPrediction, ScoreFunction

# score_sde's parameter names inside each kind of module, in its state-dict order, and ours.
KINDS = {
    "fourier": {"W": "freqs"},  # GaussianFourierProjection; not trained, so not in the EMA list
    "linear": AFFINE,
    "conv": AFFINE,
    "norm": AFFINE,
    "pyramid": {
        "Conv2d_0.weight": "weight",
        "Conv2d_0.bias": "bias",
    },  # Downsample(with_conv=True): the residual input path
    "combine": {"Conv_0.weight": "weight", "Conv_0.bias": "bias"},  # Combine(method="sum"): the input-skip path
    "block": {
        "GroupNorm_0.weight": "norm0.weight",
        "GroupNorm_0.bias": "norm0.bias",
        "Conv_0.weight": "conv0.weight",
        "Conv_0.bias": "conv0.bias",
        "Dense_0.weight": "affine.weight",
        "Dense_0.bias": "affine.bias",
        "GroupNorm_1.weight": "norm1.weight",
        "GroupNorm_1.bias": "norm1.bias",
        "Conv_1.weight": "conv1.weight",
        "Conv_1.bias": "conv1.bias",
        "Conv_2.weight": "skip.weight",
        "Conv_2.bias": "skip.bias",
    },
    # AttnBlockpp: NIN_0, 1, 2 (q, k, v) and NIN_3 (output) are 1x1 maps stored as (in, out) matrices.
    "attention": {
        "GroupNorm_0.weight": "norm2.weight",
        "GroupNorm_0.bias": "norm2.bias",
        "NIN_0.W": None,
        "NIN_0.b": None,
        "NIN_1.W": None,
        "NIN_1.b": None,
        "NIN_2.W": None,
        "NIN_2.b": None,
        "NIN_3.W": "proj.weight",
        "NIN_3.b": "proj.bias",
    },
}
NOT_TRAINED = {"fourier": {"W"}}


def layout(net: SongUNet) -> list[tuple[str, str]]:
    """score_sde's `all_modules`, in order, as (kind, the prefix of our matching module).

    score_sde appends its modules in the order the forward pass calls them; SongUNet's blocks are
    registered in that same order, with a block's attention right after it, and the resampling
    filters of the skip paths (no parameters) absent from both.
    """
    units = [("fourier", "map_noise")] if isinstance(net.map_noise, FourierNoise) else []
    units += [("linear", "map_layer0"), ("linear", "map_layer1")]
    for part in ("enc", "dec"):
        for name, module in getattr(net, part).items():
            prefix = f"{part}.{name}"
            if isinstance(module, UNetBlock):
                units.append(("block", prefix))
                if module.heads:
                    units.append(("attention", prefix))
            elif isinstance(module, GroupNorm):
                units.append(("norm", prefix))
            elif isinstance(module, Conv2d) and module.weight is not None:
                units.append(
                    (
                        "pyramid"
                        if name.endswith("aux_residual")
                        else "combine"
                        if name.endswith("aux_skip")
                        else "conv",
                        prefix,
                    )
                )
    return units


def _convert(kind: str, params: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """One score_sde module's tensors under our names."""
    out = {f"{prefix}.{ours}": v for name, v in params.items() if (ours := KINDS[kind].get(name))}
    if kind == "attention":
        # Our qkv interleaves channels (c0 q, c0 k, c0 v, c1 q, ...) as EDM's reshape to (heads, c, 3, pixels) reads
        # them.
        out[f"{prefix}.qkv.weight"] = torch.stack([params[f"NIN_{j}.W"].T for j in range(3)], dim=1).flatten(0, 1)[
            ..., None, None
        ]
        out[f"{prefix}.qkv.bias"] = torch.stack([params[f"NIN_{j}.b"] for j in range(3)], dim=1).flatten()
        out[f"{prefix}.proj.weight"] = params["NIN_3.W"].T[..., None, None]
    return out


def _export(kind: str, ours: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """One of our modules' tensors under score_sde's names, in score_sde's order (which its EMA list follows)."""
    if kind == "attention":
        c = ours[f"{prefix}.proj.weight"].shape[0]
        w = ours[f"{prefix}.qkv.weight"].reshape(c, 3, c)
        b = ours[f"{prefix}.qkv.bias"].reshape(c, 3)
        nin = {f"NIN_{j}.W": w[:, j].T.contiguous() for j in range(3)} | {
            f"NIN_{j}.b": b[:, j].contiguous() for j in range(3)
        }
        nin["NIN_3.W"], nin["NIN_3.b"] = (
            ours[f"{prefix}.proj.weight"][:, :, 0, 0].T.contiguous(),
            ours[f"{prefix}.proj.bias"],
        )
        nin["GroupNorm_0.weight"], nin["GroupNorm_0.bias"] = (
            ours[f"{prefix}.norm2.weight"],
            ours[f"{prefix}.norm2.bias"],
        )
        return {name: nin[name] for name in KINDS[kind]}
    return {name: ours[f"{prefix}.{mine}"] for name, mine in KINDS[kind].items() if f"{prefix}.{mine}" in ours}


def noise_levels(sigma_min: float, sigma_max: float, n: int) -> torch.Tensor:
    """score_sde's `sigmas` buffer: n levels from sigma_max down to sigma_min, geometrically (float64, as it stores
    them)."""
    return torch.linspace(math.log(sigma_max), math.log(sigma_min), n, dtype=torch.float64).exp()


def from_score_sde(
    model_state: dict, net: SongUNet, shadow=None, sigmas=None, where: str = "checkpoint"
) -> dict[str, torch.Tensor]:
    """Our state dict for `net` from score_sde's `model` state dict, with the EMA's `shadow_params` in place of the
    trained parameters when given; raises `CheckpointError` naming the first thing that does not fit."""
    prefixed = [k.startswith("module.") for k in model_state]
    if any(prefixed) and not all(prefixed):
        raise CheckpointError(f"{where}: some keys of 'model' have DataParallel's 'module.' prefix and some do not")
    state = OrderedDict((k.removeprefix("module."), v) for k, v in model_state.items())
    units = layout(net)
    modules: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        match = re.fullmatch(r"all_modules\.(\d+)\.(.+)", key)
        if match:
            modules.setdefault(int(match[1]), {})[match[2]] = value
        elif key != "sigmas":
            raise CheckpointError(
                f"{where}: unexpected key {key!r}: not part of score_sde's NCSNpp (all_modules.N.*, sigmas)"
            )
    if sorted(modules) != list(range(len(units))):
        raise CheckpointError(
            f"{where}: the network has {len(modules)} numbered modules; the config describes {len(units)} "
            "(another config: a deep model has 8 blocks per resolution, the others 4)"
        )
    for i, (kind, prefix) in enumerate(units):
        unused = set(modules[i]) - set(KINDS[kind])
        if unused:
            raise CheckpointError(
                f"{where}: all_modules.{i} ({kind} at our {prefix}) has unexpected tensors {sorted(unused)}: "
                "the config builds another network"
            )
    if "sigmas" not in state:
        raise CheckpointError(f"{where}: no 'sigmas' buffer: not a score_sde NCSNpp state dict")
    if sigmas is not None:
        stored = state["sigmas"].double().cpu()
        if stored.shape != sigmas.shape or not torch.allclose(stored, sigmas, rtol=1e-5, atol=0):
            raise CheckpointError(
                f"{where}: its noise levels ({stored.shape[0]} from {float(stored[0]):g} to {float(stored[-1]):g}) are "
                f"not this config's ({sigmas.shape[0]} from {float(sigmas[0]):g} to {float(sigmas[-1]):g}): "
                "it was trained with another config"
            )
    if shadow is not None:
        trained = [
            f"all_modules.{i}.{name}"
            for i, (kind, _) in enumerate(units)
            for name in modules[i]
            if name not in NOT_TRAINED.get(kind, ())
        ]
        if len(shadow) != len(trained):
            raise CheckpointError(
                f"{where}: its EMA holds {len(shadow)} tensors for the network's {len(trained)} trained parameters"
            )
        for key, value in zip(trained, shadow):
            if tuple(value.shape) != tuple(state[key].shape):
                raise CheckpointError(
                    f"{where}: EMA tensor for {key} has shape {tuple(value.shape)}, "
                    f"the network's {tuple(state[key].shape)}"
                )
            i, name = key.split(".", 2)[1:]
            modules[int(i)][name] = value
    # The resampling filters are fixed by the config (score_sde keeps them as plain attributes, not in the file).
    ours = {k: v for k, v in net.state_dict().items() if k.endswith("resample_filter")}
    for i, (kind, prefix) in enumerate(units):
        try:
            ours |= _convert(kind, modules[i], prefix)
        except KeyError as e:
            raise CheckpointError(
                f"{where}: all_modules.{i} ({kind} at our {prefix}) lacks {e.args[0]}: "
                "the config builds another network"
            ) from e
    return ours


def to_score_sde(net: SongUNet, sigmas: torch.Tensor) -> OrderedDict:
    """score_sde's `model` state dict (with the `module.` prefix) of our network: the inverse of `from_score_sde`."""
    ours = {k: v.detach() for k, v in net.state_dict().items()}
    state = OrderedDict([("module.sigmas", sigmas.clone())])
    for i, (kind, prefix) in enumerate(layout(net)):
        state.update((f"module.all_modules.{i}.{name}", v.clone()) for name, v in _export(kind, ours, prefix).items())
    return state


def save_score_sde(path, net: SongUNet, sigmas: torch.Tensor, step: int = 0, ema_decay: float = 0.9999) -> Path:
    """A `checkpoint_*.pth` in score_sde's layout with `net`'s weights as both model and EMA (written atomically).

    Its optimizer entry is an Adam state without moments, which score_sde's `restore_checkpoint` accepts.
    """
    model = OrderedDict((k, v.cpu()) for k, v in to_score_sde(net, sigmas).items())
    not_trained = {
        f"module.all_modules.{i}.{name}"
        for i, (kind, _) in enumerate(layout(net))
        for name in NOT_TRAINED.get(kind, ())
    }
    shadow = [v.clone() for k, v in model.items() if k != "module.sigmas" and k not in not_trained]
    optimizer = {
        "state": {},
        "param_groups": [
            {
                "lr": 2e-4,
                "betas": (0.9, 0.999),
                "eps": 1e-8,
                "weight_decay": 0,
                "amsgrad": False,
                "params": list(range(len(shadow) + len(not_trained))),
            }
        ],
    }
    state = {
        "optimizer": optimizer,
        "model": model,
        "ema": {"decay": ema_decay, "num_updates": step, "shadow_params": shadow},
        "step": step,
    }
    return save_torch(path, state)


class ScoreSdeFormat(CheckpointFormat):
    """score_sde's `checkpoint_*.pth` (`checkpoint_format=score_sde_<config>` in the apps) and its training config.

    EMA weights unless `use_ema=False`; `Loaded.details["step"]` records the checkpoint's training step.

    Args:
        network: `SongUNet` arguments equivalent to the score_sde config.
        scaling: how the network reads its input: `TimeLabels(sde)` for VP and sub-VP, `LogSigmaLabels()` for VE.
        sde: the SDE it was trained on, in sdeflow's units (data in [-1, 1]), which is the default to sample on.
        noise_levels: score_sde's (sigma_min, sigma_max, num_scales), as stored in the checkpoint's `sigmas`.
        name: the score_sde config, for messages and the run record.
    """

    def __init__(self, network: dict, scaling, sde, noise_levels: tuple = (0.01, 50.0, 1000), name: str = "score_sde"):
        self.network, self.sde, self.name = dict(network), sde, name
        self.scaling, self.noise_levels = scaling, tuple(noise_levels)

    def load(self, path, use_ema: bool = True, device="cpu") -> Loaded:
        state = read_weights_only(path)
        if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
            raise CheckpointError(f"{path} is not a score_sde checkpoint (no 'model' state dict)")
        shadow = None
        if use_ema:
            ema = state.get("ema")
            if not isinstance(ema, dict) or not isinstance(ema.get("shadow_params"), (list, tuple)):
                raise CheckpointError(
                    f"{path}: no EMA weights ('ema' with 'shadow_params'); use_ema=false takes the raw weights"
                )
            shadow = ema["shadow_params"]
        net = SongUNet(**self.network)
        sigma_min, sigma_max, n = self.noise_levels
        where = f"{path} (score_sde {self.name})"
        load_strict(
            net, from_score_sde(state["model"], net, shadow, noise_levels(sigma_min, sigma_max, int(n)), where), where
        )
        model = ScaledNoise(LabelledNet(net), self.sde, self.scaling).to(device).eval().requires_grad_(False)
        channels, size = int(self.network["in_channels"]), int(self.network["img_resolution"])
        return Loaded(
            ScoreFunction(model, self.sde, EpsPrediction()),
            self.sde,
            (channels, size, size),
            f"score_sde:{self.name}:{Path(path)}",
            label_dim=net.label_dim,
            details={"step": state.get("step")},
        )


ScoreSdeCheckpoint = ScoreSdeFormat  # the former name (sdeflow.hub.ScoreSdeCheckpoint in older configs and code)
