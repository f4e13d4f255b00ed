"""Checkpoints: written atomically, read with `weights_only=True`, refused clearly when wrong.

A checkpoint is a dict of plain types and tensors: the model, EMA and optimizer states, the step,
the resolved config of the run that wrote it, and a SHA-256 checksum of all of that, verified on
load so that flipped bytes are caught rather than sampled from.
"""

from __future__ import annotations

import hashlib
import io
import pickle
from pathlib import Path

import numpy as np
import torch

from sdeflow.core.io import atomic_write_bytes


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, unsafe, or from another model configuration."""


def save_torch(path, obj) -> Path:
    """`torch.save(obj)` to `path` in one rename, so a crash never leaves half a file."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def save_checkpoint(path, state: dict) -> Path:
    """Serialise `state` with its checksum, atomically (`save_torch`)."""
    return save_torch(path, {**state, "checksum": checksum(state)})


def checksum(state: dict) -> str:
    """SHA-256 of every entry but "checksum": tensors by dtype, shape and bytes, plain values by repr, in key order."""
    h = hashlib.sha256()

    def feed(key: str, v) -> None:
        if isinstance(v, dict):
            for k in sorted(v, key=str):
                if not (key == "" and k == "checksum"):
                    feed(f"{key}/{k}", v[k])
        elif isinstance(v, (list, tuple)):
            for i, item in enumerate(v):
                feed(f"{key}/{i}", item)
        elif isinstance(v, torch.Tensor):
            t = v.detach().cpu().contiguous()
            h.update(f"{key}:{t.dtype}:{tuple(t.shape)}:".encode())
            h.update(memoryview(np.ascontiguousarray(t.reshape(-1).view(torch.uint8).numpy())))
        else:
            h.update(f"{key}={v!r};".encode())

    feed("", state)
    return "sha256:" + h.hexdigest()


def read_weights_only(path, map_location="cpu"):
    """`torch.load(path, weights_only=True)`, with one clear line for a missing, unsafe, damaged or cut file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's weights-only unpickler names the global it blocked; other failures are damaged bytes.
        if "GLOBAL" in str(e) or "global" in str(e):
            raise CheckpointError(
                f"refused {path}: it holds objects other than tensors and plain data, which could run code "
                f"when loaded ({_blocked_global(e)})"
            ) from e
        raise CheckpointError(f"{path} is corrupt or not a checkpoint (it does not unpickle)") from e
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, AttributeError, TypeError) as e:
        if isinstance(e, EOFError) or path.stat().st_size == 0:
            raise CheckpointError(f"{path} is empty or cut short: not a checkpoint") from e
        raise CheckpointError(f"{path} is corrupt or not a checkpoint: {first_line(e, 200)}") from e


def load_checkpoint(path, map_location="cpu") -> dict:
    """Read an sdeflow checkpoint with `weights_only=True`: a file that would run code is refused."""
    state = read_weights_only(path, map_location)
    if not isinstance(state, dict) or "model" not in state or "model_config" not in state:
        raise CheckpointError(f"{path} is not an sdeflow checkpoint (no 'model' and 'model_config' entries)")
    if "checksum" in state and state["checksum"] != checksum(state):
        raise CheckpointError(
            f"{path} is damaged: its contents do not match the checksum stored with them (flipped bytes on "
            "disk or in transfer); use another copy or an earlier checkpoint"
        )
    return state


def _blocked_global(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).splitlines() if "GLOBAL" in line or "global" in line]
    return (lines[0] if lines else first_line(e))[:200]


def peek_step(path) -> int:
    """The step a checkpoint was written at, read without loading its tensors (memory-mapped)."""
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["step"])
    except Exception:
        return int(load_checkpoint(path)["step"])


def check_model_config(state: dict, model_config: str, path="checkpoint") -> None:
    """Refuse a checkpoint written for another model configuration, naming both."""
    if state["model_config"] != model_config:
        raise CheckpointError(
            f"{path} was written for another model configuration:\n  checkpoint: {state['model_config']}\n"
            f"  this run:   {model_config}"
        )


def first_line(e: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (its type's name when the message is empty), for one-line errors."""
    lines = str(e).strip().splitlines()
    return (lines[0] if lines else type(e).__name__)[:limit]
