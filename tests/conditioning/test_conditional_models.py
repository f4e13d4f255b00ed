"""Class-conditional networks, training and sampling: labels at the door, label dropout, the commands."""

import json
import os
import sys

import pytest
import torch

import sdeflow as sf
from sdeflow.nets import EDMPrecond, LabelEmbedding, NCSNpp, ScoreMLP
from sdeflow.training.data import Dataset, digits
from sdeflow.training.losses import DSMLoss
from sdeflow.training.trainer import Trainer

from helpers import cli


def test_networks_take_labels_exactly_when_conditional():
    x, t = torch.zeros(4, 2), torch.full((4,), 0.5)
    with pytest.raises(ValueError, match="class-conditional \\(label_dim=3\\)"):
        ScoreMLP(2, 16, 1, label_dim=3)(x, t)
    with pytest.raises(ValueError, match="unconditional"):
        ScoreMLP(2, 16, 1)(x, t, y=torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="-1..2"):
        ScoreMLP(2, 16, 1, label_dim=3)(x, t, y=torch.tensor([0, 1, 2, 3]))
    net = NCSNpp(
        in_channels=1,
        resolution=8,
        nf=8,
        ch_mult=(1, 2),
        num_res_blocks=1,
        attn_resolutions=(),
        dropout=0.0,
        label_dim=10,
    )
    with (
        torch.no_grad()
    ):  # its residual branches and output layer start at zero: random weights make the labels visible
        for p in net.parameters():
            p.normal_(0, 0.2, generator=torch.Generator().manual_seed(p.numel()))
    images = torch.randn(4, 1, 8, 8)
    pre = EDMPrecond(net, sf.VPSDE())
    assert pre.label_dim == 10
    a = pre(images, t, y=torch.tensor([0, 1, 2, 3]))
    b = pre(images, t, y=torch.tensor([0, 1, 2, 4]))
    # Each sample sees its own label (to float rounding: the batch's other labels change the kernels' order).
    assert torch.allclose(a[:3], b[:3], atol=1e-6) and (a[3] - b[3]).abs().max() > 1e-4


def test_the_null_label_embeds_to_zero():
    emb = LabelEmbedding(5, 7)
    out = emb(torch.tensor([-1, 0, 4]))
    assert torch.equal(out[0], torch.zeros(7)) and not torch.equal(out[1], out[2])


def test_label_dropout_replaces_the_stated_share_with_the_null_class():
    seen = []

    def model(x, t, y=None):
        seen.append(y)
        return torch.zeros_like(x)

    n = 20_000
    loss = DSMLoss(sf.VPSDE(), sf.EpsPrediction(), label_dropout=0.3)
    loss(model, torch.zeros(n, 2), sf.PerSampleNoise(0, n), labels=torch.ones(n, dtype=torch.long))
    dropped = float((seen[0] == -1).double().mean())
    assert abs(dropped - 0.3) < 5 * (0.3 * 0.7 / n) ** 0.5
    assert bool((seen[0][seen[0] != -1] == 1).all())
    with pytest.raises(ValueError, match="label_dropout"):
        DSMLoss(sf.VPSDE(), label_dropout=1.0)


def test_a_conditional_model_needs_a_labelled_dataset():
    data = Dataset(torch.randn(64, 2), name="points")
    with pytest.raises(ValueError, match="has no labels"):
        Trainer(ScoreMLP(2, 16, 1, label_dim=3), DSMLoss(sf.VPSDE()), data, steps=2)
    with pytest.raises(ValueError, match="no class labels"):
        data.batch(4, torch.Generator(), labels=True)


def test_conditional_training_runs_on_labelled_digits():
    data = digits()
    net = NCSNpp(in_channels=1, resolution=8, nf=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), label_dim=10)
    trainer = Trainer(
        net, DSMLoss(sf.VPSDE(), sf.EpsPrediction(), label_dropout=0.1), data, steps=4, batch_size=16, seed=3
    )
    losses = trainer.fit(progress=False)
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))


@pytest.fixture(scope="module")
def conditional_checkpoint(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("conditional")
    proc = cli(
        tmp,
        "sdeflow.apps.train",
        "data=digits",
        "model=ncsnpp_tiny",
        "model.net.nf=8",
        "model.label_dim=10",
        "train.steps=10",
        "train.batch_size=16",
        "sample.every=0",
        "sample.n=10",
        "sample.nfe=4",
        "progress=false",
        f"hydra.run.dir={tmp / 'run'}",
    )
    assert proc.returncode == 0, proc.stderr
    return tmp / "run" / "checkpoint.pt"


@pytest.mark.slow
def test_the_sample_command_takes_labels_and_guidance(tmp_path, conditional_checkpoint):
    common = [f"checkpoint={conditional_checkpoint}", "solver=ddim", "nfe=4", "n=6", "progress=false"]
    proc = cli(
        tmp_path, "sdeflow.apps.sample", *common, "labels=[3,7]", "guidance.w=2", f"hydra.run.dir={tmp_path / 'a'}"
    )
    assert proc.returncode == 0, proc.stderr
    row = json.loads((tmp_path / "a" / "results.json").read_text())["rows"][0]
    assert row["labels"] == [3, 7] and row["guidance_w"] == 2.0 and row["nfe"] == 4
    missing = cli(tmp_path, "sdeflow.apps.sample", *common, f"hydra.run.dir={tmp_path / 'b'}")
    assert missing.returncode != 0 and "class-conditional (label_dim=10): give labels" in missing.stderr
    wrong = cli(tmp_path, "sdeflow.apps.sample", *common, "labels=[12]", f"hydra.run.dir={tmp_path / 'c'}")
    assert wrong.returncode != 0 and "labels must be classes in 0..9" in wrong.stderr
    # A tuned grid follows the guided, labelled flow, and is cached under the labels and guidance.
    tuned = [
        *common[:1],
        "solver=dpmpp_2m",
        "nfe=4",
        "n=6",
        "progress=false",
        "timesteps=auto",
        "timesteps.pilot=3",
        "timesteps.maxiter=6",
    ]
    runs = {}
    for run, extra in (
        ("d", ["labels=[3,7]", "guidance.w=2"]),
        ("e", ["labels=[3,7]", "guidance.w=2"]),
        ("f", ["labels=[1]"]),
    ):
        proc = cli(tmp_path, "sdeflow.apps.sample", *tuned, *extra, f"hydra.run.dir={tmp_path / run}")
        assert proc.returncode == 0, proc.stderr
        runs[run] = json.loads((tmp_path / run / "results.json").read_text())["rows"][0]["grid_tuning"]
    assert runs["d"]["cached"] is False and runs["e"]["cached"] is True and runs["f"]["cached"] is False


@pytest.mark.slow
def test_a_short_conditional_training_beats_chance_by_a_wide_margin():
    # 1500 steps of the tiny conditional NCSN++ on digits' training split (about 2 minutes on 2 cores), then 30 samples
    # per class at w = 1 with DPM-Solver++ at 20 NFE, classified by the small CNN trained on the same split.
    # Chance is 0.1; the benchmark (benchmarks/conditional_digits.py) measures the full training.
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks"))
    from conditional_digits import train_model

    from sdeflow.eval.features import TrainedClassifier

    score, sde = train_model(1500)
    train_set, held_out = digits().split(0.8, seed=0)
    classifier = TrainedClassifier(steps=300).fit(train_set, held_out)
    labels = torch.arange(10).repeat_interleave(30)
    out = sf.sample(
        sf.ClassifierFreeGuidance(w=1.0).bind(score, labels),
        sde,
        sf.DPMSolverPP(2),
        (300, 1, 8, 8),
        nfe=20,
        grid=sf.LogSNRGrid(),
        seed=1,
    )
    with torch.no_grad():
        accuracy = float((classifier.net(out.samples.clamp(-1, 1)).argmax(1) == labels).double().mean())
    assert accuracy > 0.5, accuracy
