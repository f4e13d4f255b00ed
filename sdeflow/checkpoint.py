"""Checkpoints: written atomically, read with `weights_only=True`, refused clearly when wrong.

A checkpoint is a dict of plain types and tensors: the model, EMA and optimizer states, the step,
every random state, and the resolved config of the run that wrote it.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import torch

from sdeflow.io import atomic_write_bytes


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, unsafe, or from another model configuration."""


def save_checkpoint(path, state: dict) -> Path:
    """Serialise `state` and move it over `path` in one rename, so a crash never leaves half a file."""
    buf = io.BytesIO()
    torch.save(state, buf)
    return atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path, map_location="cpu") -> dict:
    """Read a checkpoint with `weights_only=True`: a file that would run code is refused."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"refused {path}: it holds objects other than tensors and plain data, which could run code "
                              f"when loaded ({str(e).splitlines()[0][:200]})") from e
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is corrupt or not a checkpoint: {str(e).splitlines()[0][:200]}") from e
    if not isinstance(state, dict) or "model" not in state or "model_config" not in state:
        raise CheckpointError(f"{path} is not an sdeflow checkpoint (no 'model' and 'model_config' entries)")
    return state


def check_model_config(state: dict, model_config: str, path="checkpoint") -> None:
    """Refuse a checkpoint written for another model configuration, naming both."""
    if state["model_config"] != model_config:
        raise CheckpointError(f"{path} was written for another model configuration:\n  checkpoint: {state['model_config']}\n"
                              f"  this run:   {model_config}")
