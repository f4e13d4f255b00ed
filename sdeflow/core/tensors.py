"""Small tensor helpers shared across the library."""

from __future__ import annotations

import torch


def append_dims(v: torch.Tensor, ndim: int) -> torch.Tensor:
    """Append trailing singleton dims to a per-sample tensor so it broadcasts against data of rank `ndim`.

    A scalar (0-d) tensor is returned as is: it already broadcasts.
    """
    if v.ndim == 0:
        return v
    if v.ndim > ndim:
        raise ValueError(f"cannot broadcast a tensor of rank {v.ndim} against data of rank {ndim}")
    return v.reshape(v.shape + (1,) * (ndim - v.ndim))


def as_times(t, x: torch.Tensor) -> torch.Tensor:
    """t as a tensor of x's dtype on x's device; a tensor that already is one is returned as it is, with no call into
    torch (a sampler converts its times at every model evaluation)."""
    if isinstance(t, torch.Tensor) and t.dtype == x.dtype and t.device == x.device:
        return t
    return torch.as_tensor(t, dtype=x.dtype, device=x.device)


def batch_times(t, x: torch.Tensor) -> torch.Tensor:
    """Times as a (batch,) tensor on x's device and dtype, from a float, a 0-d or a (batch,) tensor."""
    t = as_times(t, x)
    if t.ndim == 0:
        return t.expand(x.shape[0])
    if t.shape != (x.shape[0],):
        raise ValueError(f"t must be a scalar or have shape ({x.shape[0]},), got {tuple(t.shape)}")
    return t


def to_device(t: torch.Tensor, device) -> torch.Tensor:
    """t moved to `device`; from the CPU to a GPU through pinned memory and without blocking, since a copy from
    pageable memory first waits for every kernel queued on the stream (a host sync per copy)."""
    if device is None or t.device.type != "cpu" or torch.device(device).type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)
