"""Inverse problems against exact posteriors: operators, and each method's distance to p(x | y)."""

import pytest
import torch

import sdeflow as sf
from sdeflow.eval.metrics import SlicedWasserstein
from sdeflow.problems import gaussian_data, linear_posterior, observed_posterior

from helpers import exact_score

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
    with pytest.raises(sf.IncompatibleSampler, match="one-step grid solver"):
        sf.inverse.RePaint(resamples=2).bind(
            None, SDE, sf.DPMSolverPP(2), sf.inverse.Inpainting(torch.ones(4)), torch.zeros(4), 0.1
        )
    with pytest.raises(ValueError, match="positive integer"):
        sf.inverse.RePaint(jump=0)


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
    bound = sf.inverse.PiGDM(data_var=SD**2).bind(exact_score(gm, SDE), SDE, solver, op, y, NOISE)
    out = bound.sample(SDE, (N, D), steps=200, grid=sf.LogSNRGrid(), seed=5, dtype=torch.float64)
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
    score, em = exact_score(gm, SDE), sf.PCSampler(sf.EulerMaruyama())
    run = dict(steps=200, grid=sf.LogSNRGrid(), seed=5, dtype=torch.float64)
    dps = sf.inverse.DPS().bind(score, SDE, em, op, y, NOISE).sample(SDE, (N, D), **run).samples
    rep = sf.inverse.Replacement().bind(score, SDE, em, op, y, NOISE, seed=6).sample(SDE, (N, D), **run).samples
    assert bool((dps[:, OBS].std(0) < 0.85 * exact_std).all())
    assert bool((rep[:, OBS].std(0) < 0.2 * exact_std).all())
    assert (rep[:, OBS].mean(0) - y[0, OBS]).abs().max() < 0.01
    free = [i for i in range(D) if i not in OBS]
    for x in (dps, rep):
        assert (x[:, free].mean(0) - 0.2).abs().max() < 0.05


def test_repaint_with_one_resample_is_replacement():
    gm, op, y, _ = gaussian_case()
    score = exact_score(gm, SDE)
    solver = sf.PCSampler(sf.Ancestral())
    plain = sf.inverse.Replacement().bind(score, SDE, solver, op, y, NOISE, seed=6)
    plain = plain.sample(SDE, (N, D), steps=20, seed=5, dtype=torch.float64)
    for jump in (1, 3):
        repaint = sf.inverse.RePaint(resamples=1, jump=jump).bind(score, SDE, solver, op, y, NOISE, seed=6)
        repaint = repaint.sample(SDE, (N, D), steps=20, seed=5, dtype=torch.float64)
        torch.testing.assert_close(repaint.samples, plain.samples, rtol=0, atol=0)
    for jump in (1, 3):  # 20 steps in blocks of 3: the last block has 2, and still every step is taken U times
        three = sf.inverse.RePaint(resamples=3, jump=jump).bind(score, SDE, solver, op, y[:8], NOISE, seed=6)
        out = three.sample(SDE, (8, D), steps=20, seed=5, dtype=torch.float64, return_trajectory=True)
        assert out.nfe == 60 == three.sampler.steps_for_nfe(60) * 3 and bool(torch.isfinite(out.trajectory).all())


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
    score = exact_score(gm, SDE)
    em = sf.PCSampler(sf.EulerMaruyama())

    def distance(method, sampler=em, steps=200):
        bound = method.bind(score, SDE, sampler, op, y, NOISE, seed=6)
        return sw(bound.sample(SDE, (N, D), steps=steps, grid=sf.LogSNRGrid(), seed=5, dtype=torch.float64).samples)

    exact = sf.sample(
        exact_score(post, SDE), SDE, em, (N, D), steps=200, grid=sf.LogSNRGrid(), seed=5, dtype=torch.float64
    )
    assert sw(exact.samples) < 2 * floor
    measured = {
        "replacement": distance(sf.inverse.Replacement()),
        "repaint": distance(sf.inverse.RePaint(resamples=4), sf.PCSampler(sf.Ancestral()), steps=50),
        "dps": distance(sf.inverse.DPS()),
        "pigdm": distance(sf.inverse.PiGDM(data_var=0.3)),
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


# --- DPS in Chung et al.'s units ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["ancestral", "ddim"])
def test_normalised_dps_is_chungs_step_in_their_units(name):
    # Chung et al.'s Algorithm 1 as their code runs it (`PosteriorSampling.conditioning` after a DDPM step, or
    # after their DDIM sampler's), written out by hand: x_next = step(x) - zeta grad_x ||y - A x0(x)||, zeta = 1.
    # sdeflow's DPS(normalised=True, zeta=1) bound to the same solver takes that step, to rounding: each of its
    # steps from its own state (ancestral: its whole trajectory too, which the DDIM's sharpening residual amplifies).
    sde = sf.DiscreteVPSDE(sf.linear_betas(1000))
    gm = sf.GaussianMixture.random(dim=4, components=3, std_range=(0.2, 0.4), seed=5)
    op, n = sf.inverse.Inpainting(torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=torch.float64)), 16
    y = op.A(gm.sample(n, torch.Generator().manual_seed(1)))
    solver = {"ancestral": sf.PCSampler(sf.Ancestral()), "ddim": sf.DDIM()}[name]
    ts = solver.plan(sde, sf.UniformGrid(), steps=100)
    x_T = sde.prior_sampling((n, 4), torch.Generator().manual_seed(2), dtype=torch.float64)
    bound = sf.inverse.DPS(zeta=1.0, normalised=True).bind(exact_score(gm, sde), sde, solver, op, y, 0.0)
    out = bound.sampler.sample(
        bound.score, sde, x_T.clone(), ts, generator=torch.Generator().manual_seed(3), return_trajectory=True
    )
    abar = sde.alpha(ts) ** 2

    def chung(x, i, g):
        x = x.detach().requires_grad_(True)
        a_t, a_s = abar[i], abar[i + 1]
        eps = -(1 - a_t).sqrt() * gm.score_fn(sde)(x, ts[i].expand(n))
        x0 = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
        if name == "ancestral":  # DDPM's posterior mean and variance (their `q_posterior_mean_variance`)
            alpha = a_t / a_s
            mean = (1 - alpha) * a_s.sqrt() / (1 - a_t) * x0 + (1 - a_s) * alpha.sqrt() / (1 - a_t) * x
            var = (1 - alpha) * (1 - a_s) / (1 - a_t)
            x_prime = mean + var.sqrt() * torch.randn(x.shape, generator=g, dtype=x.dtype)
        else:  # DDIM, eta = 0
            x_prime = a_s.sqrt() * x0 + (1 - a_s).sqrt() * eps
        (norm_grad,) = torch.autograd.grad((y - op.A(x0)).norm(dim=1).sum(), x)
        return (x_prime - 1.0 * norm_grad).detach()

    g = torch.Generator().manual_seed(3)
    for i in range(len(ts) - 1):
        torch.testing.assert_close(chung(out.trajectory[i], i, g), out.trajectory[i + 1], rtol=0, atol=1e-11)
    if name == "ancestral":
        g, x = torch.Generator().manual_seed(3), x_T
        for i in range(len(ts) - 1):
            x = chung(x, i, g)
        torch.testing.assert_close(x, out.samples, rtol=0, atol=1e-9)
    with pytest.raises(sf.IncompatibleSampler, match="chooses its own steps"):
        sf.inverse.DPS(normalised=True).bind(exact_score(gm, sde), sde, sf.ProbabilityFlowODE(), op, y, 0.0)


def test_a_diverging_method_stops_naming_the_step_and_time():
    # DPS as derived with a weight far too large: the iterates grow to ~1e22 and stay finite, which the NaN check
    # never sees; the watch on the iterates stops the run where they leave 1000 (alpha_t + sigma_t).
    gm, op, y, _ = gaussian_case()
    em = sf.PCSampler(sf.EulerMaruyama())
    bound = sf.inverse.DPS(zeta=10.0).bind(exact_score(gm, SDE), SDE, em, op, y[:64], NOISE)
    with pytest.raises(sf.inverse.DivergenceError, match=r"DPS with PCSampler: .* at step \d+ of 200 \(t = 0\.\d+\)"):
        bound.sample(SDE, (64, D), steps=200, grid=sf.LogSNRGrid(), seed=5, dtype=torch.float64)
    assert issubclass(sf.inverse.DivergenceError, sf.SolverError)
    assert not issubclass(sf.inverse.DivergenceError, sf.NonFiniteError)
    # Unwatched (limit=None), the same run ends "successfully", finite and absurd: what the watch is for.
    loose = sf.inverse.DPS(zeta=10.0, limit=None).bind(exact_score(gm, SDE), SDE, em, op, y[:64], NOISE)
    x = loose.sample(SDE, (64, D), steps=200, grid=sf.LogSNRGrid(), seed=5, dtype=torch.float64).samples
    assert bool(torch.isfinite(x).all()) and float(x.abs().max()) > 1e4


@pytest.mark.parametrize(
    "method",
    [sf.inverse.Replacement(), sf.inverse.RePaint(resamples=2), sf.inverse.DPS(), sf.inverse.PiGDM(data_var=0.25)],
    ids=["replacement", "repaint", "dps", "pigdm"],
)
def test_one_observation_broadcasts_to_every_sample(method):
    # y of shape (d,) or (1, d) is the observation of every sample: the same samples as y repeated (B, d).
    gm, op, y, _ = gaussian_case()
    score, ancestral = exact_score(gm, SDE), sf.PCSampler(sf.Ancestral())
    runs = [
        method.bind(score, SDE, ancestral, op, obs, NOISE, seed=6).sample(
            SDE, (8, D), steps=20, seed=5, dtype=torch.float64
        )
        for obs in (y[0], y[:1], y[:8])
    ]
    for out in runs[:2]:
        torch.testing.assert_close(out.samples, runs[2].samples, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"one per sample, \(8, 16\), or one for all"):
        method.bind(score, SDE, ancestral, op, y[:3], NOISE).sample(SDE, (8, D), steps=2, dtype=torch.float64)
