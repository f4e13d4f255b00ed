"""The Gaussian-mixture test bed is exact: scores, densities, moments and the probability-flow reference."""

import math

import pytest
import torch

import sdeflow as sf


@pytest.fixture
def mixture():
    return sf.GaussianMixture.random(dim=3, components=4, std_range=(0.1, 0.4), seed=3)


@pytest.mark.parametrize("t", [0.0, 0.01, 0.3, 1.0])
def test_score_is_gradient_of_log_density(sde, mixture, t):
    x = (torch.randn(20, 3, dtype=torch.float64) * 1.5).requires_grad_(True)
    logp = mixture.log_prob(x, t, sde)
    (grad,) = torch.autograd.grad(logp.sum(), x)
    torch.testing.assert_close(mixture.score(x.detach(), t, sde), grad, rtol=1e-8, atol=1e-8)


def test_per_sample_times_match_shared_time(sde, mixture):
    x = torch.randn(16, 3, dtype=torch.float64)
    t = torch.rand(16, dtype=torch.float64)
    per_sample = mixture.score(x, t, sde)
    one_by_one = torch.cat([mixture.score(x[i : i + 1], t[i], sde) for i in range(16)])
    torch.testing.assert_close(per_sample, one_by_one, rtol=1e-9, atol=1e-9)


def test_log_density_agrees_with_torch_distributions(sde, mixture):
    t = torch.tensor(0.4, dtype=torch.float64)
    alpha, sigma = sde.alpha(t), sde.sigma(t)
    comp = torch.distributions.Independent(
        torch.distributions.Normal(alpha * mixture.means, (alpha**2 * mixture.stds**2 + sigma**2).sqrt()), 1
    )
    peer = torch.distributions.MixtureSameFamily(torch.distributions.Categorical(mixture.weights), comp)
    x = torch.randn(50, 3, dtype=torch.float64)
    torch.testing.assert_close(mixture.log_prob(x, 0.4, sde), peer.log_prob(x))


def test_samples_have_the_stated_moments(sde, mixture):
    # 200k samples: 6 standard errors on the mean, covariance to 0.02 absolute.
    n = 200_000
    x = mixture.sample(n, torch.Generator().manual_seed(0), t=0.2, sde=sde)
    cov = mixture.cov(0.2, sde)
    se = (cov.diagonal() / n).sqrt()
    assert ((x.mean(0) - mixture.mean(0.2, sde)).abs() < 6 * se).all()
    assert (torch.cov(x.T) - cov).abs().max() < 0.02 * float(cov.diagonal().max())


def test_image_shaped_samples():
    gm = sf.GaussianMixture.random(dim=16, components=2, seed=0)
    x = torch.randn(5, 1, 4, 4)
    assert gm.score(x, 0.5, sf.VPSDE()).shape == x.shape
    with pytest.raises(ValueError, match="16 elements"):
        gm.score(torch.randn(5, 3), 0.5, sf.VPSDE())


def test_ode_reference_is_exact_for_a_gaussian(sde):
    # For p0 = N(m, s^2) the flow is affine: x_t = alpha_t m + r_t / r_T (x_T - alpha_T m),
    # r_t^2 = alpha_t^2 s^2 + sigma_t^2.
    m, s = torch.tensor([0.5, -1.0], dtype=torch.float64), torch.tensor([0.3, 0.8], dtype=torch.float64)
    gm = sf.GaussianMixture([1.0], m[None], s[None])
    x_T = sde.prior_sampling((10, 2), torch.Generator().manual_seed(0), dtype=torch.float64)
    T, e = (torch.tensor(v, dtype=torch.float64) for v in (sde.T, sde.eps))
    r = lambda t: (sde.alpha(t) ** 2 * s**2 + sde.sigma(t) ** 2).sqrt()  # noqa: E731
    exact = sde.alpha(e) * m + r(e) / r(T) * (x_T - sde.alpha(T) * m)
    torch.testing.assert_close(gm.ode_reference(sde, x_T), exact, rtol=1e-8, atol=1e-8)


def test_toy_sets():
    g = torch.Generator().manual_seed(0)
    for pts in (sf.problems.two_moons(100, g), sf.problems.swiss_roll(100, g), sf.problems.checkerboard(100, g)):
        assert pts.shape == (100, 2) and torch.isfinite(pts).all() and pts.abs().max() < 4
    eight = sf.problems.eight_gaussians()
    assert eight.dim == 2 and len(eight.weights) == 8
    assert math.isclose(float(eight.means.norm(dim=1).mean()), 2.0)
    assert len(sf.problems.grid_gaussians(5).weights) == 25


def test_bad_mixtures_are_refused():
    with pytest.raises(ValueError, match="means must have shape"):
        sf.GaussianMixture([1.0], [0.0, 1.0], [1.0])
    with pytest.raises(ValueError, match="positive"):
        sf.GaussianMixture([1.0, -1.0], [[0.0], [1.0]], [1.0, 1.0])
