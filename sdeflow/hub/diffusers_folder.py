"""diffusers' `UNet2DModel` folders (config.json + safetensors) as score functions on their discrete VP schedule.

Needs the optional extra `pip install "sdeflow[hub]"` (diffusers builds the network; sdeflow reads
the files). The weights are read by sdeflow, not by `from_pretrained`: safetensors, or a `.bin`
through `torch.load(weights_only=True)`, loaded strictly, so a missing or unused key is an error.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from sdeflow.core.checkpoint import CheckpointError, first_line
from sdeflow.hub.discrete_time import DiscreteTimeModel
from sdeflow.hub.format import CheckpointFormat, Loaded
from sdeflow.hub.strict import load_strict
from sdeflow.score.function import EpsPrediction, ScoreFunction, VPrediction, X0Prediction
from sdeflow.sde.discrete import DiscreteVPSDE, cosine_betas, linear_betas, scaled_linear_betas

# diffusers' names for its schedules and targets, translated at the door (a scheduler config is data).
BETAS = {
    "linear": linear_betas,
    "scaled_linear": scaled_linear_betas,
    "squaredcos_cap_v2": lambda n, start, end: cosine_betas(n),
}
PREDICTIONS = {"epsilon": EpsPrediction, "v_prediction": VPrediction, "sample": X0Prediction}
WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


class UNetOutput(nn.Module):
    """`UNet2DModel` called as `net(x, timesteps, y=None)`, returning the tensor rather than diffusers' output
    object."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet
        self.label_dim = int(unet.config.num_class_embeds or 0)

    def forward(self, x, timesteps, y=None):
        return self.unet(x, timesteps, class_labels=y, return_dict=False)[0]


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable JSON file: {first_line(e)}") from e
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def schedule_from(config: dict, where: str) -> tuple[DiscreteVPSDE, object]:
    """The DiscreteVPSDE and Prediction a diffusers scheduler config describes."""
    n = int(config.get("num_train_timesteps", 1000))
    if config.get("trained_betas") is not None:
        betas = config["trained_betas"]
    else:
        name = config.get("beta_schedule", "linear")
        if name not in BETAS:
            raise CheckpointError(
                f"{where}: beta_schedule {name!r} is not one sdeflow reads; it reads {sorted(BETAS)} or trained_betas"
            )
        betas = BETAS[name](n, float(config.get("beta_start", 1e-4)), float(config.get("beta_end", 0.02)))
    target = config.get("prediction_type", "epsilon")
    if target not in PREDICTIONS:
        raise CheckpointError(
            f"{where}: prediction_type {target!r} is not one sdeflow reads; it reads {sorted(PREDICTIONS)}"
        )
    return DiscreteVPSDE(betas), PREDICTIONS[target]()


def _diffusers():
    try:
        import diffusers
    except ImportError as e:
        raise CheckpointError('reading a diffusers folder needs diffusers: pip install "sdeflow[hub]"') from e
    return diffusers


def _read_weights(folder: Path) -> dict:
    for name in WEIGHTS:
        file = folder / name
        if not file.is_file():
            continue
        try:
            if file.suffix == ".safetensors":
                from safetensors.torch import load_file

                return load_file(str(file))
            return torch.load(file, map_location="cpu", weights_only=True)
        except Exception as e:  # safetensors and torch raise many types on a damaged file; each becomes one line
            raise CheckpointError(f"{file}: not a readable weights file: {first_line(e)}") from e
    raise CheckpointError(f"{folder}: no weights ({' or '.join(WEIGHTS)})")


class DiffusersFormat(CheckpointFormat):
    """diffusers' `UNet2DModel` folders (`checkpoint_format=diffusers` in the apps), on their own discrete VP schedule.

    `path` is a pipeline folder (with `unet/` and `scheduler/`), or a UNet folder (`config.json` and
    `diffusion_pytorch_model.safetensors`, optionally a `scheduler_config.json` beside them). A folder
    holds one set of weights (a pipeline saves its EMA weights as the model), so `use_ema` chooses nothing.

    Args:
        scheduler: a scheduler config to use instead of the folder's (default: the folder's, else DDPM's
            linear betas with eps prediction).
    """

    def __init__(self, scheduler: dict | None = None):
        self.scheduler = scheduler

    def load(self, path, use_ema: bool = True, device="cpu") -> Loaded:
        root = Path(path)
        unet_dir = root / "unet" if (root / "unet").is_dir() else root
        if not (unet_dir / "config.json").is_file():
            raise CheckpointError(
                f"{root}: no config.json (a diffusers UNet2DModel folder has config.json and "
                f"{WEIGHTS[0]}; a pipeline folder has them in unet/)"
            )
        config = read_json(unet_dir / "config.json")
        if config.get("_class_name", "UNet2DModel") != "UNet2DModel":
            raise CheckpointError(
                f"{unet_dir}: holds a {config['_class_name']}; sdeflow imports UNet2DModel (pixel-space) folders"
            )
        scheduler = self.scheduler
        if scheduler is None:
            places = (root / "scheduler" / "scheduler_config.json", unet_dir / "scheduler_config.json")
            found = [p for p in places if p.is_file()]
            scheduler = read_json(found[0]) if found else {}
        sde, prediction = schedule_from(scheduler, str(root))
        state = _read_weights(unet_dir)
        unet = _diffusers().UNet2DModel.from_config({k: v for k, v in config.items() if not k.startswith("_")})
        load_strict(unet, state, str(unet_dir))
        net = DiscreteTimeModel(UNetOutput(unet), sde.N).to(device).eval().requires_grad_(False)
        size = unet.config.sample_size
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        return Loaded(
            ScoreFunction(net, sde, prediction),
            sde,
            (int(unet.config.in_channels), int(height), int(width)),
            f"diffusers:{unet_dir}",
            label_dim=net.label_dim,
        )


def load_diffusers(path, device="cpu", scheduler: dict | None = None) -> Loaded:
    """The diffusers folder at `path`: `DiffusersFormat(scheduler).load(path, device=device)`."""
    return DiffusersFormat(scheduler).load(path, device=device)


DiffusersFolder = DiffusersFormat  # the former name (sdeflow.hub.DiffusersFolder in older configs and code)
