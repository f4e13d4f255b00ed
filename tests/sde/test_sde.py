"""SDE coefficients, marginals, log-SNR, priors and argument checks."""

import math

import pytest
import torch

import sdeflow as sf


def test_coefficients_agree_with_marginals(sde):
    # For dx = f x dt + g dW: the mean m = alpha x0 obeys dm/dt = f m,
    # the variance v = sigma^2 obeys dv/dt = 2 f v + g^2.
    t = torch.linspace(0.01, 0.99, 57, dtype=torch.float64, requires_grad=True)
    alpha, var = sde.alpha(t), sde.sigma(t) ** 2
    (dalpha,) = torch.autograd.grad(alpha.sum(), t, retain_graph=True)
    (dvar,) = torch.autograd.grad(var.sum(), t)
    with torch.no_grad():
        torch.testing.assert_close(dalpha, sde.f(t) * alpha, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(dvar, 2 * sde.f(t) * var + sde.g2(t), rtol=1e-10, atol=1e-12)


def test_sde_and_marginal_prob_use_the_coefficients(sde):
    x = torch.randn(5, 3, 4, 4, dtype=torch.float64)
    t = torch.rand(5, dtype=torch.float64)
    drift, diffusion = sde.sde(x, t)
    torch.testing.assert_close(drift, sde.f(t)[:, None, None, None] * x)
    torch.testing.assert_close(diffusion, sde.g2(t).sqrt())
    mean, std = sde.marginal_prob(x, t)
    torch.testing.assert_close(mean, sde.alpha(t)[:, None, None, None] * x)
    torch.testing.assert_close(std, sde.sigma(t))


def test_log_snr_inverse(sde):
    t = torch.linspace(sde.eps, sde.T, 101, dtype=torch.float64)
    lam = sde.lambda_(t)
    assert bool((lam[1:] < lam[:-1]).all()), "lambda must decrease in t"
    torch.testing.assert_close(sde.t_from_lambda(lam), t, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(7, 2), (3, 1, 8, 8)])
def test_any_shape_and_dtype(sde, dtype, shape):
    x = sde.prior_sampling(shape, torch.Generator().manual_seed(0), dtype=dtype)
    assert x.shape == shape and x.dtype == dtype
    t = torch.full((shape[0],), 0.5, dtype=dtype)
    for out in (*sde.sde(x, t), *sde.marginal_prob(x, t), *sde.discretize(x, t)):
        assert out.dtype == dtype
    assert sde.prior_logp(x).shape == (shape[0],)


def test_prior_logp_is_the_prior_density(sde):
    z = sde.prior_sampling((6, 3, 2), torch.Generator().manual_seed(1), dtype=torch.float64)
    expect = torch.distributions.Normal(0.0, sde.prior_std).log_prob(z).flatten(1).sum(1)
    torch.testing.assert_close(sde.prior_logp(z), expect)


def test_prior_matches_marginal_at_T():
    # VP and sub-VP end close to N(0, I); VE's marginal std at T is sigma_max.
    for s in (sf.VPSDE(), sf.SubVPSDE()):
        T = torch.tensor(s.T, dtype=torch.float64)
        assert abs(float(s.sigma(T)) - 1) < 1e-3 and float(s.alpha(T)) < 1e-2
    ve = sf.VESDE()
    assert math.isclose(float(ve.sigma(torch.tensor(1.0, dtype=torch.float64))), ve.sigma_max, rel_tol=1e-12)


def test_discretize_agrees_with_sde_for_small_steps(sde):
    x = torch.randn(4, 3, dtype=torch.float64)
    t, dt = torch.full((4,), 0.6, dtype=torch.float64), 1e-6
    f, G = sde.discretize(x, t, dt)
    drift, g = sde.sde(x, t)
    torch.testing.assert_close(f / dt, drift, rtol=1e-4, atol=1e-8)
    torch.testing.assert_close(G**2 / dt, g**2, rtol=1e-4, atol=1e-8)


def test_discretize_stays_valid_for_long_steps():
    # The reference's DDPM step takes sqrt(1 - beta(t) dt), which is NaN once beta(t) dt > 1.
    f, G = sf.VPSDE().discretize(torch.ones(2, 2), torch.ones(2), 0.5)
    assert torch.isfinite(f).all() and torch.isfinite(G).all() and (G < 1).all()


def test_reverse_sde_and_probability_flow(sde):
    x = torch.randn(4, 2, dtype=torch.float64)
    t = torch.full((4,), 0.3, dtype=torch.float64)
    score = lambda x, t: -x  # noqa: E731
    drift, g = sde.sde(x, t)
    rev_drift, rev_g = sde.reverse(score).sde(x, t)
    torch.testing.assert_close(rev_drift, drift + g[:, None] ** 2 * x)
    torch.testing.assert_close(rev_g, g)
    pf_drift, pf_g = sde.reverse(score, probability_flow=True).sde(x, t)
    torch.testing.assert_close(pf_drift, drift + 0.5 * g[:, None] ** 2 * x)
    assert (pf_g == 0).all()


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: sf.VESDE(sigma_min=1.0, sigma_max=0.5), "sigma_min < sigma_max"),
        (lambda: sf.VESDE(sigma_min=0.0), "sigma_min"),
        (lambda: sf.VPSDE(beta_min=-0.1), "non-negative"),
        (lambda: sf.SubVPSDE(beta_min=5.0, beta_max=1.0), "beta_min <= beta_max"),
        (lambda: sf.VPSDE(T=0.0), "T must be positive"),
        (lambda: sf.VPSDE(eps=2.0), "eps must lie"),
        (lambda: sf.VESDE(N=0), "N must be"),
    ],
)
def test_bad_parameters_are_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make()
