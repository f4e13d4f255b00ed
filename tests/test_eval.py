"""Evaluation: Frechet distance, streaming statistics, reference files, KID, precision/recall, likelihood."""

import math

import numpy as np
import pytest
import torch

import sdeflow as sf
from sdeflow.eval import FeatureStats, StatsFileError, bits_per_dim, kid, load_stats, log_likelihood, precision_recall, save_stats
from sdeflow.metrics import frechet_distance


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
    lp, nfe = log_likelihood(score, sde, x, probes=4, noise=noise, rtol=1e-7, atol=1e-7, generator=torch.Generator().manual_seed(1))
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
