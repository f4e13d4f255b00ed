"""Test-wide settings: wandb off and confined to a temporary folder, fixed threads."""

import os
import tempfile

import pytest
import torch

_WANDB_TMP = tempfile.mkdtemp(prefix="sdeflow-wandb-")
os.environ["WANDB_MODE"] = "disabled"
for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):
    os.environ[var] = _WANDB_TMP
os.environ.setdefault("MPLBACKEND", "Agg")
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(params=["vp", "subvp", "ve"])
def sde(request):
    import sdeflow as sf

    return {"vp": sf.VPSDE(), "subvp": sf.SubVPSDE(), "ve": sf.VESDE()}[request.param]


def slope(steps, errors):
    """Least-squares slope of log(error) against log(1 / steps): the empirical order."""
    import numpy as np

    return float(np.polyfit(np.log(1.0 / np.asarray(steps, dtype=float)), np.log(np.asarray(errors, dtype=float)), 1)[0])
