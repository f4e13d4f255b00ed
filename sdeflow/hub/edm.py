"""EDM's network pickles (Karras et al. 2022), read as data into sdeflow's own `SongUNet` or `DhariwalUNet`.

EDM's pickles store each network as its constructor's arguments, its tensors and the source code of
its module, which `pickle.load` would execute. Here `safe_pickle` keeps the arguments and tensors and
runs nothing; the network is rebuilt from `sdeflow.nets.song_unet` and loaded strictly. The
preconditioning is that of the pickle's class: EDM's own, the VP and VE forms of the score_sde
baselines that EDM converted to this layout (`baseline-cifar10-32x32-uncond-vp.pkl`, ...), or the
iDDPM form of its ADM ImageNet baseline (`baseline-imagenet-64x64-cond-adm.pkl`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from sdeflow.core.checkpoint import CheckpointError, first_line
from sdeflow.hub.format import CheckpointFormat, Loaded
from sdeflow.hub.safe_pickle import Record, safe_load, tensors
from sdeflow.hub.scaling import IndexLabels, LogSigmaLabels, ScaledDenoiser, TimeLabels
from sdeflow.hub.strict import load_strict
from sdeflow.nets.embeddings import one_hot_labels
from sdeflow.nets.precond import EDMPrecond
from sdeflow.nets.song_unet import DhariwalUNet, SongUNet
from sdeflow.score.function import ScoreFunction, X0Prediction
from sdeflow.sde.edm import EDMSDE
from sdeflow.sde.vp import VPSDE

# The preconditioners' own arguments; the rest of a pickle's recorded arguments build the network.
PRECOND_ARGS = {
    "img_resolution",
    "img_channels",
    "label_dim",
    "use_fp16",
    "sigma_min",
    "sigma_max",
    "sigma_data",
    "model_type",
    "beta_d",
    "beta_min",
    "M",
    "epsilon_t",
    "C_1",
    "C_2",
}


class LabelledNet(nn.Module):
    """EDM's network called the sdeflow way, `net(x, c_noise, y=labels)`: integer labels become EDM's one-hot vectors
    (-1: none).

    `channels`: the output channels to keep (iDDPM's networks also output their learned variances, which sampling
    ignores).
    """

    def __init__(self, net: nn.Module, channels: int | None = None):
        super().__init__()
        self.net, self.label_dim, self.channels = net, net.label_dim, channels

    def forward(self, x, c_noise, y=None):
        onehot = None
        if self.label_dim:
            y = torch.full((len(x),), -1, device=x.device) if y is None else y.to(x.device)
            onehot = one_hot_labels(y, self.label_dim, x.dtype)
        out = self.net(x, c_noise.to(x.dtype), onehot)
        return out if self.channels is None else out[:, : self.channels]


def _vp(kwargs, state):
    beta_d, beta_min, M = (
        float(kwargs.get("beta_d", 19.9)),
        float(kwargs.get("beta_min", 0.1)),
        int(kwargs.get("M", 1000)),
    )
    sde = VPSDE(beta_min, beta_min + beta_d)
    sigma_min, sigma_max = (
        float(sde.nsr(torch.tensor(t, dtype=torch.float64))) for t in (float(kwargs.get("epsilon_t", 1e-5)), 1.0)
    )
    return TimeLabels(sde, scale=M - 1), sigma_min, sigma_max


def _ve(kwargs, state):
    # EDM's data are in [-1, 1]: its VE baselines take log(sigma / 2), as score_sde's did on [0, 1].
    return LogSigmaLabels(unit=2.0), float(kwargs.get("sigma_min", 0.02)), float(kwargs.get("sigma_max", 100.0))


def _iddpm(kwargs, state):
    # The table of noise levels is a buffer of the pickle (u, M + 1 entries, decreasing); EDM samples within
    # [u_{M-1}, min(u_0, 80)].
    u = state.pop("u", None)
    M = int(kwargs.get("M", 1000))
    if not isinstance(u, torch.Tensor) or u.shape != (M + 1,):
        raise CheckpointError(
            f"an iDDPMPrecond pickle holds its noise levels u ({M + 1} values); "
            f"this one's are {getattr(u, 'shape', None)}"
        )
    return IndexLabels(u, M), float(u[M - 1]), min(float(u[0]), 80.0)


BASELINES = {"VPPrecond": _vp, "VEPrecond": _ve, "iDDPMPrecond": _iddpm}
NETWORKS = {"SongUNet": SongUNet, "DhariwalUNet": DhariwalUNet}  # EDM's names for the architectures it pickles


def build_network(kwargs: dict, precond: str = "EDMPrecond", where: str = "an EDM pickle") -> nn.Module:
    """Our SongUNet or DhariwalUNet, built from the arguments a preconditioner of class `precond` was given."""
    # The preconditioners' defaults, when the pickle did not record one: EDM's own uses DhariwalUNet (ADM).
    model_type = kwargs.get("model_type", "DhariwalUNet" if precond == "EDMPrecond" else "SongUNet")
    if model_type not in NETWORKS:
        raise CheckpointError(f"{where}: its network is a {model_type}; sdeflow has EDM's {' and '.join(NETWORKS)}")
    try:
        channels = int(kwargs["img_channels"])
        out = channels * (2 if precond == "iDDPMPrecond" else 1)  # iDDPM's networks also predict their variances
        return NETWORKS[model_type](
            img_resolution=int(kwargs["img_resolution"]),
            in_channels=channels,
            out_channels=out,
            label_dim=int(kwargs.get("label_dim", 0)),
            **{k: v for k, v in kwargs.items() if k not in PRECOND_ARGS},
        )
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{where}: its recorded arguments do not build a {model_type}: {first_line(e)}") from e


class EDMFormat(CheckpointFormat):
    """EDM's network pickles (`checkpoint_format=edm` in the apps), on `EDMSDE` over each network's noise range.

    EDM's own networks (`EDMPrecond`) sample on sigma in [0.002, 80], as in the paper; the VP and VE
    baselines on the range they were trained on. Any sdeflow SDE works: the denoiser reads sigma /
    alpha from the SDE it is given (`Loaded.sde` is the default). `Loaded.details["precond"]` records
    the pickle's preconditioner class.

    Args:
        key: the network of the pickle to read (EDM's pickles hold their EMA network under "ema"; `use_ema`
            has no other weights to choose).
    """

    def __init__(self, key: str = "ema"):
        self.key = key

    def load(self, path, use_ema: bool = True, device="cpu") -> Loaded:
        try:
            data = safe_load(path)
        except FileNotFoundError as e:
            raise CheckpointError(f"{path}: no such file") from e
        except Exception as e:  # a refused global, a damaged or cut file: one line, nothing run
            raise CheckpointError(f"{path}: refused as an EDM network pickle: {first_line(e)}") from e
        record = data.get(self.key) if isinstance(data, dict) else None
        if not isinstance(record, Record) or not isinstance(record.state, dict):
            raise CheckpointError(f"{path}: no network under {self.key!r} (an EDM pickle is a dict holding 'ema')")
        kwargs = dict(record.state.get("_init_kwargs") or {})
        args = tuple(record.state.get("_init_args") or ())
        for name, value in zip(("img_resolution", "img_channels"), args):
            kwargs.setdefault(name, value)
        if record.class_name != "EDMPrecond" and record.class_name not in BASELINES:
            raise CheckpointError(
                f"{path}: its network is a {record.class_name}; sdeflow reads EDMPrecond, {', '.join(BASELINES)}"
            )
        net = build_network(kwargs, record.class_name, str(path))
        state = {k.removeprefix("model."): v for k, v in tensors(record).items()}
        if record.class_name == "EDMPrecond":
            load_strict(net, state, str(path))
            sde = EDMSDE(0.002, 80.0)
            model = EDMPrecond(LabelledNet(net), sde, sigma_data=float(kwargs.get("sigma_data", 0.5)))
        else:
            try:
                scaling, sigma_min, sigma_max = BASELINES[record.class_name](kwargs, state)
            except CheckpointError as e:
                raise CheckpointError(f"{path}: {e}") from e
            load_strict(net, state, str(path))
            sde = EDMSDE(sigma_min, sigma_max)
            model = ScaledDenoiser(LabelledNet(net, int(kwargs["img_channels"])), sde, scaling)
        model = model.to(device).eval().requires_grad_(False)
        channels, size = int(kwargs["img_channels"]), int(kwargs["img_resolution"])
        return Loaded(
            ScoreFunction(model, sde, X0Prediction()),
            sde,
            (channels, size, size),
            f"edm:{Path(path)}",
            label_dim=net.label_dim,
            details={"precond": record.class_name},
        )


def load_edm(path, device="cpu", key: str = "ema") -> Loaded:
    """The network `key` of the EDM pickle at `path`: `EDMFormat(key).load(path, device=device)`."""
    return EDMFormat(key).load(path, device=device)


EDMPickle = EDMFormat  # the former name (sdeflow.hub.EDMPickle in older configs and code)
