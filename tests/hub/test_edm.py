"""EDM's network pickles: read as data into sdeflow's own SongUNet, equal to EDM's outputs, and never executed.

tests/data holds facts produced by running EDM's code (NVlabs/edm, training/networks.py): the keys and
shapes of its published CIFAR-10 and ImageNet-64 networks, and the outputs D(x; sigma) of four small
networks (DDPM++, NCSN++ and ADM) with their weights. The pickles here are written in the layout of
EDM's torch_utils.persistence: each network a call of `_reconstruct_persistent_obj(meta)`, meta holding
the class name, the module's state and the module's source code, which EDM's loader would execute and
ours must not.

`tests/data/make_edm_iddpm_data.py` regenerates the iDDPM case from a checkout of the reference, bit for bit.
"""

import json
import math
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import sdeflow as sf
from sdeflow.core.checkpoint import CheckpointError
from sdeflow.hub.edm import build_network, load_edm

from helpers import cli, seeded_tensor

DATA = Path(__file__).resolve().parents[1] / "data"
CANARY = "canary.txt"


@pytest.mark.parametrize("name", sorted(json.loads((DATA / "edm_manifest.json").read_text())["networks"]))
def test_our_networks_have_the_keys_and_shapes_of_edms_published_networks(name):
    entry = json.loads((DATA / "edm_manifest.json").read_text())["networks"][name]
    with torch.device("meta"):  # shapes only: ImageNet's ADM has 296M parameters
        ours = {f"model.{k}": list(v.shape) for k, v in build_network(entry["init_kwargs"]).state_dict().items()}
    assert ours == entry["tensors"]


# --- Pickles in EDM's layout --------------------------------------------------------------------------------------
def _reconstruct_persistent_obj(meta):  # what the pickle names; never called by sdeflow's reader
    raise AssertionError("EDM's persistence hook was called")


@pytest.fixture()
def persistence(monkeypatch):
    """torch_utils.persistence as a name the pickler can refer to, as EDM's pickles do."""
    package, module = types.ModuleType("torch_utils"), types.ModuleType("torch_utils.persistence")
    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    module._reconstruct_persistent_obj = _reconstruct_persistent_obj
    package.persistence = module
    monkeypatch.setitem(sys.modules, "torch_utils", package)
    monkeypatch.setitem(sys.modules, "torch_utils.persistence", module)
    return module


class Precond(nn.Module):
    def __init__(self, model, class_name, init_kwargs, u=None):
        super().__init__()
        self.model, self.class_name, self._init_kwargs, self._init_args = model, class_name, init_kwargs, ()
        if u is not None:
            self.register_buffer("u", u)


class EDMLayout(pickle.Pickler):
    """Every network module pickled as EDM's persistence does: the hook, called with (class name, state, source
    code)."""

    def reducer_override(self, obj):
        if isinstance(obj, nn.Module) and not isinstance(obj, nn.ModuleDict):
            state = {k: v for k, v in vars(obj).items() if k != "class_name"}
            meta = dict(
                type="class",
                version=6,
                class_name=getattr(obj, "class_name", type(obj).__name__),
                state=state,
                module_src=f"open({CANARY!r}, 'w').write('the pickled source code ran')",
            )
            return _reconstruct_persistent_obj, (meta,)
        return NotImplemented


def edm_pickle(path, case: str, arrays, persistence, tamper=None):
    meta = json.loads(str(arrays["meta"]))["cases"][case]
    net = build_network(meta["init_kwargs"], meta["class_name"])
    state = {
        k.removeprefix(f"{case}/model."): torch.from_numpy(arrays[k])
        for k in arrays.files
        if k.startswith(f"{case}/model.")
    }
    net.load_state_dict(state, strict=True)
    if tamper:
        tamper(net)
    with open(path, "wb") as f:
        EDMLayout(f).dump(
            {"ema": Precond(net, meta["class_name"], meta["init_kwargs"]), "dataset_kwargs": {"resolution": 8}}
        )
    return meta


@pytest.fixture(scope="module")
def arrays():
    return np.load(DATA / "edm_reference.npz")


@pytest.mark.parametrize("case", ["edm_ncsnpp_cond", "vp_ddpmpp", "ve_ncsnpp", "edm_adm_cond"])
def test_an_edm_pickle_gives_edms_denoiser_outputs_and_runs_nothing(tmp_path, monkeypatch, persistence, arrays, case):
    monkeypatch.chdir(tmp_path)
    meta = edm_pickle(tmp_path / "net.pkl", case, arrays, persistence)
    model = load_edm(tmp_path / "net.pkl")
    score = model.score
    x, sigma, y = (torch.from_numpy(arrays[k]) for k in ("x", "sigma", "y"))
    if meta["init_kwargs"].get("label_dim"):
        score = score.condition(y=y)
    with torch.no_grad():
        got = score.x0(x, sigma)  # on EDMSDE, t is sigma and alpha is 1: the denoiser itself
    # float32: |D| reaches 75 at sigma = 40, where c_out F is a difference of large numbers.
    torch.testing.assert_close(got, torch.from_numpy(arrays[f"{case}/output"]), rtol=1e-4, atol=1e-4)
    assert model.details["precond"] == meta["class_name"] and model.shape == (3, 8, 8)
    assert model.label_dim == meta["init_kwargs"].get("label_dim", 0) and model.source == f"edm:{tmp_path / 'net.pkl'}"
    assert not (tmp_path / CANARY).exists()


def test_an_imported_edm_network_samples_with_any_solver(tmp_path, persistence, arrays):
    edm_pickle(tmp_path / "net.pkl", "edm_ncsnpp_cond", arrays, persistence)
    model = load_edm(tmp_path / "net.pkl")
    score, sde = model.score, model.sde
    assert sde == sf.EDMSDE(0.002, 80.0)
    for solver, grid in [(sf.EDMHeun(), sf.KarrasGrid()), (sf.DPMSolverPP(2), sf.LogSNRGrid())]:
        out = sf.sample(score.condition(y=torch.tensor([1, 2])), sde, solver, (2, 3, 8, 8), nfe=9, grid=grid)
        assert bool(torch.isfinite(out.samples).all()) and out.nfe <= 9


def iddpm_pickle(path, persistence, u=None):
    """A pickle of EDM's iDDPMPrecond (its ADM ImageNet baseline's form), with the weights edm_iddpm_reference.npz's
    recipe draws."""
    ref = np.load(DATA / "edm_iddpm_reference.npz")
    meta = json.loads(str(ref["meta"]))
    net = build_network(meta["init_kwargs"], "iDDPMPrecond")
    g, state = torch.Generator().manual_seed(7), {}
    for key, shape in meta["tensors"]:
        if key == "u":
            continue
        state[key.removeprefix("model.")] = seeded_tensor(
            shape, g, 1.0 if "norm" in key and key.endswith("weight") else 0.0
        )
    net.load_state_dict(state, strict=True)
    with open(path, "wb") as f:
        EDMLayout(f).dump(
            {"ema": Precond(net, "iDDPMPrecond", meta["init_kwargs"], torch.from_numpy(ref["u"]) if u is None else u)}
        )
    return ref


def test_edms_iddpm_baseline_gives_edms_denoiser_outputs(tmp_path, monkeypatch, persistence, arrays):
    """iDDPMPrecond: a DhariwalUNet with learned variances, read at the nearest of its 1000 noise levels, as EDM's code
    does."""
    monkeypatch.chdir(tmp_path)
    ref = iddpm_pickle(tmp_path / "adm.pkl", persistence)
    model = load_edm(tmp_path / "adm.pkl")
    score, sde = model.score, model.sde
    u = torch.from_numpy(ref["u"])
    assert (sde.eps, sde.T) == (float(u[999]), 80.0) and model.details["precond"] == "iDDPMPrecond"
    x, sigma, y = (torch.from_numpy(arrays[k]) for k in ("x", "sigma", "y"))
    with torch.no_grad():
        got = score.condition(y=y).x0(x, sigma)
    torch.testing.assert_close(got, torch.from_numpy(ref["output"]), rtol=1e-4, atol=1e-4)
    assert not (tmp_path / CANARY).exists()
    iddpm_pickle(tmp_path / "bad.pkl", persistence, u=torch.ones(10))
    with pytest.raises(
        CheckpointError, match=r"bad.pkl: an iDDPMPrecond pickle holds its noise levels u \(1001 values\)"
    ):
        load_edm(tmp_path / "bad.pkl")


class Payload:
    def __init__(self, fn, arg):
        self.fn, self.arg = fn, arg

    def __reduce__(self):
        return self.fn, (self.arg,)


@pytest.mark.parametrize("fn", [exec, eval], ids=["exec", "eval"])
def test_a_pickle_that_would_run_code_is_refused_and_runs_nothing(tmp_path, monkeypatch, fn):
    monkeypatch.chdir(tmp_path)
    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump({"ema": Payload(fn, f"open({CANARY!r}, 'w').write('ran')")}, f)
    with pytest.raises(
        CheckpointError, match=rf"refused as an EDM network pickle: it names builtins.{fn.__name__}, which is not data"
    ):
        load_edm(tmp_path / "evil.pkl")
    assert not (tmp_path / CANARY).exists()


def test_networks_sdeflow_cannot_rebuild_get_one_clear_line(tmp_path, persistence, arrays):
    edm_pickle(tmp_path / "adm.pkl", "vp_ddpmpp", arrays, persistence)
    data = (
        open(tmp_path / "adm.pkl", "rb").read().replace(b"VPPrecond", b"XYPrecond")
    )  # same length: the pickle stays valid
    (tmp_path / "adm.pkl").write_bytes(data)
    with pytest.raises(
        CheckpointError,
        match="its network is a XYPrecond; sdeflow reads EDMPrecond, VPPrecond, VEPrecond, iDDPMPrecond",
    ):
        load_edm(tmp_path / "adm.pkl")
    pickle.dump({"other": 1}, open(tmp_path / "empty.pkl", "wb"))
    with pytest.raises(CheckpointError, match="no network under 'ema'"):
        load_edm(tmp_path / "empty.pkl")


def test_weights_that_do_not_fit_are_named(tmp_path, persistence, arrays):
    def shrink(net):
        net.dec["8x8_aux_conv"].weight = nn.Parameter(net.dec["8x8_aux_conv"].weight[:, :, :1, :1])

    edm_pickle(tmp_path / "bad.pkl", "vp_ddpmpp", arrays, persistence, tamper=shrink)
    with pytest.raises(
        CheckpointError, match=r"1 of another shape \(dec.8x8_aux_conv.weight: \(3, 8, 1, 1\) for \(3, 8, 3, 3\)\)"
    ):
        load_edm(tmp_path / "bad.pkl")


def test_vp_baseline_noise_range_is_its_training_range(tmp_path, persistence, arrays):
    edm_pickle(tmp_path / "vp.pkl", "vp_ddpmpp", arrays, persistence)
    sde = load_edm(tmp_path / "vp.pkl").sde
    assert sde.eps == pytest.approx(math.sqrt(math.expm1(0.5 * 19.9 * 1e-10 + 0.1 * 1e-5)), rel=1e-9)
    assert sde.T == pytest.approx(math.sqrt(math.expm1(0.5 * 19.9 + 0.1)), rel=1e-9)


@pytest.mark.slow
def test_sdeflow_sample_reads_an_edm_pickle(tmp_path, persistence, arrays):
    edm_pickle(tmp_path / "net.pkl", "edm_ncsnpp_cond", arrays, persistence)
    proc = cli(
        tmp_path,
        "sdeflow.apps.sample",
        f"checkpoint={tmp_path / 'net.pkl'}",
        "checkpoint_format=edm",
        "solver=edm_heun",
        "solver.edm_heun.denoise=true",
        "timesteps=karras",
        "nfe=7",
        "n=4",
        "labels=[1,2]",
        "progress=false",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert proc.returncode == 0, proc.stderr
    assert np.load(next((tmp_path / "run").glob("samples_*.npz")))["nfe"] == 7
    assert not (tmp_path / CANARY).exists()
