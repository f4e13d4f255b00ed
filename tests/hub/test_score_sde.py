"""score_sde's `checkpoint_*.pth`: read as data into sdeflow's SongUNet, equal to score_sde's own outputs, strict, and
round-tripped.

tests/data holds facts produced by running score_sde_pytorch's code (models/ncsnpp.py, configs/): the
ordered keys and shapes of every published continuous CIFAR-10 and 256-pixel config, the tensors its EMA
does not keep, the configs' settings, and the outputs of four small networks of each family (VE NCSN++
with its residual input path, VE NCSN++ with input and output skip pyramids, VP and sub-VP DDPM++) on
weights that the recipe in score_sde_reference.npz regenerates here from a seed.

`tests/data/make_score_sde_data.py` regenerates them from a checkout of the reference, bit for bit.
"""

import json
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

import sdeflow as sf
from sdeflow.core.checkpoint import CheckpointError, save_torch
from sdeflow.hub.score_sde import NOT_TRAINED, from_score_sde, layout, noise_levels, save_score_sde, to_score_sde
from sdeflow.nets.song_unet import SongUNet

from helpers import checkpoint_format, cli, seeded_tensor

DATA = Path(__file__).resolve().parents[1] / "data"
MANIFEST = json.loads((DATA / "score_sde_manifest.json").read_text())["configs"]
REFERENCE = np.load(DATA / "score_sde_reference.npz")
CASES = json.loads(str(REFERENCE["meta"]))["cases"]
SMALL = [
    "network.img_resolution=16",
    "network.model_channels=16",
    "network.channel_mult=[1,2,2]",
    "network.num_blocks=2",
    "network.attn_resolutions=[8]",
]


def fmt(config: str, *overrides):
    """The checkpoint_format node of conf/checkpoint_format/score_sde_<score_sde config, / as _, no cifar10_>, as the
    apps compose it."""
    return checkpoint_format("score_sde_" + config.replace("/", "_").replace("cifar10_", ""), *overrides)


def seeded_weights(entries, seed):
    """The reference's recipe (score_sde_reference.npz's meta): each tensor in state-dict order from one generator."""
    g = torch.Generator().manual_seed(seed)
    out = OrderedDict()
    for key, shape in entries:
        if key.endswith(".W") and len(shape) == 1:  # the Fourier projection's frequencies, scale 16
            out[key] = (torch.randn(shape, generator=g, dtype=torch.float64) * 16).float()
        else:
            out[key] = seeded_tensor(shape, g, 1.0 if "GroupNorm" in key and key.endswith("weight") else 0.0)
    return out


def reference_state(case):
    meta = CASES[case]
    levels = MANIFEST[meta["config"]]["config"]["sigmas"]
    weights = seeded_weights([e for e in meta["tensors"] if e[0] != "sigmas"], meta["seed"])
    return OrderedDict([("sigmas", noise_levels(levels[1], levels[0], levels[2]))] + list(weights.items())), meta


def small_format(case):
    return fmt(CASES[case]["config"], *SMALL)


# --- The published configs ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("config", sorted(MANIFEST))
def test_each_config_describes_the_published_network_key_for_key(config):
    entry, node = MANIFEST[config], fmt(config)
    with torch.device("meta"):  # shapes only: the deep models have 107M parameters
        net = SongUNet(**instantiate(node).network)
        exported = to_score_sde(net, torch.zeros(entry["config"]["sigmas"][2]))
    # Same keys, in the same order (the EMA's bare list follows it), with the same shapes.
    assert [[k.removeprefix("module."), list(v.shape)] for k, v in exported.items()] == entry["tensors"]
    not_trained = ["sigmas"] + [
        f"all_modules.{i}.{name}" for i, (kind, _) in enumerate(layout(net)) for name in NOT_TRAINED.get(kind, ())
    ]
    assert not_trained == entry["not_in_ema"]


@pytest.mark.parametrize("config", sorted(MANIFEST))
def test_each_config_samples_on_the_sde_it_was_trained_on(config):
    facts, node = MANIFEST[config]["config"], instantiate(fmt(config))
    assert facts["continuous"] and list(node.noise_levels) == [
        facts["sigma_min"],
        facts["sigma_max"],
        facts["num_scales"],
    ]
    assert (
        node.network["img_resolution"] == facts["image_size"] and node.network["in_channels"] == facts["num_channels"]
    )
    sde = node.sde
    if facts["sde"] == "vesde":
        # score_sde's VE data are in [0, 1] (not centered); sdeflow's in [-1, 1]: every sigma doubles.
        assert not facts["centered"] and facts["scale_by_sigma"]
        assert isinstance(sde, sf.VESDE) and (sde.sigma_min, sde.sigma_max) == (
            2 * facts["sigma_min"],
            2 * facts["sigma_max"],
        )
        assert isinstance(node.scaling, sf.hub.LogSigmaLabels) and node.scaling.unit == 2.0
    else:
        assert facts["centered"] and not facts["scale_by_sigma"]
        assert type(sde) is {"vpsde": sf.VPSDE, "subvpsde": sf.SubVPSDE}[facts["sde"]]
        assert (sde.beta_min, sde.beta_max) == (facts["beta_min"], facts["beta_max"])
        assert isinstance(node.scaling, sf.hub.TimeLabels) and node.scaling.scale == facts["num_scales"] - 1
        assert type(node.scaling.sde) is type(sde) and node.scaling.sde.beta_max == sde.beta_max


# --- Equal to score_sde's own network -------------------------------------------------------------------------------
@pytest.mark.parametrize("case", sorted(CASES))
def test_the_imported_network_equals_score_sdes(case):
    state, meta = reference_state(case)
    node = instantiate(small_format(case))
    net = SongUNet(**node.network).eval()
    net.load_state_dict(from_score_sde(state, net, sigmas=state["sigmas"]), strict=True)
    x, label, out = (torch.from_numpy(REFERENCE[f"{case}/{k}"]) for k in ("x", "label", "out"))
    with torch.no_grad():
        if meta["scale_by_sigma"]:  # VE: the network sees 2 x - 1 and log(sigma); score_sde divides its output by sigma
            ours, theirs = net(2 * x - 1, label.log()), out * label[:, None, None, None]
        else:
            ours, theirs = net(x, label), out
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4 * float(theirs.abs().max()))


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_checkpoint_file_gives_score_sdes_score_from_the_ema_weights(case, tmp_path):
    """The file as score_sde writes it: `module.` keys, raw weights in `model`, the averaged ones in
    `ema.shadow_params`."""
    state, meta = reference_state(case)
    not_trained = set(MANIFEST[meta["config"]]["not_in_ema"])
    shadow = [v for k, v in state.items() if k not in not_trained]
    raw = OrderedDict((f"module.{k}", v if k in not_trained else v + 0.05) for k, v in state.items())
    save_torch(
        tmp_path / "checkpoint_8.pth",
        {
            "optimizer": {"state": {}, "param_groups": []},
            "model": raw,
            "step": 7,
            "ema": {"decay": 0.9999, "num_updates": 7, "shadow_params": shadow},
        },
    )
    x, label, out = (torch.from_numpy(REFERENCE[f"{case}/{k}"]) for k in ("x", "label", "out"))
    model = instantiate(small_format(case)).load(tmp_path / "checkpoint_8.pth")
    score, sde = model.score, model.sde
    assert (model.shape, model.label_dim, model.details["step"]) == ((3, 16, 16), 0, 7)
    assert model.source == f"score_sde:{meta['config']}:{tmp_path / 'checkpoint_8.pth'}"
    if meta["scale_by_sigma"]:
        # score_sde's VE model returns the score on [0, 1] data at its sigma; sdeflow's x is 2 x - 1, its sigma twice.
        t = sde.t_from_nsr(2 * label)
        ours, theirs = score(2 * x - 1, t), 0.5 * out
    else:
        # score_sde's get_score_fn: score = -model(x, 999 t) / std(t).
        t = label / 999
        ours, theirs = score(x, t), -out / sde.sigma(t)[:, None, None, None]
    torch.testing.assert_close(ours, theirs, rtol=2e-4, atol=2e-4 * float(theirs.abs().max()))
    raw_score = instantiate(small_format(case)).load(tmp_path / "checkpoint_8.pth", use_ema=False).score
    assert (raw_score(x, t) - ours).abs().max() > 1e-3  # the raw weights are another network


def test_export_then_import_is_the_identity_on_score_sdes_layout(tmp_path):
    state, _ = reference_state("ve_ncsnpp_skip")
    net = SongUNet(**instantiate(small_format("ve_ncsnpp_skip")).network)
    net.load_state_dict(from_score_sde(state, net), strict=True)
    back = to_score_sde(net, state["sigmas"])
    assert list(back) == [f"module.{k}" for k in state]
    assert all(torch.equal(back[f"module.{k}"], v) for k, v in state.items())


@pytest.mark.parametrize("case", ["ve_ncsnpp", "vp_ddpmpp"])
def test_our_ncsnpp_exported_and_imported_back_gives_identical_samples(case, tmp_path):
    fmt_ = instantiate(small_format(case))
    net = SongUNet(**fmt_.network).eval()
    with torch.no_grad():  # a trained network's last layers are not zero, as a fresh one's are
        for p in net.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    sigmas = noise_levels(*fmt_.noise_levels[:2], fmt_.noise_levels[2])
    save_score_sde(tmp_path / "checkpoint_1.pth", net, sigmas, step=1)
    model = fmt_.load(tmp_path / "checkpoint_1.pth")
    score, sde = model.score, model.sde
    direct = sf.ScoreFunction(
        sf.hub.ScaledNoise(sf.hub.edm.LabelledNet(net), sde, fmt_.scaling), sde, sf.EpsPrediction()
    )
    a = sf.sample(score, sde, sf.DPMSolverPP(2), (3, 3, 16, 16), nfe=4, seed=0).samples
    b = sf.sample(direct, sde, sf.DPMSolverPP(2), (3, 3, 16, 16), nfe=4, seed=0).samples
    assert torch.equal(a, b) and bool(torch.isfinite(a).all())


# --- Refused clearly ------------------------------------------------------------------------------------------------
@pytest.fixture()
def small_file(tmp_path):
    state, meta = reference_state("vp_ddpmpp")
    not_trained = set(MANIFEST[meta["config"]]["not_in_ema"])
    checkpoint = {
        "model": OrderedDict((f"module.{k}", v) for k, v in state.items()),
        "step": 3,
        "ema": {
            "decay": 0.9999,
            "num_updates": 3,
            "shadow_params": [v for k, v in state.items() if k not in not_trained],
        },
    }
    return tmp_path / "checkpoint_3.pth", checkpoint


def refusal(path, checkpoint, config="vp/cifar10_ddpmpp_continuous", overrides=SMALL):
    save_torch(path, checkpoint)
    with pytest.raises(CheckpointError) as e:
        instantiate(fmt(config, *overrides)).load(path)
    message = str(e.value)
    assert "\n" not in message and str(path) in message
    return message


def test_a_checkpoint_of_another_depth_is_refused_naming_the_module_count(small_file):
    path, checkpoint = small_file
    assert "numbered modules" in refusal(path, checkpoint, overrides=[*SMALL, "network.num_blocks=3"])


def test_a_checkpoint_of_other_noise_levels_is_refused(small_file):
    path, checkpoint = small_file
    assert "noise levels" in refusal(path, checkpoint, overrides=[*SMALL, "noise_levels=[0.01,380.0,2000]"])


def test_an_ema_list_of_another_length_is_refused(small_file):
    path, checkpoint = small_file
    checkpoint["ema"]["shadow_params"] = checkpoint["ema"]["shadow_params"][:-1]
    assert "EMA holds" in refusal(path, checkpoint)


def test_a_renamed_tensor_is_refused(small_file):
    path, checkpoint = small_file
    model = checkpoint["model"]
    model["module.all_modules.5.Conv_9.weight"] = model.pop("module.all_modules.5.Conv_0.weight")
    assert "Conv_9" in refusal(path, checkpoint)


def test_a_network_of_another_width_is_refused_by_shape(small_file):
    path, checkpoint = small_file
    assert "another shape" in refusal(path, checkpoint, overrides=[*SMALL[:1], "network.model_channels=32", *SMALL[2:]])


def test_a_file_that_would_run_code_is_refused_and_runs_nothing(tmp_path):
    class Payload:
        def __reduce__(self):
            return (exec, (f"open({str(tmp_path / 'ran')!r}, 'w')",))

    path = tmp_path / "checkpoint_1.pth"
    torch.save({"model": {}, "payload": Payload()}, path)
    with pytest.raises(CheckpointError, match="refused"):
        instantiate(fmt("vp/cifar10_ddpmpp_continuous")).load(path)
    assert not (tmp_path / "ran").exists()


def test_sdeflow_sample_reads_a_score_sde_checkpoint(tmp_path, small_file):
    path, checkpoint = small_file
    save_torch(path, checkpoint)
    run = cli(
        tmp_path,
        "sdeflow.apps.sample",
        f"checkpoint={path}",
        "checkpoint_format=score_sde_vp_ddpmpp_continuous",
        *(f"checkpoint_format.{o}" for o in SMALL),
        "solver=dpmpp_2m",
        "nfe=3",
        "n=4",
        "batch_size=4",
        "device=cpu",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert run.returncode == 0, run.stderr[-2000:]
    samples = np.load(next((tmp_path / "run").rglob("samples*.npz")))
    x = samples[samples.files[0]]
    assert x.shape == (4, 3, 16, 16) and np.isfinite(x).all()
