"""Observations from the command line: operators built for the data's shape, images and masks read from files.

`conf/operator/` names the factories here; each takes the shape of one sample (C, H, W) and checks
it, so a mask of the wrong size or colorisation of grey images is refused before any sampling.
Files are data, never code: PNG through Pillow, `.npy`/`.npz` through numpy with pickles refused.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sdeflow.conditioning.inverse.operators import AveragePooling, Colorization, Inpainting, LinearOperator
from sdeflow.noise.generators import MEASUREMENT, PerSampleNoise


class ObservationError(ValueError):
    """An observation or mask file is missing, unreadable, or does not fit the model's data."""


def read_array(path) -> np.ndarray:
    """A PNG (H, W) or (H, W, 3) in [0, 1], or the array of a `.npy` file or a one-array `.npz` file, as float64."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ObservationError(f"{path}: no such file (expected a .png, .npy or .npz image file)")
    suffix = path.suffix.lower()
    try:
        if suffix == ".png":
            from PIL import Image

            with Image.open(path) as im:
                arr = (
                    np.asarray(im.convert("L" if im.mode in ("1", "L", "I", "I;16", "F") else "RGB"), dtype=np.float64)
                    / 255.0
                )
            return arr
        if suffix == ".npy":
            return np.asarray(np.load(path, allow_pickle=False), dtype=np.float64)
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                if len(z.files) != 1:
                    raise ObservationError(f"{path}: an .npz observation holds one array, found {z.files}")
                return np.asarray(z[z.files[0]], dtype=np.float64)
    except (OSError, ValueError) as e:
        if isinstance(e, ObservationError):
            raise
        raise ObservationError(f"{path}: not a readable {suffix} image file: {e}") from e
    raise ObservationError(f"{path}: unknown image file type {suffix!r}; use .png, .npy or .npz")


def _as_images(arr: np.ndarray, shape, what: str) -> torch.Tensor:
    """(N, C, H, W) from (H, W), (H, W, C) as a PNG gives, (C, H, W) or (N, C, H, W)."""
    c, h, w = shape
    if arr.ndim == 3 and c == 1 and arr.shape == (h, w, 3):
        arr = arr.mean(-1)  # an RGB picture for a grey model
    if arr.ndim == 2 and c == 1:
        arr = arr[None, None]
    elif arr.ndim == 3 and arr.shape == (h, w, c) and arr.shape != tuple(shape):
        arr = arr.transpose(2, 0, 1)[None]
    elif arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or tuple(arr.shape[1:]) != tuple(shape):
        raise ObservationError(
            f"{what} has shape {arr.shape}; the model's samples are {tuple(shape)} (C, H, W), so "
            f"give (H, W) or (C, H, W) images, or (N, C, H, W) for several"
        )
    return torch.from_numpy(np.ascontiguousarray(arr))


def read_images(path, shape, centered: bool = True) -> torch.Tensor:
    """Images of the model's shape from a file, in [0, 1] on disk, scaled as the model's data (`centered`: [-1, 1])."""
    x = _as_images(read_array(path), shape, str(path))
    if not bool(torch.isfinite(x).all()) or x.min() < 0 or x.max() > 1:
        raise ObservationError(
            f"{path}: image values must lie in [0, 1] (PNG levels / 255), "
            f"got [{float(x.min()):.3g}, {float(x.max()):.3g}]"
        )
    return x * 2 - 1 if centered else x


def inpainting_mask(shape, mask: str) -> Inpainting:
    """Inpainting with the mask in a file (PNG or array; 1, white: observed; 0, black: to fill), (H, W) or (C, H, W)."""
    m = read_array(mask)
    if m.ndim == 3 and m.shape[-1] == 3 and m.shape[0] != shape[0]:
        m = m.mean(-1)  # an RGB PNG of a grey mask
    m = (m > 0.5).astype(np.float64)
    m = m[None] if m.ndim == 2 else m
    if m.ndim != 3 or m.shape[1:] != tuple(shape[1:]) or m.shape[0] not in (1, shape[0]):
        raise ObservationError(
            f"{mask}: a mask of shape {m.shape} does not fit samples of shape {tuple(shape)}; "
            f"give (H, W) = {tuple(shape[1:])} or (C, H, W)"
        )
    return Inpainting(torch.from_numpy(m)[None])


def inpainting_box(shape, box=(0.0, 0.5, 1.0, 1.0)) -> Inpainting:
    """Inpainting of a rectangle: box = (top, left, bottom, right) as fractions of the height and width, the part
    to fill (default: the right half). Everything outside it is observed."""
    top, left, bottom, right = (float(v) for v in box)
    if not (0 <= top < bottom <= 1 and 0 <= left < right <= 1):
        raise ObservationError(
            f"box is (top, left, bottom, right) with 0 <= top < bottom <= 1 and 0 <= left < right <= 1, got {box}"
        )
    _, h, w = shape
    mask = torch.ones(1, 1, h, w, dtype=torch.float64)
    mask[..., round(top * h) : round(bottom * h), round(left * w) : round(right * w)] = 0
    if bool((mask == 1).all()):
        raise ObservationError(f"box {box} covers no pixel of a {h} x {w} image")
    return Inpainting(mask)


def colorization(shape) -> Colorization:
    """Colorisation: observe each pixel's grey level (RGB models only)."""
    if shape[0] != 3:
        raise ObservationError(f"colorisation needs a model of RGB images; this one's samples are {tuple(shape)}")
    return Colorization()


def super_resolution(shape, factor: int = 2) -> AveragePooling:
    """Super-resolution: observe the averages of factor x factor blocks."""
    if shape[-1] % factor or shape[-2] % factor:
        raise ObservationError(
            f"super-resolution by {factor} needs H and W divisible by it; samples are {tuple(shape)}"
        )
    return AveragePooling(factor)


def measure(
    operator: LinearOperator, images: torch.Tensor, noise_std: float, seed: int, offset: int = 0
) -> torch.Tensor:
    """y_i = A x_i + noise_std z_i, z_i drawn from the stream (seed, MEASUREMENT, offset + i): y_i depends on i, not on
    the batch."""
    y = operator.A(images)
    if noise_std:
        z = PerSampleNoise(seed, len(images), offset, purpose=MEASUREMENT).randn(y.shape, dtype=y.dtype)
        y = y + noise_std * operator.measurement_noise(z)
    return y
