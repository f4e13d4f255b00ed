"""guided-diffusion's model files: read as data into sdeflow's DhariwalUNet, equal to ADM's own outputs, strict, and
round-tripped.

tests/data holds facts produced by running guided-diffusion's code (guided_diffusion/script_util.py,
unet.py): the ordered keys and shapes of the five published ImageNet models (README's MODEL_FLAGS), and
the outputs of three small UNetModels (both attention orders, fixed heads, with and without classes)
on weights that the recipe in adm_reference.npz regenerates here from a seed.

`tests/data/make_adm_data.py` regenerates them from a checkout of the reference, bit for bit.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

import sdeflow as sf
from sdeflow.core.checkpoint import CheckpointError, save_torch
from sdeflow.hub.adm import from_adm, to_adm
from sdeflow.nets.song_unet import DhariwalUNet

from helpers import checkpoint_format, cli, seeded_tensor

DATA = Path(__file__).resolve().parents[1] / "data"
MANIFEST = json.loads((DATA / "adm_manifest.json").read_text())["models"]
BETAS = json.loads((DATA / "adm_manifest.json").read_text())["betas"]  # guided-diffusion's get_named_beta_schedule
REFERENCE = np.load(DATA / "adm_reference.npz")
CASES = json.loads(str(REFERENCE["meta"]))["cases"]
SMALL = [
    "network.img_resolution=16",
    "network.model_channels=128",
    "network.channel_mult=[1,2]",
    "network.num_blocks=1",
    "network.attn_resolutions=[16,8]",
]


def fmt(model: str, *overrides):
    """conf/checkpoint_format/adm_<model>.yaml, as the apps compose it."""
    return checkpoint_format(f"adm_{model}", *overrides)


def case_format(case):
    """A small network with the case's attention and classes, from the 64x64 config."""
    flags = CASES[case]["flags"]
    heads = [
        f"network.num_heads={flags.get('num_heads', -1)}",
        f"network.channels_per_head={flags.get('num_head_channels', 64)}",
        f"network.label_dim={1000 if flags['class_cond'] else 0}",
        f"new_attention_order={flags.get('use_new_attention_order', False)}",
    ]
    return instantiate(fmt("64x64_diffusion", *SMALL, *heads))


def reference_state(case):
    """ADM's state dict of the case, by the reference's recipe: each tensor in order from one seeded generator."""
    meta = CASES[case]
    g, state = torch.Generator().manual_seed(meta["seed"]), {}
    for key, shape in meta["tensors"]:
        state[key] = seeded_tensor(shape, g, 1.0 if key.endswith("weight") else 0.0)
    return state


@pytest.mark.parametrize("model", sorted(MANIFEST))
def test_each_config_describes_the_published_network_key_for_key(model):
    node = instantiate(fmt(model))
    with torch.device("meta"):  # shapes only: the 512 x 512 model has 559M parameters
        exported = to_adm(DhariwalUNet(**node.network), node.new_attention_order)
    assert [[k, list(v.shape)] for k, v in exported.items()] == MANIFEST[model]["tensors"]
    flags = MANIFEST[model]["flags"]
    assert node.new_attention_order == flags.get("use_new_attention_order", False)
    np.testing.assert_allclose(node.sde.betas, BETAS[flags["noise_schedule"]], rtol=1e-13, atol=0)


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_imported_network_equals_adms(case):
    node, state = case_format(case), reference_state(case)
    net = DhariwalUNet(**node.network).eval()
    net.load_state_dict(from_adm(state, net, node.new_attention_order), strict=True)
    x, t, y = (torch.from_numpy(REFERENCE[k]) for k in ("x", "t", "y"))
    onehot = torch.nn.functional.one_hot(y, 1000).float() if net.label_dim else None
    with torch.no_grad():
        ours = net(x, t.float(), onehot)
    torch.testing.assert_close(ours, torch.from_numpy(REFERENCE[f"{case}/out"]), rtol=1e-4, atol=1e-4)
    back = to_adm(net, node.new_attention_order)
    assert list(back) == list(state) and all(torch.equal(back[k], v) for k, v in state.items())


@pytest.mark.parametrize("case", ["cond_new_order", "uncond_legacy"])
def test_a_model_file_gives_adms_noise_at_its_training_timesteps(case, tmp_path):
    node = case_format(case)
    save_torch(tmp_path / "model.pt", reference_state(case))
    model = node.load(tmp_path / "model.pt")
    score, sde = model.score, model.sde
    assert model.source == f"guided-diffusion:64x64_diffusion:{tmp_path / 'model.pt'}"
    assert model.shape == (3, 16, 16) and sde.N == 1000
    assert model.label_dim == (1000 if CASES[case]["flags"]["class_cond"] else 0)
    x, k, y = (torch.from_numpy(REFERENCE[k]) for k in ("x", "t", "y"))
    if score.model.label_dim:
        score = score.condition(y=y)
    with torch.no_grad():
        eps = score.eps(x, (k + 1) / 1000)  # timestep k is t = (k + 1) / N
    torch.testing.assert_close(eps, torch.from_numpy(REFERENCE[f"{case}/out"])[:, :3], rtol=1e-4, atol=1e-4)


def test_an_imported_adm_samples_with_any_solver(tmp_path):
    node = case_format("cond_new_order")
    save_torch(tmp_path / "model.pt", reference_state("cond_new_order"))
    model = node.load(tmp_path / "model.pt")
    score, sde = model.score, model.sde
    score = score.condition(y=torch.tensor([3, 4]))
    for solver, grid in [(sf.DDIM(), sf.LeadingTimesteps()), (sf.DPMSolverPP(2), sf.LogSNRGrid())]:
        out = sf.sample(score, sde, solver, (2, 3, 16, 16), nfe=4, grid=grid, seed=0)
        assert bool(torch.isfinite(out.samples).all()) and out.nfe == 4


def test_a_file_of_another_config_is_refused_in_one_line(tmp_path):
    path = tmp_path / "model.pt"
    save_torch(path, reference_state("cond_four_heads"))
    node = instantiate(
        fmt("64x64_diffusion", *SMALL, "network.label_dim=0")
    )  # the file has classes: label_emb is left over
    with pytest.raises(CheckpointError, match=r"tensors the config's network does not have \(label_emb.weight\)") as e:
        node.load(path)
    assert "\n" not in str(e.value)
    node = instantiate(fmt("64x64_diffusion", *SMALL[:1], "network.model_channels=192", *SMALL[2:]))
    with pytest.raises(CheckpointError, match="another shape"):
        node.load(path)
    torch.save({"model": {"w": torch.zeros(1)}, "step": 1}, path)
    with pytest.raises(CheckpointError, match="not a guided-diffusion model file"):
        node.load(path)


def test_a_file_that_would_run_code_is_refused_and_runs_nothing(tmp_path):
    class Payload:
        def __reduce__(self):
            return (exec, (f"open({str(tmp_path / 'ran')!r}, 'w')",))

    torch.save({"time_embed.0.weight": Payload()}, tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match="refused"):
        instantiate(fmt("64x64_diffusion")).load(tmp_path / "model.pt")
    assert not (tmp_path / "ran").exists()


def test_sdeflow_sample_reads_a_guided_diffusion_model(tmp_path):
    save_torch(tmp_path / "model.pt", reference_state("cond_new_order"))
    run = cli(
        tmp_path,
        "sdeflow.apps.sample",
        f"checkpoint={tmp_path / 'model.pt'}",
        "checkpoint_format=adm_64x64_diffusion",
        *(f"checkpoint_format.{o}" for o in SMALL),
        "checkpoint_format.network.channels_per_head=64",
        "solver=ddim",
        "timesteps=leading",
        "nfe=3",
        "n=2",
        "labels=[5,6]",
        "progress=false",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert run.returncode == 0, run.stderr[-2000:]
    samples = np.load(next((tmp_path / "run").glob("samples_*.npz")))
    assert samples["nfe"] == 3 and np.isfinite(samples[samples.files[0]]).all()
