"""Safety: a file from elsewhere is data, never code; checkpoints are checked byte for byte."""

import contextlib
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
import yaml
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from omegaconf import OmegaConf

import sdeflow as sf
import sdeflow.training.schemas  # noqa: F401  (the train config's structured schema)
from sdeflow.core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from sdeflow.hub.format import Loaded
from sdeflow.hub.safe_config import UnsafeConfigError, rebuild
from sdeflow.hub.trained import load_trained
from sdeflow.nets import ScoreMLP
from sdeflow.tuning.grid_search import OptimizedGrid


class Touch:
    """A pickled object that creates a marker file when it is unpickled: what an attacker's payload does."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _config(net=None, sde=None):
    return {
        "model": {
            "net": net or {"_target_": "sdeflow.nets.ScoreMLP", "dim": 2, "hidden": 16, "blocks": 1},
            "prediction": {"_target_": "sdeflow.EpsPrediction"},
        },
        "sde": sde or {"_target_": "sdeflow.VPSDE"},
        "data": {
            "dataset": {
                "_target_": "sdeflow.training.data.toy",
                "sampler": {"_target_": "sdeflow.problems.eight_gaussians"},
                "n": 100,
            },
            "shape": [2],
        },
    }


def _checkpoint(path, config: dict):
    """A checkpoint laid out as sdeflow-train writes it, carrying `config` as its run config."""
    torch.manual_seed(0)
    net = ScoreMLP(2, hidden=16, blocks=1)
    save_checkpoint(
        path,
        {
            "model": net.state_dict(),
            "ema": net.state_dict(),
            "step": 1,
            "model_config": "m",
            "config": yaml.safe_dump(config),
        },
    )
    return path


@pytest.fixture
def payloads(tmp_path):
    """(name, stored net or sde config, marker file): two real payloads and one nested inside an argument."""
    marker = tmp_path / "pwned"
    evil_pt = tmp_path / "evil.pt"
    torch.save(Touch(marker), evil_pt)
    evil_npy = tmp_path / "evil.npy"
    np.save(evil_npy, np.array([Touch(marker)], dtype=object), allow_pickle=True)
    torch_load = {"_target_": "torch.load", "f": str(evil_pt), "weights_only": False}
    numpy_load = {"_target_": "numpy.load", "file": str(evil_npy), "allow_pickle": True}
    nested = {"_target_": "sdeflow.nets.ScoreMLP", "dim": 2, "embedding": torch_load}
    return marker, {
        "torch_load": ("net", torch_load, "config.model.net._target_"),
        "numpy_load": ("sde", numpy_load, "config.sde._target_"),
        "nested": ("net", nested, "config.model.net.embedding._target_"),
    }


@pytest.mark.parametrize("name", ["torch_load", "numpy_load", "nested"])
def test_a_stored_config_never_runs_code(tmp_path, payloads, name):
    marker, cases = payloads
    where, node, key = cases[name]
    # Control: the payload is real, Hydra's instantiate runs it (and may then fail on what it returned).
    with contextlib.suppress(Exception):
        instantiate(OmegaConf.create(node))
    assert marker.exists()
    marker.unlink()
    path = _checkpoint(tmp_path / "ckpt.pt", _config(**{where: node}))
    with pytest.raises(UnsafeConfigError, match=key.replace(".", r"\.").replace("[", r"\[")):
        load_trained(path)
    assert not marker.exists()


@pytest.mark.slow
def test_sdeflow_sample_refuses_a_hostile_checkpoint_in_one_line(tmp_path, payloads):
    marker, cases = payloads
    path = _checkpoint(tmp_path / "ckpt.pt", _config(net=cases["torch_load"][1]))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sdeflow.apps.sample",
            f"checkpoint={path}",
            "n=4",
            "progress=false",
            f"hydra.run.dir={tmp_path / 'out'}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "WANDB_MODE": "disabled"},
    )
    assert proc.returncode != 0
    assert "config.model.net._target_ is 'torch.load'" in proc.stderr and "Traceback" not in proc.stderr
    assert not marker.exists() and not (tmp_path / "out" / "results.json").exists()


def test_rebuild_takes_plain_arguments_only():
    assert isinstance(rebuild({"_target_": "sdeflow.VESDE", "sigma_max": 10.0}), sf.VESDE)
    with pytest.raises(UnsafeConfigError, match=r"config\._args_|uses \['_args_'\]"):
        rebuild({"_target_": "sdeflow.VESDE", "_args_": [0.01]})
    with pytest.raises(UnsafeConfigError, match="interpolation"):
        rebuild({"_target_": "sdeflow.VESDE", "sigma_max": "${oc.env:HOME}"})
    with pytest.raises(UnsafeConfigError, match="os.system"):
        rebuild({"_target_": "os.system", "command": "true"})


# Every model config, and every SDE config at least once (EDM's preconditioner holds the SDE as a nested object).
@pytest.mark.parametrize(
    "data, model, sde",
    [
        ("toy", "mlp", "vp"),
        ("digits", "ncsnpp_tiny", "subvp"),
        ("digits", "ncsnpp_tiny_edm", "ve"),
        ("digits", "ncsnpp_tiny_edm", "ve_edm"),
        ("cifar10", "ncsnpp_cifar10", "ve"),
        ("cifar10", "ddpmpp_cifar10", "vp"),
    ],
)
@pytest.mark.slow
def test_every_checkpoint_the_trainer_writes_loads(tmp_path, data, model, sde):
    with initialize_config_module("sdeflow.conf", version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[f"data={data}", f"model={model}", f"sde={sde}", "data.dataset.root=/nowhere"]
            if data == "cifar10"
            else [f"data={data}", f"model={model}", f"sde={sde}"],
        )
    torch.manual_seed(0)
    net = instantiate(cfg.model.net)
    path = tmp_path / "ckpt.pt"
    save_checkpoint(
        path,
        {
            "model": net.state_dict(),
            "ema": net.state_dict(),
            "step": 0,
            "model_config": "m",
            "config": OmegaConf.to_yaml(cfg, resolve=True),
        },
    )
    model = load_trained(path)
    score, loaded_sde, stored = model.score, model.sde, model.config
    assert type(loaded_sde).__name__ == type(instantiate(cfg.sde)).__name__
    for a, b in zip(net.state_dict().values(), score.model.state_dict().values()):
        assert torch.equal(a, b)
    assert stored["data"]["shape"] == list(cfg.data.shape) and model.shape == tuple(cfg.data.shape)
    assert model.label_dim == cfg.model.get("label_dim", 0) and model.dataset == stored["data"]["dataset"]


def test_an_sdeflow_checkpoint_gives_the_facts_of_its_stored_config(tmp_path):
    config = _config()
    path = _checkpoint(tmp_path / "ckpt.pt", config)
    model = load_trained(path)
    assert isinstance(model, Loaded) and isinstance(model.sde, sf.VPSDE)
    assert isinstance(model.score.prediction, sf.EpsPrediction)
    assert (model.shape, model.label_dim, model.centered, model.source) == ((2,), 0, True, f"sdeflow:{path}")
    assert model.config == config and model.dataset == config["data"]["dataset"] and model.details == {"step": 1}
    config["data"]["shape"] = [2, 0]
    with pytest.raises(CheckpointError, match="config.data.shape is \\[2, 0\\], not a list of positive integers"):
        load_trained(_checkpoint(tmp_path / "bad.pt", config))


def test_flipped_bytes_in_the_weights_are_caught(tmp_path):
    torch.manual_seed(0)
    net = ScoreMLP(2, hidden=16, blocks=1)
    path = save_checkpoint(tmp_path / "c.pt", {"model": net.state_dict(), "model_config": "m", "step": 3})
    assert load_checkpoint(path)["step"] == 3
    # Flip one byte inside the largest tensor's stored data (not in the zip's directory or the pickle).
    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
        with open(path, "rb") as f:
            f.seek(info.header_offset + 26)
            name_len, extra_len = np.frombuffer(f.read(4), dtype="<u2")
    data_start = info.header_offset + 30 + int(name_len) + int(extra_len)
    raw = bytearray(path.read_bytes())
    raw[data_start + info.file_size // 2] ^= 0x10
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="checksum"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    "content, message", [(b"", "empty"), (b"hello world\n", "corrupt"), (os.urandom(4096), "corrupt")]
)
def test_empty_or_garbage_checkpoints_get_one_clear_line(tmp_path, content, message):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_a_saved_grid_must_hold_finite_times(tmp_path):
    path = tmp_path / "grid.json"
    path.write_text('{"timesteps": [1.0, NaN, 0.001]}')
    with pytest.raises(ValueError, match="finite"):
        OptimizedGrid(path)
    path.write_text('{"timesteps": [1.0, "x", 0.001]}')
    with pytest.raises(ValueError, match="numbers"):
        OptimizedGrid(path)
