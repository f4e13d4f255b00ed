"""Guidance against the exact conditional and guided scores of a labelled mixture."""

import pytest
import torch

import sdeflow as sf
from sdeflow.problems import LabelledMixture

from helpers import exact_score, slope

SDE = sf.VPSDE()


@pytest.fixture(scope="module")
def problem():
    gm = sf.GaussianMixture.random(dim=3, components=6, std_range=(0.15, 0.3), seed=3)
    return LabelledMixture(gm, [0, 0, 1, 1, 2, 2])


def points(problem, n=32, t=0.3):
    return problem.mixture.sample(n, torch.Generator().manual_seed(0), t=t, sde=SDE)


def test_classifier_guidance_with_the_exact_classifier_is_the_conditional_score(problem):
    x, y = points(problem), torch.arange(32) % 3
    guided = sf.ClassifierGuidance(classifier=problem.classifier(SDE), scale=1.0).bind(
        exact_score(problem.mixture, SDE), y
    )
    torch.testing.assert_close(guided.score(x, 0.3), problem.score(x, 0.3, SDE, y), rtol=1e-12, atol=1e-12)
    assert (guided.nfe, guided.forwards, guided.backwards) == (
        1,
        2,
        1,
    )  # the score network and the classifier, and its backward


@pytest.mark.parametrize("batched", [True, False])
def test_classifier_free_guidance_is_the_exact_guided_score(problem, batched):
    x, y = points(problem), torch.arange(32) % 3
    base = sf.ScoreFunction(problem.model(SDE), SDE)
    conditional = sf.ClassifierFreeGuidance(w=0.0, batched=batched).bind(base, y)
    torch.testing.assert_close(conditional.score(x, 0.3), problem.score(x, 0.3, SDE, y), rtol=1e-12, atol=1e-12)
    strong = sf.ClassifierFreeGuidance(w=3.0, batched=batched).bind(base, y)
    torch.testing.assert_close(strong.score(x, 0.3), problem.guided_score(x, 0.3, SDE, y, 3.0), rtol=1e-12, atol=1e-12)
    assert strong.nfe == 1 and strong.forwards == (1 if batched else 2)


def test_outside_the_interval_the_score_is_the_conditional_one_at_one_forward(problem):
    x, y = points(problem), torch.arange(32) % 3
    guided = sf.ClassifierFreeGuidance(w=3.0, interval=(0.5, 1.0), batched=False).bind(
        sf.ScoreFunction(problem.model(SDE), SDE), y
    )
    torch.testing.assert_close(guided.score(x, 0.3), problem.score(x, 0.3, SDE, y), rtol=0, atol=0)
    assert guided.forwards == 1
    torch.testing.assert_close(guided.score(x, 0.7), problem.guided_score(x, 0.7, SDE, y, 3.0), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="t_lo <= t_hi"):
        sf.ClassifierFreeGuidance(w=1.0, interval=(0.8, 0.2))


def test_autoguidance_with_an_unconditional_guide_is_classifier_free_guidance(problem):
    x, y = points(problem), torch.arange(32) % 3
    base = sf.ScoreFunction(problem.model(SDE), SDE)
    auto = sf.Autoguidance(w=2.0, weak=base).bind(base.condition(y=y))
    torch.testing.assert_close(auto.score(x, 0.3), problem.guided_score(x, 0.3, SDE, y, 2.0), rtol=1e-12, atol=1e-12)
    assert auto.forwards == 2
    with pytest.raises(TypeError, match="bind conditioning"):
        auto.condition(y=y)


@pytest.mark.parametrize("w", [0.0, 2.0])
def test_guided_solvers_converge_to_the_exact_guided_ode(problem, w):
    n, y = 64, torch.arange(64) % 3
    x_T = SDE.prior_sampling((n, 3), torch.Generator().manual_seed(1), dtype=torch.float64)
    ref = problem.guided_ode_reference(SDE, x_T, y, w)
    guided = sf.ClassifierFreeGuidance(w=w).bind(sf.ScoreFunction(problem.model(SDE), SDE), y)
    steps = [40, 80, 160]
    errors = [
        float((sf.DPMSolverPP(2).sample(guided, SDE, x_T, sf.LogSNRGrid()(SDE, k)).samples - ref).abs().max())
        for k in steps
    ]
    assert errors[-1] < 1e-3 and slope(steps, errors) > 1.6, errors


@pytest.mark.parametrize("how", ["cfg", "classifier"])
def test_guided_samples_reproduce_each_class(problem, how):
    # w = 0 / scale 1: sampling p(x | y) exactly; 6000 samples per class, EM with 200 steps.
    # Tolerances: weights 0.03, mean 0.05, covariance 0.05 (the classes' scale is about 1).
    n = 6000
    for c in range(problem.classes):
        y = torch.full((n,), c)
        if how == "cfg":
            score = sf.ClassifierFreeGuidance(w=0.0).bind(sf.ScoreFunction(problem.model(SDE), SDE), y)
        else:
            score = sf.ClassifierGuidance(classifier=problem.classifier(SDE)).bind(exact_score(problem.mixture, SDE), y)
        out = sf.sample(score, SDE, sf.PCSampler(sf.EulerMaruyama()), (n, 3), steps=200, seed=c, dtype=torch.float64)
        target = problem.class_mixture(c)
        x = out.samples
        # Components overlap, so the mode shares are compared with those of exact samples of the class.
        exact = target.sample(n, torch.Generator().manual_seed(10 + c), t=SDE.eps, sde=SDE)
        share = [
            torch.bincount(problem.mixture.assign(v), minlength=len(problem.labels)).double() / n for v in (x, exact)
        ]
        assert (share[0] - share[1]).abs().max() < 0.03
        assert (x.mean(0) - target.mean(SDE.eps, SDE)).abs().max() < 0.05
        assert (torch.cov(x.T) - target.cov(SDE.eps, SDE)).abs().max() < 0.05


def test_dynamic_thresholding_bounds_x0_and_is_the_identity_with_no_bound(problem):
    x, y = points(problem, t=0.6), torch.arange(32) % 3
    base, cfg = sf.ScoreFunction(problem.model(SDE), SDE), sf.ClassifierFreeGuidance(w=4.0)
    loose = sf.DynamicThresholding(percentile=1.0, max_value=1e6, guidance=cfg).bind(base, y)
    torch.testing.assert_close(loose.score(x, 0.6), problem.guided_score(x, 0.6, SDE, y, 4.0), rtol=1e-9, atol=1e-9)
    tight = sf.DynamicThresholding(percentile=1.0, max_value=0.5).bind(cfg.bind(base, y))  # or around any score
    assert float(tight.x0(x, 0.6).abs().max()) <= 0.5 + 1e-9
    assert tight.forwards == 1  # the wrapped guidance's one batched forward


def test_label_counts_are_checked_at_the_door(problem):
    # One label per sample, or one for all; any other count, or labels that are not class indices, in one line.
    x, base = points(problem), sf.ScoreFunction(problem.model(SDE), SDE)
    one = sf.ClassifierFreeGuidance(w=3.0).bind(base, torch.tensor([2]))
    torch.testing.assert_close(one.score(x, 0.3), problem.guided_score(x, 0.3, SDE, torch.full((32,), 2), 3.0))
    for method in (
        sf.ClassifierFreeGuidance(w=3.0),
        sf.ClassifierFreeGuidance(w=0.0),
        sf.Autoguidance(w=1.0, weak=base),
    ):
        with pytest.raises(ValueError, match=r"5 labels for a batch of 32 samples; give one label per sample \(32\)"):
            method.bind(base, torch.arange(5) % 3).score(x, 0.3)
    with pytest.raises(ValueError, match=r"labels are class indices, integers of shape \(B,\)"):
        sf.ClassifierFreeGuidance(w=3.0).bind(base, torch.ones(32, 3))
    with pytest.raises(ValueError, match="needs the batch's labels"):
        sf.ClassifierFreeGuidance(w=3.0).bind(base, None)


def test_a_classifier_of_the_wrong_output_shape_is_refused(problem):
    x, y = points(problem), torch.arange(32) % 3
    base, classifier = exact_score(problem.mixture, SDE), problem.classifier(SDE)

    def flat(x, t):  # the log-probability of one class only: (B,)
        return classifier(x, t)[:, 0]

    with pytest.raises(ValueError, match=r"returned \(32,\); it must return log-probabilities of shape \(B, classes\)"):
        sf.ClassifierGuidance(classifier=flat).bind(base, y).score(x, 0.3)
    with pytest.raises(ValueError, match=r"labels must be classes in 0..2"):
        sf.ClassifierGuidance(classifier=classifier).bind(base, torch.full((32,), 7)).score(x, 0.3)
    with pytest.raises(TypeError, match="callable"):
        sf.ClassifierGuidance(classifier=None)
