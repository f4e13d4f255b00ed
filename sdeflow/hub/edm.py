"""EDM's network pickles (Karras et al. 2022), read as data into sdeflow's own `SongUNet` or `DhariwalUNet`.

EDM's pickles store each network as its constructor's arguments, its tensors and the source code of
its module, which `pickle.load` would execute. Here `safe_pickle` keeps the arguments and tensors and
runs nothing; the network is rebuilt from `sdeflow.nets.song_unet` and loaded strictly. The
preconditioning is that of the pickle's class: EDM's own, or the VP and VE forms of the score_sde
baselines that EDM converted to this layout (`baseline-cifar10-32x32-uncond-vp.pkl`, ...).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from sdeflow.checkpoint import CheckpointError, first_line
from sdeflow.hub.safe_pickle import Record, safe_load, tensors
from sdeflow.hub.strict import load_strict
from sdeflow.nets.embeddings import one_hot_labels
from sdeflow.nets.precond import EDMPrecond
from sdeflow.nets.song_unet import DhariwalUNet, SongUNet
from sdeflow.score import ScoreFunction, X0Prediction
from sdeflow.sde.edm import EDMSDE
from sdeflow.utils import append_dims

# The preconditioners' own arguments; the rest of a pickle's recorded arguments build the network.
PRECOND_ARGS = {"img_resolution", "img_channels", "label_dim", "use_fp16", "sigma_min", "sigma_max", "sigma_data", "model_type",
                "beta_d", "beta_min", "M", "epsilon_t"}


class LabelledNet(nn.Module):
    """EDM's network called the sdeflow way, `net(x, c_noise, y=labels)`: integer labels become EDM's one-hot vectors (-1: none)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net, self.label_dim = net, net.label_dim

    def forward(self, x, c_noise, y=None):
        onehot = None
        if self.label_dim:
            y = torch.full((len(x),), -1, device=x.device) if y is None else y.to(x.device)
            onehot = one_hot_labels(y, self.label_dim, x.dtype)
        return self.net(x, c_noise.to(x.dtype), onehot)


class ScaledDenoiser(nn.Module):
    """D(x~; sigma~) = x~ + c_out F(c_in x~, c_noise) in the scaled variables of any SDE (x~ = x / alpha, sigma~ = sigma / alpha).

    `c_out(sigma)`, `c_in(sigma)`, `c_noise(sigma)` are the baseline's: VP (c_out = -sigma, c_in = 1 / sqrt(1 + sigma^2),
    c_noise = (M - 1) t(sigma)) or VE (c_out = sigma, c_in = 1, c_noise = log(sigma / 2)). Read its output with X0Prediction.
    """

    def __init__(self, net: nn.Module, sde, c_out, c_in, c_noise):
        super().__init__()
        self.net, self.sde, self.c_out, self.c_in, self.c_noise = net, sde, c_out, c_in, c_noise
        self.label_dim = getattr(net, "label_dim", 0)

    def forward(self, x, t, **cond):
        alpha = self.sde.alpha(t)
        s = self.sde.sigma(t) / alpha
        x_scaled = x / append_dims(alpha, x.ndim)
        out = self.net(append_dims(self.c_in(s), x.ndim) * x_scaled, self.c_noise(s), **cond)
        return x_scaled + append_dims(self.c_out(s), x.ndim) * out


def _vp(kwargs):
    beta_d, beta_min, M = float(kwargs.get("beta_d", 19.9)), float(kwargs.get("beta_min", 0.1)), int(kwargs.get("M", 1000))

    def sigma_of(t):
        return math.sqrt(math.expm1(0.5 * beta_d * t**2 + beta_min * t))

    def t_of(s):
        return ((beta_min**2 + 2 * beta_d * torch.log1p(s**2)).sqrt() - beta_min) / beta_d

    scaling = dict(c_out=lambda s: -s, c_in=lambda s: 1 / (s**2 + 1).sqrt(), c_noise=lambda s: (M - 1) * t_of(s))
    return scaling, sigma_of(float(kwargs.get("epsilon_t", 1e-5))), sigma_of(1.0)


def _ve(kwargs):
    scaling = dict(c_out=lambda s: s, c_in=lambda s: torch.ones_like(s), c_noise=lambda s: (0.5 * s).log())
    return scaling, float(kwargs.get("sigma_min", 0.02)), float(kwargs.get("sigma_max", 100.0))


BASELINES = {"VPPrecond": _vp, "VEPrecond": _ve}
NETWORKS = {"SongUNet": SongUNet, "DhariwalUNet": DhariwalUNet}  # EDM's names for the architectures it pickles


def build_network(kwargs: dict, precond: str = "EDMPrecond", where: str = "an EDM pickle") -> nn.Module:
    """Our SongUNet or DhariwalUNet, built from the arguments a preconditioner of class `precond` was given."""
    # The preconditioners' defaults, when the pickle did not record one: EDM's own uses DhariwalUNet (ADM).
    model_type = kwargs.get("model_type", "DhariwalUNet" if precond == "EDMPrecond" else "SongUNet")
    if model_type not in NETWORKS:
        raise CheckpointError(f"{where}: its network is a {model_type}; sdeflow has EDM's {' and '.join(NETWORKS)}")
    try:
        channels = int(kwargs["img_channels"])
        return NETWORKS[model_type](img_resolution=int(kwargs["img_resolution"]), in_channels=channels, out_channels=channels,
                                    label_dim=int(kwargs.get("label_dim", 0)), **{k: v for k, v in kwargs.items() if k not in PRECOND_ARGS})
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{where}: its recorded arguments do not build a {model_type}: {first_line(e)}") from e


def load_edm(path, device="cpu", key: str = "ema"):
    """(score function, sde, info) of the network `key` of an EDM pickle, on `EDMSDE` over its noise range.

    EDM's own networks (`EDMPrecond`) sample on sigma in [0.002, 80], as in the paper; the VP and VE
    baselines on the range they were trained on. Any sdeflow SDE works: the denoiser reads
    sigma / alpha from the SDE it is given (`info["sde"]` records the default).
    """
    try:
        data = safe_load(path)
    except FileNotFoundError as e:
        raise CheckpointError(f"{path}: no such file") from e
    except Exception as e:  # a refused global, a damaged or cut file: one line, nothing run
        raise CheckpointError(f"{path}: refused as an EDM network pickle: {first_line(e)}") from e
    record = data.get(key) if isinstance(data, dict) else None
    if not isinstance(record, Record) or not isinstance(record.state, dict):
        raise CheckpointError(f"{path}: no network under {key!r} (an EDM pickle is a dict holding 'ema')")
    kwargs = dict(record.state.get("_init_kwargs") or {})
    args = tuple(record.state.get("_init_args") or ())
    for name, value in zip(("img_resolution", "img_channels"), args):
        kwargs.setdefault(name, value)
    if record.class_name != "EDMPrecond" and record.class_name not in BASELINES:
        raise CheckpointError(f"{path}: its network is a {record.class_name}; sdeflow reads EDMPrecond, VPPrecond and VEPrecond")
    net = build_network(kwargs, record.class_name, str(path))
    state = {k.removeprefix("model."): v for k, v in tensors(record).items()}
    load_strict(net, state, str(path))
    if record.class_name == "EDMPrecond":
        sde = EDMSDE(0.002, 80.0)
        model = EDMPrecond(LabelledNet(net), sde, sigma_data=float(kwargs.get("sigma_data", 0.5)))
    else:
        scaling, sigma_min, sigma_max = BASELINES[record.class_name](kwargs)
        sde = EDMSDE(sigma_min, sigma_max)
        model = ScaledDenoiser(LabelledNet(net), sde, **scaling)
    model = model.to(device).eval().requires_grad_(False)
    info = {"data": {"shape": [int(kwargs["img_channels"]), int(kwargs["img_resolution"]), int(kwargs["img_resolution"])],
                     "dataset": None}, "sde": repr(sde), "prediction": "X0Prediction", "source": f"edm:{Path(path)}",
            "precond": record.class_name}
    return ScoreFunction(model, sde, X0Prediction()), sde, info


class EDMPickle:
    """`checkpoint_format=edm` in the apps: the `ema` network of an EDM pickle (`use_ema` has no other weights to choose)."""

    def load(self, path, use_ema: bool = True, device="cpu"):
        return load_edm(path, device)

    def __repr__(self) -> str:
        return "EDMPickle()"
