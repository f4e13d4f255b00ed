"""`sdeflow-sample`'s inverse problems: the method and operator the config names, and the observations it reads.

The method is the library's class (`conf/inverse/` targets it); this module chooses the operator for the
checkpoint's sample shape, reads the clean images (a file, or the checkpoint's training data) and measures
them, and hands `generate` the run's `sdeflow.inverse.Observed`, which binds the method batch by batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from omegaconf import DictConfig

from sdeflow.apps.common import build
from sdeflow.conditioning.inverse.base import Observed
from sdeflow.conditioning.inverse.observation import ObservationError, measure, read_images
from sdeflow.hub.format import Loaded
from sdeflow.hub.safe_config import rebuild


@dataclass
class InverseTask:
    """What `sdeflow-sample inverse=... operator=...` conditions on: sample i measures images[i mod N]."""

    method: object
    operator: object
    images: torch.Tensor  # the clean images, scaled as the model's data
    noise_std: float
    seed: int
    _whole: dict = field(default_factory=dict, repr=False)

    def clean(self, start: int, b: int) -> torch.Tensor:
        return self.images[torch.arange(start, start + b) % len(self.images)]

    def observe(self, start: int, b: int) -> torch.Tensor:
        """y for the samples start .. start + b - 1 (the noise keyed per sample, so any batching gives the same y)."""
        return measure(self.operator, self.clean(start, b), self.noise_std, self.seed, start)

    def whole_run(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(observations, originals) of samples 0 .. n - 1, made once per run: every solver's outputs use them."""
        if n not in self._whole:
            self._whole[n] = (self.observe(0, n), self.clean(0, n))
        return self._whole[n]

    def observed(self, n: int) -> Observed:
        """The inverse problem of samples 0 .. n - 1, for `generate(..., inverse=...)`."""
        return Observed(self.method, self.operator, self.whole_run(n)[0], self.noise_std, self.seed)

    def scores(self, x: torch.Tensor, centered: bool) -> dict:
        """Measurement residual RMS ||A x - y|| (does the sample agree with what was observed?) and PSNR to the
        clean images on the [0, 1] scale."""
        y, clean = (v.to(x.dtype) for v in self.whole_run(len(x)))
        residual = (self.operator.A(x) - y).flatten(1).pow(2).mean(1).sqrt()
        scale = 2.0 if centered else 1.0
        mse = ((x - clean) / scale).flatten(1).pow(2).mean(1).clamp_min(1e-20)
        return {"residual_rms": float(residual.mean()), "psnr": float((-10 * torch.log10(mse)).mean())}


def inverse_task(cfg: DictConfig, model: Loaded) -> InverseTask | None:
    """The run's inverse problem for the checkpoint's model, or None; mismatched settings refused at the door."""
    method, operator = cfg.get("inverse"), cfg.get("operator")
    if method is None and operator is None:
        return None
    if method is None or operator is None:
        missing = (
            "inverse=replacement|repaint|dps|dps_normalised|pigdm"
            if method is None
            else "operator=inpainting_box|inpainting|colorization|super_resolution"
        )
        raise ValueError(f"an inverse problem needs both a method and an operator: add {missing}")
    obs = cfg.observation
    noise_std = obs.noise_std
    if (
        isinstance(noise_std, bool)
        or not isinstance(noise_std, (int, float))
        or not noise_std >= 0
        or not math.isfinite(noise_std)
    ):
        raise ValueError(f"observation.noise_std must be a number >= 0, got {noise_std!r}")
    op = build(operator, "operator")(model.shape)
    if obs.images is not None:
        images = read_images(obs.images, model.shape, model.centered)
    else:
        images = training_images(model, int(obs.first), cfg.n)
    return InverseTask(build(method, "inverse"), op, images.float(), float(noise_std), int(cfg.seed))


def training_images(model: Loaded, first: int, n: int) -> torch.Tensor:
    """Images first .. first + n - 1 of the checkpoint's training data (`model.dataset`, rebuilt from the allow-list),
    scaled as the model's data."""
    node = model.dataset
    if node is None:
        raise ObservationError("the checkpoint records no dataset: give observation.images=<file>")
    data = rebuild(node, "config.data.dataset")
    if not data.image:
        raise ObservationError(f"the checkpoint's data ({data.name}) are not images: give observation.images=<file>")
    if not 0 <= first < len(data):
        raise ObservationError(f"observation.first must be in 0..{len(data) - 1}, got {first}")
    x = data.data[first : first + n]
    return x * 2 - 1 if model.centered else x
