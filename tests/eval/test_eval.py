"""Evaluation: Frechet distance, streaming statistics, reference files, KID, precision/recall, likelihood."""

import math

import numpy as np
import pytest
import torch

import sdeflow as sf
from sdeflow.eval import (
    FeatureStats,
    StatsFileError,
    bits_per_dim,
    kid,
    load_stats,
    log_likelihood,
    precision_recall,
    save_stats,
)
from sdeflow.eval.metrics import frechet_distance

from helpers import cli


def test_frechet_is_exact_between_known_gaussians():
    # Commuting (diagonal) covariances: d^2 = |mu1 - mu2|^2 + sum (s1 - s2)^2.
    mu1, mu2 = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, -1.0])
    s1, s2 = torch.tensor([1.0, 2.0, 0.5]), torch.tensor([3.0, 1.0, 0.5])
    expect = float(((mu1 - mu2) ** 2).sum() + ((s1 - s2) ** 2).sum())
    assert frechet_distance(mu1, torch.diag(s1**2), mu2, torch.diag(s2**2)) == pytest.approx(expect, rel=1e-10)
    # A rotation of both leaves it unchanged; swapping the sides too; identical statistics give 0.
    q, _ = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    c1, c2 = q @ torch.diag(s1**2).double() @ q.T, q @ torch.diag(s2**2).double() @ q.T
    assert frechet_distance(q @ mu1.double(), c1, q @ mu2.double(), c2) == pytest.approx(expect, rel=1e-9)
    assert frechet_distance(mu2, c2, mu1, c1) == pytest.approx(frechet_distance(mu1, c1, mu2, c2), rel=1e-9)
    assert abs(frechet_distance(mu1, c1, mu1, c1)) < 1e-9


def test_streaming_statistics_equal_one_pass():
    x = torch.randn(1000, 7, generator=torch.Generator().manual_seed(0)) * 3 + 1
    one = FeatureStats(7).update(x)
    parts = FeatureStats(7)
    for chunk in x.split(137):
        parts.update(chunk)
    merged = FeatureStats(7).update(x[:400]).merge(FeatureStats(7).update(x[400:]))
    for s in (parts, merged):
        torch.testing.assert_close(s.mu, x.double().mean(0))
        torch.testing.assert_close(s.sigma, torch.cov(x.double().T))
        assert s.n == one.n == 1000


def test_reference_files_in_both_formats_give_the_same_fid(tmp_path):
    g = torch.Generator().manual_seed(0)
    ref_acts = torch.randn(500, 6, generator=g, dtype=torch.float64)
    fake = FeatureStats(6).update(torch.randn(300, 6, generator=g) + 0.5)
    np.savez(tmp_path / "pool3.npz", pool_3=ref_acts.numpy())
    save_stats(tmp_path / "ours.npz", FeatureStats(6).update(ref_acts), extractor="test", weights="none")
    mu_a, sig_a, meta_a = load_stats(tmp_path / "pool3.npz")
    mu_b, sig_b, meta_b = load_stats(tmp_path / "ours.npz")
    assert meta_b == {"extractor": "test", "weights": "none", "n": 500}
    assert fake.frechet((mu_a, sig_a)) == pytest.approx(fake.frechet((mu_b, sig_b)), rel=1e-10)


def test_malformed_reference_files_are_refused(tmp_path):
    with pytest.raises(StatsFileError, match="no reference statistics"):
        load_stats(tmp_path / "missing.npz")
    np.savez(tmp_path / "wrong.npz", means=np.zeros(3))
    with pytest.raises(StatsFileError, match="expected 'mu' and 'sigma', or 'pool_3'"):
        load_stats(tmp_path / "wrong.npz")
    np.savez(tmp_path / "shape.npz", mu=np.zeros(3), sigma=np.zeros((2, 2)))
    with pytest.raises(StatsFileError, match="mu must be"):
        load_stats(tmp_path / "shape.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(StatsFileError, match="not a readable npz"):
        load_stats(tmp_path / "junk.npz")


def test_kid_and_precision_recall():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(800, 8, generator=g), torch.randn(800, 8, generator=g)
    shifted = torch.randn(800, 8, generator=g) + 1.0
    same, sd = kid(a, b, subsets=20, subset_size=400, generator=g)
    far, _ = kid(a, shifted, subsets=20, subset_size=400, generator=g)
    assert abs(same) < 4 * sd + 1e-3 and far > 10 * max(abs(same), sd)
    p, r = precision_recall(a, b, k=3)
    assert p > 0.8 and r > 0.8
    p_far, r_far = precision_recall(a, shifted + 10, k=3)
    assert p_far == 0 and r_far == 0


@pytest.mark.parametrize("noise", ["rademacher", "gaussian"])
def test_gaussian_likelihood_is_exact_within_the_estimator_error(sde, noise):
    # Correlated Gaussian data (a rotated diagonal one), so the Jacobian is not diagonal and
    # Hutchinson's estimate has variance. Tolerance: the mean error over 300 samples within
    # 4 standard errors plus the ODE tolerance's share (1e-3 nats).
    d = 3
    q, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64, generator=torch.Generator().manual_seed(3)))
    cov = q @ torch.diag(torch.tensor([0.2, 1.0, 2.0], dtype=torch.float64)) @ q.T
    stats = sf.GaussianStats.from_cov(torch.tensor([0.5, -0.2, 0.1], dtype=torch.float64), cov)

    def score(x, t):
        # Exact score of N(alpha mu, alpha^2 cov + sigma^2 I).
        a, s = sde.alpha(t)[:, None], sde.sigma(t)[:, None]
        lam = stats.eigvals[None] * a**2 + s**2
        dev = (x - a * stats.mean) @ stats.eigvecs
        return -(dev / lam) @ stats.eigvecs.T

    n = 300
    a, s = sde.alpha(torch.tensor(sde.eps, dtype=torch.float64)), sde.sigma(torch.tensor(sde.eps, dtype=torch.float64))
    marg = torch.distributions.MultivariateNormal(a * stats.mean, a**2 * cov + s**2 * torch.eye(d, dtype=torch.float64))
    x = marg.sample((n,))
    lp, nfe = log_likelihood(
        score, sde, x, probes=4, noise=noise, rtol=1e-7, atol=1e-7, generator=torch.Generator().manual_seed(1)
    )
    err = lp - marg.log_prob(x)
    assert nfe > 0
    assert abs(float(err.mean())) < 4 * float(err.std()) / math.sqrt(n) + 1e-3


def test_bits_per_dim_conversion():
    # A uniform density on [-1, 1]^d (log p = -d log 2) of dequantised 8-bit data is exactly 8 bits per dim.
    d = 10
    assert float(bits_per_dim(torch.tensor(-d * math.log(2.0)), d, bits=8, centered=True)) == pytest.approx(8.0)
    assert float(bits_per_dim(torch.tensor(0.0), d, bits=5, centered=False)) == pytest.approx(5.0)


def test_likelihood_rejects_bad_arguments():
    sde = sf.VPSDE()
    with pytest.raises(ValueError, match="rademacher"):
        log_likelihood(lambda x, t: -x, sde, torch.zeros(2, 2), noise="uniform")
    with pytest.raises(ValueError, match="probes"):
        log_likelihood(lambda x, t: -x, sde, torch.zeros(2, 2), probes=0)
    with pytest.raises(ValueError, match="sigma\\(eps\\) > 0"):
        log_likelihood(lambda x, t: -x, sde, torch.zeros(2, 2), eps=0.0)


def test_inception_builds_gives_2048_features_and_loads_published_key_names(tmp_path, monkeypatch):
    from sdeflow.eval.inception import WEIGHTS_FILE, FIDInceptionV3, load_inception

    net = FIDInceptionV3()
    with torch.no_grad():
        assert net(torch.rand(1, 3, 299, 299)).shape == (1, 2048)
        assert net(torch.rand(2, 3, 32, 32)).shape == (2, 2048)  # resized to 299 inside, as pytorch-fid does
    # The real weights are not available offline: build a state dict with the published key names
    # (torchvision's Inception-v3 names, fc of 1008 classes, no num_batches_tracked as in the 2018 file).
    state = {
        k: torch.randn_like(v) if v.is_floating_point() else v
        for k, v in net.state_dict().items()
        if not k.endswith("num_batches_tracked")
    }
    assert "Mixed_7c.branch3x3dbl_3b.conv.weight" in state and state["fc.weight"].shape == (1008, 2048)
    torch.save(state, tmp_path / WEIGHTS_FILE)
    loaded = load_inception(str(tmp_path / WEIGHTS_FILE))
    assert torch.equal(
        loaded.state_dict()["Mixed_5b.branch_pool.conv.weight"], state["Mixed_5b.branch_pool.conv.weight"]
    )
    # The torch hub cache is searched when no path is given.
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "hub" / "checkpoints" / WEIGHTS_FILE).write_bytes((tmp_path / WEIGHTS_FILE).read_bytes())
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    assert isinstance(load_inception(), FIDInceptionV3)


def test_missing_or_wrong_inception_weights_are_refused(tmp_path, monkeypatch):
    from sdeflow.eval.inception import WEIGHTS_FILE, load_inception

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty_hub"))
    with pytest.raises(FileNotFoundError, match=WEIGHTS_FILE + ".*never downloads"):
        load_inception()
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "wrong.pth")
    with pytest.raises(ValueError, match="does not hold the FID Inception weights"):
        load_inception(str(tmp_path / "wrong.pth"))


def test_user_module_extractor_and_classifier_floor():
    from sdeflow.eval.features import Module, TrainedClassifier
    from sdeflow.training.data import digits

    train, held = digits().split(0.8)
    clf = TrainedClassifier(steps=150).fit(train, held)
    assert clf.accuracy > 0.8
    ref = FeatureStats(64).update(clf(train.all()))
    floor = FeatureStats(64).update(clf(held.all())).frechet(ref)
    noise = FeatureStats(64).update(clf(torch.rand(400, 1, 8, 8) * 2 - 1)).frechet(ref)
    assert noise > 10 * floor
    flat = Module(torch.nn.Flatten())
    assert flat(torch.zeros(3, 1, 8, 8)).shape == (3, 64)


@pytest.mark.slow
def test_eval_command_scores_solvers_against_the_floor(tmp_path):
    import csv

    run = lambda *a: cli(tmp_path, *a)  # noqa: E731
    train = run(
        "sdeflow.apps.train",
        "train.steps=30",
        "train.batch_size=16",
        "sample.every=0",
        "sample.n=4",
        "progress=false",
        f"hydra.run.dir={tmp_path / 'train'}",
    )
    assert train.returncode == 0, train.stderr
    ev = run(
        "sdeflow.apps.evaluate",
        f"checkpoint={tmp_path / 'train' / 'checkpoint.pt'}",
        "solver=[ddim,unipc_2_bh2]",
        "nfe=4",
        "n=200",
        "eval.steps=100",
        "progress=false",
        f"hydra.run.dir={tmp_path / 'eval'}",
    )
    assert ev.returncode == 0, ev.stderr
    rows = list(csv.DictReader(open(tmp_path / "eval" / "results.csv")))
    assert [r["solver"] for r in rows] == ["floor (held-out real data)", "ddim", "unipc_2_bh2"]
    # Samples and floor scored at the same n (digits keep 359 held out; 200 samples were asked for).
    assert {r["n"] for r in rows} == {"200"}
    assert all(float(r["fd_lo"]) <= float(r["fd"]) <= float(r["fd_hi"]) for r in rows)
    assert all(float(r["fd"]) >= 0 and 0 <= float(r["precision"]) <= 1 for r in rows)
    # A barely trained model is far from the data: worse than the floor.
    assert float(rows[1]["fd"]) > float(rows[0]["fd"])
    bad = run("sdeflow.apps.evaluate", f"checkpoint={tmp_path / 'nothing.pt'}", f"hydra.run.dir={tmp_path / 'bad'}")
    assert bad.returncode != 0 and "no checkpoint" in bad.stderr


@pytest.mark.slow
def test_eval_command_on_an_exact_problem_with_likelihood(tmp_path):
    import csv

    proc = cli(
        tmp_path,
        "sdeflow.apps.evaluate",
        "problem=gmm16",
        "eval=identity",
        "solver=[dpmpp_2m]",
        "nfe=20",
        "n=300",
        "metrics=[fd,bpd]",
        "bpd.samples=64",
        "progress=false",
        f"hydra.run.dir={tmp_path / 'e'}",
    )
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(open(tmp_path / "e" / "results.csv")))
    assert math.isfinite(float(rows[0]["bpd"])) and float(rows[1]["fd"]) < 0.1
    both = cli(tmp_path, "sdeflow.apps.evaluate", "problem=gmm16", "checkpoint=x.pt", f"hydra.run.dir={tmp_path / 'f'}")
    assert both.returncode != 0 and "exactly one of checkpoint" in both.stderr


def test_every_row_is_scored_at_the_same_n():
    # The Frechet distance of a small set is biased upwards: 300 real points score worse than 3,000 from the same
    # distribution. Scored at a common n, a larger set loses that advantage, and the bootstrap interval covers it.
    from sdeflow.apps.evaluate import score_features

    g = torch.Generator().manual_seed(0)
    ref_feats = torch.randn(5000, 8, generator=g, dtype=torch.float64)
    ref = FeatureStats(8).update(ref_feats)
    small, big = (
        torch.randn(300, 8, generator=g, dtype=torch.float64),
        torch.randn(3000, 8, generator=g, dtype=torch.float64),
    )
    unequal = score_features(small, ref, ref_feats, ["fd"])["fd"], score_features(big, ref, ref_feats, ["fd"])["fd"]
    assert unequal[0] > 3 * unequal[1]  # the bias the common n removes: E[FD] grows like d(d+1)/(2n) here
    row_small = score_features(small, ref, ref_feats, ["fd", "kid"], n=300, intervals=40)
    row_big = score_features(big, ref, ref_feats, ["fd", "kid"], n=300, intervals=40)
    assert row_small["n"] == row_big["n"] == 300 and row_big["fd_full"] == pytest.approx(unequal[1])
    assert row_big["fd"] > 3 * unequal[1]
    assert row_small["fd_lo"] <= row_small["fd"] <= row_small["fd_hi"]
    # Same distribution, same n: the two 90% intervals overlap, and KID (unbiased) is near zero for both.
    assert row_big["fd_lo"] <= row_small["fd_hi"] and row_small["fd_lo"] <= row_big["fd_hi"]
    assert abs(row_small["kid"]) < 4 * row_small["kid_std"] and abs(row_big["kid"]) < 4 * row_big["kid_std"]
