"""Importing diffusers' UNet2DModel folders: the same outputs as diffusers, DDIM equal to diffusers' DDIMScheduler loop,
strict weights, and files read as data."""

import json
import pickle

import numpy as np
import pytest
import torch

import sdeflow as sf
from sdeflow.core.checkpoint import CheckpointError
from sdeflow.hub import DiscreteTimeModel, Loaded, load_diffusers

from helpers import cli

diffusers = pytest.importorskip("diffusers")

UNET = dict(
    sample_size=8,
    in_channels=3,
    out_channels=3,
    block_out_channels=(16, 32),
    layers_per_block=1,
    norm_num_groups=8,
    down_block_types=("DownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    attention_head_dim=8,
)


def unet_folder(path, prediction="epsilon", schedule="linear", pipeline=False):
    """A UNet2DModel with random weights (no download) saved as diffusers saves it, with its scheduler config."""
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(**UNET).eval()
    with torch.no_grad():  # diffusers zero-initialises some output layers; random weights make every key matter
        for p in unet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    sched = diffusers.DDIMScheduler(num_train_timesteps=1000, beta_schedule=schedule, prediction_type=prediction)
    unet_dir = path / "unet" if pipeline else path
    unet.save_pretrained(unet_dir, safe_serialization=True)
    sched.save_pretrained(path / "scheduler" if pipeline else unet_dir)
    return unet


@pytest.mark.parametrize("pipeline", [False, True], ids=["unet folder", "pipeline folder"])
def test_the_wrapped_unet_gives_diffusers_outputs_at_the_training_timesteps(tmp_path, pipeline):
    unet = unet_folder(tmp_path, pipeline=pipeline)
    model = load_diffusers(tmp_path)
    score, sde = model.score, model.sde
    assert isinstance(model, Loaded) and sde == sf.DiscreteVPSDE(sf.linear_betas())
    assert (model.shape, model.label_dim) == ((3, 8, 8), 0)
    assert model.source == f"diffusers:{tmp_path / 'unet' if pipeline else tmp_path}"
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    for k in (0, 1, 500, 999):
        t = torch.full((4,), (k + 1) / 1000)  # float32, as samplers pass it
        with torch.no_grad():
            torch.testing.assert_close(score.model(x, t), unet(x, k).sample, rtol=0, atol=0)


class Recorder(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net, self.seen = net, []

    def forward(self, x, k, **cond):
        self.seen.append(k.clone())
        return self.net(x, k, **cond)


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_ddim_through_sdeflow_equals_diffusers_ddim_scheduler(tmp_path, prediction):
    unet = unet_folder(tmp_path, prediction=prediction)
    model = load_diffusers(tmp_path)
    score, sde = model.score, model.sde
    recorder = Recorder(score.model.net)
    score.model.net = recorder
    x_T = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    steps = 10
    ours = sf.DDIM().sample(score, sde, x_T.clone(), sf.LeadingTimesteps(offset=1).__call__(sde, steps)).samples

    sched = diffusers.DDIMScheduler(
        num_train_timesteps=1000,
        beta_schedule="linear",
        prediction_type=prediction,
        steps_offset=1,
        set_alpha_to_one=False,
        clip_sample=False,
    )
    sched.set_timesteps(steps)
    x = x_T.clone()
    with torch.no_grad():
        for t in sched.timesteps:
            x = sched.step(unet(x, t).sample, t, x, eta=0.0).prev_sample
    # The model saw exactly the scheduler's integer timesteps, and the samples agree to float32 rounding
    # (diffusers' alphas are float32 products, sdeflow's float64).
    np.testing.assert_array_equal(
        torch.stack([k[0] for k in recorder.seen]).numpy(), sched.timesteps.numpy().astype(np.float32)
    )
    torch.testing.assert_close(ours, x, rtol=1e-4, atol=1e-4)


def test_other_solvers_sample_the_imported_model_on_continuous_grids(tmp_path):
    unet_folder(tmp_path, schedule="squaredcos_cap_v2")
    model = load_diffusers(tmp_path)
    score, sde = model.score, model.sde
    assert sde == sf.DiscreteVPSDE(sf.cosine_betas())
    out = sf.sample(score, sde, sf.DPMSolverPP(2), (2, 3, 8, 8), nfe=6, grid=sf.LogSNRGrid())
    assert out.samples.shape == (2, 3, 8, 8) and bool(torch.isfinite(out.samples).all()) and out.nfe == 6


def test_weights_that_do_not_fit_are_refused_naming_the_keys(tmp_path):
    from safetensors.torch import load_file, save_file

    unet_folder(tmp_path)
    file = tmp_path / "diffusion_pytorch_model.safetensors"
    state = load_file(str(file))
    del state["conv_out.bias"]
    save_file(state, str(file))
    with pytest.raises(CheckpointError, match="do not fit.*conv_out.bias"):
        load_diffusers(tmp_path)


class Payload:
    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('x')",))


def test_a_pickled_weights_file_that_would_run_code_is_refused_and_runs_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    unet_folder(tmp_path)
    (tmp_path / "diffusion_pytorch_model.safetensors").unlink()
    with open(tmp_path / "diffusion_pytorch_model.bin", "wb") as f:
        pickle.dump({"conv_out.bias": Payload()}, f)
    with pytest.raises(CheckpointError, match="not a readable weights file"):
        load_diffusers(tmp_path)
    assert not (tmp_path / "PWNED").exists()


def test_unknown_schedules_and_folders_get_one_clear_line(tmp_path):
    unet_folder(tmp_path)
    cfg = json.loads((tmp_path / "scheduler_config.json").read_text())
    (tmp_path / "scheduler_config.json").write_text(json.dumps({**cfg, "prediction_type": "flow"}))
    with pytest.raises(CheckpointError, match="prediction_type 'flow' is not one sdeflow reads"):
        load_diffusers(tmp_path)
    with pytest.raises(CheckpointError, match="no config.json"):
        load_diffusers(tmp_path / "nowhere")


def test_discrete_time_model_snaps_float32_training_times_to_their_timesteps():
    seen = []
    model = DiscreteTimeModel(lambda x, k: seen.append(k) or x, 1000)
    t = torch.arange(1, 1001, dtype=torch.float32) / 1000
    model(torch.zeros(1000, 1), t)
    assert torch.equal(seen[0], torch.arange(1000, dtype=torch.float32))
    model(torch.zeros(1, 1), torch.tensor([0.5005]))  # between training times: the fractional timestep
    assert seen[1].item() == pytest.approx(499.5, abs=1e-3)


@pytest.mark.slow
def test_sdeflow_sample_reads_a_diffusers_folder(tmp_path):
    unet_folder(tmp_path / "model", pipeline=True)
    proc = cli(
        tmp_path,
        "sdeflow.apps.sample",
        f"checkpoint={tmp_path / 'model'}",
        "checkpoint_format=diffusers",
        "solver=[ddim,unipc_2_bh2]",
        "nfe=5",
        "n=4",
        "progress=false",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert proc.returncode == 0, proc.stderr
    assert len(list((tmp_path / "run").glob("samples_*.npz"))) == 2


@pytest.mark.slow
def test_sdeflow_eval_scores_a_diffusers_folder_against_the_data_it_is_given(tmp_path):
    torch.manual_seed(0)
    diffusers.UNet2DModel(**{**UNET, "in_channels": 1, "out_channels": 1}).save_pretrained(
        tmp_path / "model", safe_serialization=True
    )
    args = [
        f"checkpoint={tmp_path / 'model'}",
        "checkpoint_format=diffusers",
        "solver=ddim",
        "nfe=4",
        "n=32",
        "eval=identity",
        "progress=false",
    ]
    missing = cli(tmp_path, "sdeflow.apps.evaluate", *args, f"hydra.run.dir={tmp_path / 'a'}")
    assert missing.returncode != 0 and "records no training data to score against: give data=" in missing.stderr
    assert "Traceback" not in missing.stderr
    proc = cli(tmp_path, "sdeflow.apps.evaluate", *args, "data=digits", f"hydra.run.dir={tmp_path / 'b'}")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "b" / "results.csv").read_text().count("\n") == 3  # header, floor, ddim
