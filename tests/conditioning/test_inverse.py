"""Inverse problems against exact posteriors: operators, and each method's distance to p(x | y)."""

import pytest
import torch

import sdeflow as sf
from sdeflow.eval.metrics import SlicedWasserstein
from sdeflow.problems import gaussian_data, linear_posterior, observed_posterior

SDE = sf.VPSDE()
OPERATORS = {
    "inpainting": (
        sf.inverse.Inpainting((torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0)) > 0.5).double()),
        (4, 3, 8, 8),
    ),
    "colorization": (sf.inverse.Colorization(), (4, 3, 8, 8)),
    "average_pooling": (sf.inverse.AveragePooling(2), (4, 3, 8, 8)),
    "matrix": (
        sf.inverse.MatrixOperator(torch.randn(5, 12, generator=torch.Generator().manual_seed(1), dtype=torch.float64)),
        (4, 12),
    ),
}


@pytest.mark.parametrize("name", OPERATORS)
def test_operator_adjoint_pseudo_inverse_and_gram_solve(name):
    op, shape = OPERATORS[name]
    g = torch.Generator().manual_seed(2)
    x, x2 = (torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(2))
    y = op.A(x2)
    # <A x, y> = <x, A^T y>, sample by sample.
    torch.testing.assert_close(
        (op.A(x) * y).flatten(1).sum(1), (x * op.AT(y)).flatten(1).sum(1), rtol=1e-12, atol=1e-12
    )
    # A A^+ y = y for y in the range of A.
    torch.testing.assert_close(op.A(op.pinv(y)), y, rtol=1e-10, atol=1e-10)
    # (a I + b A A^T) applied to the solve gives back v, with b per sample.
    b = torch.tensor([0.1, 1.0, 2.0, 5.0], dtype=torch.float64)
    v = op.gram_solve(y, 0.3, b)
    back = 0.3 * v + b.reshape(-1, *([1] * (y.ndim - 1))) * op.A(op.AT(v))
    torch.testing.assert_close(back, y, rtol=1e-10, atol=1e-10)


def test_operators_refuse_bad_input():
    with pytest.raises(ValueError, match="0 \\(unknown\\) and 1"):
        sf.inverse.Inpainting(torch.tensor([0.5, 1.0]))
    with pytest.raises(ValueError, match="RGB"):
        sf.inverse.Colorization().A(torch.zeros(2, 1, 4, 4))
    with pytest.raises(ValueError, match="divisible"):
        sf.inverse.AveragePooling(3).A(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match="one-step grid solver"):
        sf.inverse.RePaint(sf.DPMSolverPP(2), None)


# --- Gaussian data: the exact posterior, and what each method does to it ------------------------------------
D, N, NOISE, SD = 16, 4000, 0.1, 0.5
OBS = [0, 1]


def gaussian_case():
    gm = gaussian_data(0.2, SD, D)
    y_obs = torch.tensor([0.9, -0.4], dtype=torch.float64)
    mask = torch.zeros(D, dtype=torch.float64)
    mask[OBS] = 1
    y = torch.zeros(N, D, dtype=torch.float64)
    y[:, OBS] = y_obs
    return gm, sf.inverse.Inpainting(mask), y, observed_posterior(gm, OBS, y_obs, NOISE)


@pytest.mark.parametrize("solver", [sf.PCSampler(sf.EulerMaruyama()), sf.DDIM()], ids=["euler_maruyama", "ddim"])
def test_pigdm_is_exact_on_gaussian_data(solver):
    # PiGDM's Gaussian likelihood is exact when x0 | x_t is Gaussian with the variance it assumes.
    # Observed coordinates: mean within 0.01 (6 standard errors), std within 5%; the rest keep the prior.
    gm, op, y, post = gaussian_case()
    score = sf.inverse.PiGDM(sf.ScoreFunction(gm.score_fn(SDE), SDE), op, y, NOISE, data_var=SD**2)
    out = sf.sample(score, SDE, solver, (N, D), steps=200, grid=sf.LogSNRGrid(), seed=5, dtype=torch.float64)
    x = out.samples
    assert out.forwards == 200 and out.backwards == 200
    assert (x[:, OBS].mean(0) - post.means[0, OBS]).abs().max() < 0.01
    assert ((x[:, OBS].std(0) / post.stds[0, OBS]) - 1).abs().max() < 0.05
    free = [i for i in range(D) if i not in OBS]
    assert (x[:, free].mean(0) - 0.2).abs().max() < 0.05 and ((x[:, free].std(0) / SD) - 1).abs().max() < 0.06


def test_dps_and_replacement_are_overconfident_on_gaussian_data():
    # Known biases, measured: DPS's likelihood ignores the denoiser's variance, so its posterior on
    # the observed coordinates is narrower than the truth; replacement ignores the observation noise
    # and pins them to y. Both leave the unobserved (independent) coordinates at the prior.
    gm, op, y, post = gaussian_case()
    exact_std = post.stds[0, OBS]
    score = sf.ScoreFunction(gm.score_fn(SDE), SDE)
    dps = sf.sample(
        sf.inverse.DPS(score, op, y, NOISE),
        SDE,
        sf.PCSampler(sf.EulerMaruyama()),
        (N, D),
        steps=200,
        grid=sf.LogSNRGrid(),
        seed=5,
        dtype=torch.float64,
    ).samples
    rep = sf.sample(
        score,
        SDE,
        sf.PCSampler(sf.EulerMaruyama()),
        (N, D),
        steps=200,
        grid=sf.LogSNRGrid(),
        seed=5,
        dtype=torch.float64,
        hook=sf.inverse.Replacement(SDE, op, y, seed=6),
    ).samples
    assert bool((dps[:, OBS].std(0) < 0.85 * exact_std).all())
    assert bool((rep[:, OBS].std(0) < 0.2 * exact_std).all())
    assert (rep[:, OBS].mean(0) - y[0, OBS]).abs().max() < 0.01
    free = [i for i in range(D) if i not in OBS]
    for x in (dps, rep):
        assert (x[:, free].mean(0) - 0.2).abs().max() < 0.05


def test_repaint_with_one_resample_is_replacement():
    gm, op, y, _ = gaussian_case()
    score = sf.ScoreFunction(gm.score_fn(SDE), SDE)
    solver = sf.PCSampler(sf.Ancestral())
    plain = sf.sample(
        score,
        SDE,
        solver,
        (N, D),
        steps=20,
        seed=5,
        dtype=torch.float64,
        hook=sf.inverse.Replacement(SDE, op, y, seed=6),
    )
    for jump in (1, 3):
        repaint = sf.sample(
            score,
            SDE,
            sf.inverse.RePaint(solver, sf.inverse.Replacement(SDE, op, y, seed=6), resamples=1, jump=jump),
            (N, D),
            steps=20,
            seed=5,
            dtype=torch.float64,
        )
        torch.testing.assert_close(repaint.samples, plain.samples, rtol=0, atol=0)
    for jump in (1, 3):  # 20 steps in blocks of 3: the last block has 2, and still every step is taken U times
        three = sf.inverse.RePaint(solver, sf.inverse.Replacement(SDE, op, y[:8], seed=6), resamples=3, jump=jump)
        out = sf.sample(score, SDE, three, (8, D), steps=20, seed=5, dtype=torch.float64, return_trajectory=True)
        assert out.nfe == 60 == three.steps_for_nfe(60) * 3 and bool(torch.isfinite(out.trajectory).all())


# --- A mixture with a bimodal posterior: distances to exact posterior samples ---------------------------------
def bimodal_case():
    g = torch.Generator().manual_seed(0)
    means = torch.rand(4, D, generator=g, dtype=torch.float64) * 2 - 1
    means[1, :2] = means[0, :2]  # two components agree on what is observed: the posterior has two modes
    gm = sf.GaussianMixture(torch.ones(4), means, torch.full((4,), 0.15, dtype=torch.float64))
    y_obs = means[0, :2] + 0.05
    mask = torch.zeros(D, dtype=torch.float64)
    mask[OBS] = 1
    y = torch.zeros(N, D, dtype=torch.float64)
    y[:, OBS] = y_obs
    return gm, sf.inverse.Inpainting(mask), y, observed_posterior(gm, OBS, y_obs, NOISE)


def test_every_method_against_the_exact_bimodal_posterior():
    # Sliced W2 to 4000 exact posterior samples, floor = two exact sets. The exact posterior score
    # (the unbiased reference) must reach the floor; every method must move from the prior towards
    # the posterior. The measured distances are the benchmark's (benchmarks/inverse_problems.py).
    gm, op, y, post = bimodal_case()
    assert sorted(post.weights.tolist())[-2] > 0.3  # two modes of real weight
    sw = SlicedWasserstein(post.sample(N, torch.Generator().manual_seed(1)), 256, torch.Generator().manual_seed(2))
    floor, prior = (
        sw(post.sample(N, torch.Generator().manual_seed(3))),
        sw(gm.sample(N, torch.Generator().manual_seed(4))),
    )
    score = sf.ScoreFunction(gm.score_fn(SDE), SDE)
    em = sf.PCSampler(sf.EulerMaruyama())

    def distance(sampler, sc, hook=None, steps=200):
        return sw(
            sf.sample(
                sc, SDE, sampler, (N, D), steps=steps, grid=sf.LogSNRGrid(), seed=5, dtype=torch.float64, hook=hook
            ).samples
        )

    assert distance(em, sf.ScoreFunction(post.score_fn(SDE), SDE)) < 2 * floor
    measured = {
        "replacement": distance(em, score, hook=sf.inverse.Replacement(SDE, op, y, seed=6)),
        "repaint": distance(
            sf.inverse.RePaint(sf.PCSampler(sf.Ancestral()), sf.inverse.Replacement(SDE, op, y, seed=6), 4),
            score,
            steps=50,
        ),
        "dps": distance(em, sf.inverse.DPS(score, op, y, NOISE)),
        "pigdm": distance(em, sf.inverse.PiGDM(score, op, y, NOISE, data_var=0.3)),
    }
    assert all(d < 0.9 * prior for d in measured.values()), (measured, prior, floor)


def test_linear_posterior_sampling_matches_its_moments():
    gm = sf.GaussianMixture.random(dim=4, components=3, std_range=(0.2, 0.4), seed=5)
    A = torch.randn(2, 4, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    post = linear_posterior(gm, A, torch.tensor([0.3, -0.2]), 0.1)
    x = post.sample(200_000, torch.Generator().manual_seed(7))
    assert (x.mean(0) - post.mean()).abs().max() < 0.01
    # Every component's covariance is a valid one: symmetric positive definite.
    assert bool((torch.linalg.eigvalsh(post.covs) > 0).all())
