"""Networks, losses, data, the training loop and its checkpoints."""

import gzip
import os
import pickle

import numpy as np
import pytest
import torch

import sdeflow as sf
from sdeflow.core.checkpoint import CheckpointError, load_checkpoint
from sdeflow.nets import EDMPrecond, NCSNpp, ScoreMLP, SinusoidalEmbedding
from sdeflow.training import data as D
from sdeflow.training.losses import DSMLoss, LikelihoodWeighting
from sdeflow.training.trainer import Trainer

from helpers import cli


# --- Networks -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "resolution, ch_mult, attn",
    [(8, (1, 2), (4,)), (16, (1, 2, 2), (8,)), (28, (1, 2, 2), (7,)), (32, (1, 2, 2, 2), (16,))],
)
@pytest.mark.parametrize("biggan", [True, False])
def test_ncsnpp_shapes(resolution, ch_mult, attn, biggan):
    net = NCSNpp(
        in_channels=3,
        resolution=resolution,
        nf=16,
        ch_mult=ch_mult,
        num_res_blocks=1,
        attn_resolutions=attn,
        biggan=biggan,
    )
    x = torch.randn(2, 3, resolution, resolution)
    assert net(x, torch.rand(2)).shape == x.shape


def test_network_variants_and_errors():
    assert ScoreMLP(dim=5)(torch.randn(3, 5), torch.rand(3)).shape == (3, 5)
    ddpmpp = NCSNpp(
        in_channels=1,
        resolution=8,
        nf=16,
        ch_mult=(1, 2),
        num_res_blocks=1,
        embedding=SinusoidalEmbedding(16),
        fir=False,
    )
    assert ddpmpp(torch.randn(2, 1, 8, 8), torch.rand(2)).shape == (2, 1, 8, 8)
    edm = EDMPrecond(NCSNpp(in_channels=1, resolution=8, nf=16, ch_mult=(1, 2), num_res_blocks=1), sf.VPSDE())
    assert edm(torch.randn(2, 1, 8, 8), torch.rand(2) * 0.9 + 0.05).shape == (2, 1, 8, 8)
    with pytest.raises(ValueError, match="not divisible"):
        NCSNpp(resolution=30, ch_mult=(1, 2, 2))
    with pytest.raises(ValueError, match="expected images of shape"):
        NCSNpp(in_channels=1, resolution=8, nf=16, ch_mult=(1, 2), num_res_blocks=1)(
            torch.randn(2, 1, 16, 16), torch.rand(2)
        )


def test_cifar10_sizes_match_the_paper():
    # Song et al. 2021: NCSN++ cont. 63M, DDPM++ cont. 62M parameters (ours: no progressive growing paths).
    net = NCSNpp(nf=128, ch_mult=(1, 2, 2, 2), num_res_blocks=4, attn_resolutions=(16,))
    assert 60e6 < sum(p.numel() for p in net.parameters()) < 64e6


# --- Losses -------------------------------------------------------------------------------------------
def test_importance_sampled_likelihood_loss_is_unbiased():
    # E_q[(g^2 / q) l] = integral of g^2 l dt = (T - t_min) E_uniform[g^2 l]: same expectation, other variance.
    sde = sf.VPSDE()
    gm = sf.problems.eight_gaussians()
    model = gm.score_fn(sde)
    x0 = gm.sample(4000, torch.Generator().manual_seed(0), dtype=torch.float64)
    uni = DSMLoss(sde, weighting=LikelihoodWeighting())
    imp = DSMLoss(sde, weighting=LikelihoodWeighting(), importance_sampling=True)
    u = torch.stack([uni(model, x0, torch.Generator().manual_seed(i)) for i in range(40)]) * (sde.T - uni.t_min)
    v = torch.stack([imp(model, x0, torch.Generator().manual_seed(100 + i)) for i in range(40)])
    se = (u.var() / len(u) + v.var() / len(v)).sqrt()
    assert abs(float(u.mean() - v.mean())) < 4 * float(se)
    assert v.std() < u.std(), "importance sampling should reduce the variance"


def test_exact_score_minimises_the_loss():
    sde, gm = sf.VESDE(), sf.problems.eight_gaussians()
    x0 = gm.sample(4000, torch.Generator().manual_seed(0), dtype=torch.float64)
    loss = DSMLoss(sde)
    exact = loss(gm.score_fn(sde), x0, torch.Generator().manual_seed(1))
    perturbed = loss(lambda x, t: gm.score(x, t, sde) * 1.1, x0, torch.Generator().manual_seed(1))
    assert exact < perturbed


# --- Data -----------------------------------------------------------------------------------------------
def test_digits_and_mnist5k_load_with_shapes_and_ranges():
    d = D.digits()
    assert d.shape == (1, 8, 8) and len(d) == 1797
    x = d.batch(64, torch.Generator().manual_seed(0))
    assert x.min() >= -1 and x.max() <= 1 and x.min() < -0.9 and x.max() > 0.9
    m = D.mnist5k(centered=False)
    assert m.shape == (1, 28, 28) and len(m) == 5000 and m.all().min() == 0 and m.all().max() == 1
    deq = D.digits(dequantize=True, centered=False).batch(512, torch.Generator().manual_seed(0))
    assert deq.min() >= 0 and deq.max() <= 1 and len(torch.unique(deq)) > 100


def _write_cifar(root, n=6):
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(base / name, "wb") as f:
            pickle.dump({b"data": np.random.randint(0, 256, (n, 3072), dtype=np.uint8), b"labels": list(range(n))}, f)
    return base


def test_cifar10_from_a_local_archive(tmp_path):
    _write_cifar(tmp_path)
    c = D.cifar10(str(tmp_path))
    assert c.shape == (3, 32, 32) and len(c) == 30
    assert len(D.cifar10(str(tmp_path), train=False)) == 6
    flipped = c.batch(8, torch.Generator().manual_seed(0))
    assert flipped.shape == (8, 3, 32, 32) and flipped.abs().max() <= 1


def test_missing_and_malformed_data_are_refused(tmp_path):
    with pytest.raises(D.DatasetError, match="cifar-10-batches-py.*cs.toronto.edu|data_batch_1"):
        D.cifar10(str(tmp_path / "nowhere"))
    base = _write_cifar(tmp_path / "evil")

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with open(base / "data_batch_1", "wb") as f:
        pickle.dump({b"data": Payload()}, f)
    with pytest.raises(D.DatasetError, match="refusing to load"):
        D.cifar10(str(tmp_path / "evil"))
    bad = tmp_path / "bad.csv.gz"
    with gzip.open(bad, "wt") as f:
        f.write("1,2,3\n4,5,6\n")
    with pytest.raises(D.DatasetError, match="785"):
        D.mnist5k(path=str(bad))
    with pytest.raises(D.DatasetError, match="expected"):
        D.mnist5k(path=str(tmp_path / "missing.csv.gz"))
    with pytest.raises(D.DatasetError, match="no PNG"):
        D.image_folder(str(tmp_path))


def test_image_folder_and_toy(tmp_path):
    from PIL import Image

    for i in range(3):
        Image.fromarray(np.full((4, 4, 3), 60 * i, dtype=np.uint8)).save(tmp_path / f"{i}.png")
    f = D.image_folder(str(tmp_path), channels=3, centered=False)
    assert f.shape == (3, 4, 4) and len(f) == 3 and f.all().max() <= 1
    t = D.toy(sf.problems.two_moons, n=100)
    assert t.shape == (2,) and len(t) == 100
    with pytest.raises(D.DatasetError, match="images only"):
        D.Dataset(torch.randn(10, 2), random_flip=True)


# --- Training ------------------------------------------------------------------------------------------
def _toy_trainer(steps=1200, seed=0):
    sde = sf.VPSDE()
    gm = sf.problems.eight_gaussians(radius=2.0, std=0.1)
    data = D.toy(gm, n=5000)
    net = ScoreMLP(dim=2, hidden=64, blocks=2)
    return (
        Trainer(
            net,
            DSMLoss(sde, prediction=sf.EpsPrediction()),
            data,
            steps=steps,
            batch_size=256,
            lr=3e-3,
            warmup=20,
            ema_decay=0.99,
            seed=seed,
            model_config="toy-mlp",
        ),
        sde,
        gm,
    )


def _mode_distance(score, sde, gm):
    out = sf.sample(score, sde, sf.DPMSolverPP(2), (500, 2), steps=25, grid=sf.LogSNRGrid(), seed=0)
    return _median_distance(out.samples, gm)


def _median_distance(x, gm):
    return float(torch.cdist(x.double(), gm.means).min(1).values.median())


@pytest.mark.slow
def test_training_reduces_the_loss_and_moves_samples_to_the_modes():
    trainer, sde, gm = _toy_trainer()
    untrained = _mode_distance(sf.ScoreFunction(trainer.ema.model, sde, sf.EpsPrediction()), sde, gm)
    losses = trainer.fit(progress=False)
    assert np.mean(losses[-50:]) < 0.8 * np.mean(losses[:50])
    with torch.no_grad():
        trained = _mode_distance(sf.ScoreFunction(trainer.ema.model, sde, sf.EpsPrediction()), sde, gm)
    # Closer to the modes than the untrained model, and than the data's own Gaussian fit (what a model
    # that learned only the mean and covariance would give): the modes themselves were learned.
    g = torch.Generator().manual_seed(3)
    gaussian = gm.mean() + torch.randn(500, 2, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(gm.cov()).T
    assert trained < 0.1 * untrained
    assert trained < 0.6 * _median_distance(gaussian, gm)


def _tiny_image_trainer(seed=0, model_config="tiny"):
    torch.manual_seed(seed)  # the initial weights
    net = NCSNpp(
        in_channels=1, resolution=8, nf=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), dropout=0.1
    )
    return Trainer(
        net,
        DSMLoss(sf.VPSDE(), prediction=sf.EpsPrediction()),
        D.digits(random_flip=True, dequantize=True),
        steps=12,
        batch_size=16,
        lr=1e-3,
        warmup=3,
        seed=seed,
        model_config=model_config,
    )


def test_kill_and_resume_gives_identical_weights_and_ema(tmp_path):
    straight = _tiny_image_trainer()
    straight.fit(progress=False)
    first = _tiny_image_trainer()
    first.fit(steps=6, checkpoint=tmp_path / "ckpt.pt", progress=False)
    del first  # the "crash"
    torch.manual_seed(12345)  # disturb the global stream that dropout draws from
    resumed = _tiny_image_trainer(seed=99)  # its own seeds must not matter: the checkpoint's states win
    resumed.resume(tmp_path / "ckpt.pt")
    assert resumed.step == 6
    resumed.fit(progress=False)
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(straight.ema.state_dict().values(), resumed.ema.state_dict().values()):
        assert torch.equal(a, b)


def test_bad_checkpoints_are_refused(tmp_path):
    trainer = _tiny_image_trainer()
    good = trainer.save(tmp_path / "good.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        trainer.resume(corrupt)
    other = _tiny_image_trainer(model_config="another")
    with pytest.raises(CheckpointError, match="another model configuration"):
        other.resume(good)

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    evil = tmp_path / "evil.pt"
    torch.save({"model": Payload(), "model_config": "tiny"}, evil)
    with pytest.raises(CheckpointError, match="could run code"):
        load_checkpoint(evil)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
    wrong_shape = NCSNpp(in_channels=1, resolution=8, nf=32, ch_mult=(1, 2), num_res_blocks=1)
    misfit = Trainer(wrong_shape, DSMLoss(sf.VPSDE()), D.digits(), steps=2, model_config="tiny")
    with pytest.raises(CheckpointError, match="does not fit"):
        misfit.resume(good)


def test_checkpoints_are_written_atomically(tmp_path, monkeypatch):
    trainer = _tiny_image_trainer()
    path = trainer.save(tmp_path / "c.pt")
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(steps=2, checkpoint=path, progress=False)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_trainer_rejects_bad_settings():
    with pytest.raises(ValueError, match="precision"):
        Trainer(ScoreMLP(2), DSMLoss(sf.VPSDE()), D.toy(sf.problems.two_moons, 100), precision="fp8")
    with pytest.raises(ValueError, match="steps"):
        Trainer(ScoreMLP(2), DSMLoss(sf.VPSDE()), D.toy(sf.problems.two_moons, 100), steps=0)


# --- The commands ----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_train_then_sample_with_two_solvers(tmp_path):
    run = tmp_path / "train"
    proc = cli(
        tmp_path,
        "sdeflow.apps.train",
        "data=toy",
        "model=mlp",
        "train.steps=60",
        "train.batch_size=64",
        "sample.every=0",
        "sample.n=32",
        "progress=false",
        f"hydra.run.dir={run}",
    )
    assert proc.returncode == 0, proc.stderr
    assert (run / "checkpoint.pt").exists() and (run / "samples.png").exists() and (run / "results.json").exists()
    out = tmp_path / "sample"
    proc = cli(
        tmp_path,
        "sdeflow.apps.sample",
        f"checkpoint={run / 'checkpoint.pt'}",
        "solver=[ddim,unipc_2_bh2]",
        "nfe=8",
        "n=40",
        "batch_size=16",
        "progress=false",
        f"hydra.run.dir={out}",
    )
    assert proc.returncode == 0, proc.stderr
    for name in ("ddim", "unipc_2_bh2"):
        arrays = np.load(out / f"samples_{name}.npz")
        assert arrays["samples"].shape == (40, 2) and int(arrays["nfe"]) == 8
        assert (out / f"samples_{name}.png").exists()


@pytest.mark.slow
def test_train_command_errors(tmp_path):
    typo = cli(tmp_path, "sdeflow.apps.train", "model=ncsnpp_tiyn", f"hydra.run.dir={tmp_path / 'x'}")
    assert typo.returncode != 0 and "ncsnpp_tiyn" in typo.stderr
    missing = cli(
        tmp_path,
        "sdeflow.apps.train",
        "data=cifar10",
        f"data.dataset.root={tmp_path / 'none'}",
        f"hydra.run.dir={tmp_path / 'y'}",
    )
    assert missing.returncode != 0 and "CIFAR-10: expected" in missing.stderr
