"""Score parameterisations convert exactly into each other through the SDE."""

import pytest
import torch

import sdeflow as sf

from helpers import exact_score

PREDICTIONS = [sf.ScorePrediction(), sf.EpsPrediction(), sf.X0Prediction(), sf.VPrediction()]


@pytest.mark.parametrize("prediction", PREDICTIONS, ids=lambda p: type(p).__name__)
def test_every_parameterisation_recovers_eps_and_x0(sde, prediction):
    x0 = torch.randn(8, 2, 3, dtype=torch.float64)
    eps = torch.randn(8, 2, 3, dtype=torch.float64)
    t = torch.linspace(0.05, 1.0, 8, dtype=torch.float64)
    alpha, sigma = sde.alpha(t)[:, None, None], sde.sigma(t)[:, None, None]
    x = alpha * x0 + sigma * eps
    target = prediction.from_eps_x0(eps, x0, alpha, sigma)
    eps_hat, x0_hat = prediction.to_eps_x0(target, x, alpha, sigma)
    torch.testing.assert_close(eps_hat, eps, rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(x0_hat, x0, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("prediction", PREDICTIONS, ids=lambda p: type(p).__name__)
def test_score_function_reads_any_parameterisation(sde, prediction):
    gm = sf.GaussianMixture.random(dim=3, components=2, seed=1)
    exact = exact_score(gm, sde)

    def model(x, t):
        # The same exact model, re-expressed in `prediction`'s output.
        eps, x0 = exact.eps_x0(x, t)
        return prediction.from_eps_x0(eps, x0, sde.alpha(t)[:, None], sde.sigma(t)[:, None])

    wrapped = sf.ScoreFunction(model, sde, prediction)
    x, t = torch.randn(6, 3, dtype=torch.float64), torch.full((6,), 0.4, dtype=torch.float64)
    torch.testing.assert_close(wrapped.score(x, t), gm.score(x, t, sde), rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(wrapped.x0(x, t), exact.x0(x, t), rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(wrapped.v(x, t), exact.v(x, t), rtol=1e-8, atol=1e-8)


def test_conditioning_passes_through_and_calls_are_counted():
    seen = []

    def model(x, t, label=None, scale=1.0):
        seen.append((label, scale))
        return -x * scale

    sde = sf.VPSDE()
    base = sf.ScoreFunction(model, sde, label=3)
    guided = base.condition(scale=2.0)
    x = torch.randn(4, 2)
    guided(x, 0.5)
    guided.x0(x, 0.5)
    assert seen == [(3, 2.0), (3, 2.0)]
    assert guided.nfe == 2 and base.nfe == 0


def test_conditioning_reaches_the_model_through_a_sampler():
    # Conditioning is bound into the score function, so samplers need no change to carry it.
    labels = []
    sde = sf.VPSDE()

    def model(x, t, label):
        labels.append(label)
        return -x

    score = sf.ScoreFunction(model, sde, label=torch.arange(4))
    sf.sample(score, sde, sf.PCSampler(sf.EulerMaruyama()), (4, 2), steps=3)
    assert len(labels) == 3 and all(torch.equal(label, torch.arange(4)) for label in labels)


def test_non_callable_model_is_refused():
    with pytest.raises(TypeError, match="callable"):
        sf.ScoreFunction(3, sf.VPSDE())
