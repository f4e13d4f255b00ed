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
# One thread: on a shared 2-core machine more threads only contend (CLI tests run in their own processes).
torch.set_num_threads(1)


@pytest.fixture(params=["vp", "subvp", "ve"])
def sde(request):
    import sdeflow as sf

    return {"vp": sf.VPSDE(), "subvp": sf.SubVPSDE(), "ve": sf.VESDE()}[request.param]
