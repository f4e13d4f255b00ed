"""Samplers against exact answers: convergence orders, target statistics, NFE counts, determinism, errors."""

import pytest
import torch

import sdeflow as sf
from sdeflow.eval.metrics import rms_error

from helpers import assert_mixture_moments, every_configured_solver, exact_score, slope

PREDICTORS = [sf.EulerMaruyama(), sf.ReverseDiffusion(), sf.Ancestral()]


# --- Probability-flow ODE -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "method, steps", [("euler", [50, 100, 200, 400]), ("midpoint", [50, 100, 200, 400]), ("rk4", [25, 50, 100, 200])]
)
def test_probability_flow_order(sde, method, steps):
    gm = sf.GaussianMixture.random(dim=4, components=3, std_range=(0.3, 0.5), seed=1)
    x_T = sde.prior_sampling((64, 4), torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = gm.ode_reference(sde, x_T)
    solver = sf.ProbabilityFlowODE(method)
    errors = [
        rms_error(solver.sample(exact_score(gm, sde), sde, x_T, sf.UniformGrid()(sde, n)).samples, ref).max()
        for n in steps
    ]
    assert slope(steps, errors) == pytest.approx(solver.order, abs=0.3)


def test_adaptive_ode_meets_tolerance_and_stays_inside_eps_T(sde):
    gm = sf.GaussianMixture.random(dim=4, components=3, seed=2)
    times = []

    def model(x, t):
        times.append(t[0].item())
        return gm.score(x, t, sde)

    x_T = sde.prior_sampling((32, 4), torch.Generator().manual_seed(0), dtype=torch.float64)
    out = sf.ProbabilityFlowODE("dopri5", rtol=1e-6, atol=1e-6).sample(
        sf.ScoreFunction(model, sde), sde, x_T, torch.tensor([sde.T, sde.eps], dtype=torch.float64)
    )
    assert min(times) >= sde.eps and max(times) <= sde.T
    assert out.nfe == len(times)
    assert rms_error(out.samples, gm.ode_reference(sde, x_T)).median() < 1e-3


def test_torchdiffeq_failures_become_solver_errors():
    sde = sf.VPSDE()
    with pytest.raises(sf.SolverError, match="dopri5"):
        sf.sample(lambda x, t: x * float("nan"), sde, sf.ProbabilityFlowODE("dopri5"), (4, 2), dtype=torch.float64)


# --- Reverse SDE ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_euler_maruyama_weak_order_on_a_non_uniform_grid():
    # Weak order 1 in the variance of a Gaussian target. The quadratic grid would expose a step of 1/N
    # used in place of the real spacing (the reference's defect). 300k samples: MC error ~1e-3 << bias.
    gm = sf.GaussianMixture([1.0], [[0.5, -0.3]], [[0.3, 0.6]])
    sde = sf.VPSDE()
    target = gm.cov(sde.eps, sde).diagonal()
    steps, errors = [16, 32, 64, 128], []
    for n in steps:
        out = sf.sample(
            gm.score_fn(sde),
            sde,
            sf.PCSampler(sf.EulerMaruyama()),
            (300_000, 2),
            steps=n,
            grid=sf.QuadraticGrid(),
            generator=torch.Generator().manual_seed(n),
            dtype=torch.float64,
        )
        errors.append(float((out.samples.var(0) - target).abs().sum()))
    assert 0.7 < slope(steps, errors) < 1.6
    assert errors[-1] < 0.01


@pytest.mark.slow
@pytest.mark.parametrize("predictor", PREDICTORS, ids=lambda p: type(p).__name__)
@pytest.mark.parametrize(
    "corrector", [None, sf.LangevinCorrector(snr=0.1, batch_average=True)], ids=["none", "langevin"]
)
def test_reverse_sde_reproduces_moments_and_mode_weights(sde, predictor, corrector):
    # 10k samples, 400 steps. Tolerances from the sample size: a mode weight of 1/8 has binomial sd
    # 0.0033, so 0.02 is 6 sd; the mixture's std is about 1.4 per coordinate, so the mean's sd is 0.014
    # and 0.05 is 3.5 sd; a covariance entry of about 2 has sd 2 sqrt(2 / n) = 0.028, and 0.1 is 3.5 sd.
    # The rest of each margin is for the discretisation bias (measured: at most 0.009, 0.024, 0.041).
    gm = sf.problems.eight_gaussians(radius=2.0, std=0.2)
    n = 10_000
    out = sf.sample(
        gm.score_fn(sde),
        sde,
        sf.PCSampler(predictor, corrector),
        (n, 2),
        steps=400,
        generator=torch.Generator().manual_seed(0),
        dtype=torch.float64,
    )
    assert_mixture_moments(out.samples, gm, sde, weights=0.02, mean=0.05, cov=0.1)


@pytest.mark.slow
@pytest.mark.parametrize("predictor", PREDICTORS, ids=lambda p: type(p).__name__)
def test_pc_with_per_sample_langevin_reproduces_moments_in_16d(sde, predictor):
    # Per-sample step sizes in d = 16 (in 2-D the ratio ||z|| / ||score|| is heavy-tailed and inflates
    # variances, which is why the batch average exists). 5k samples, 200 steps; tolerances as above.
    gm = sf.GaussianMixture.random(dim=16, components=4, std_range=(0.2, 0.4), seed=0)
    out = sf.sample(
        gm.score_fn(sde),
        sde,
        sf.PCSampler(predictor, sf.LangevinCorrector(snr=0.16)),
        (5000, 16),
        steps=200,
        generator=torch.Generator().manual_seed(0),
        dtype=torch.float64,
    )
    assert_mixture_moments(out.samples, gm, sde, weights=0.03, mean=0.05, cov=0.1)


@pytest.mark.slow
@pytest.mark.parametrize("batch_average", [False, True])
def test_langevin_leaves_the_data_distribution_invariant(batch_average):
    # Exact samples of p_eps stay distributed as p_eps after 300 Langevin steps at t = eps.
    # Tolerance: 5% on variances (the unadjusted step's bias is ~2% at snr 0.2); mode weights within 0.02.
    sde = sf.VPSDE()
    gm = sf.GaussianMixture([1.0, 2.0], [[-1.0, 0.0], [1.0, 0.5]], [[0.3, 0.2], [0.25, 0.4]])
    n = 20_000
    x = gm.sample(n, torch.Generator().manual_seed(0), t=sde.eps, sde=sde)
    corrector = sf.LangevinCorrector(snr=0.2, n_steps=300, batch_average=batch_average)
    noise = sf.SharedNoise(torch.Generator().manual_seed(1))
    t = torch.tensor(sde.eps, dtype=torch.float64)
    y, _ = corrector.update(exact_score(gm, sde), sde, x, t, t, noise)
    assert (y - x).abs().mean() > 0.05, "the chain must actually move"
    cov = gm.cov(sde.eps, sde)
    assert ((torch.cov(y.T).diagonal() / cov.diagonal()) - 1).abs().max() < 0.05
    assert (y.mean(0) - gm.mean(sde.eps, sde)).abs().max() < 0.03
    weights = torch.bincount(gm.assign(y), minlength=2).double() / n
    assert (weights - gm.weights).abs().max() < 0.02


def test_sub_vp_runs_with_the_langevin_corrector():
    # The reference crashes here (it looks up `sde.alphas`, which sub-VP lacks).
    sde = sf.SubVPSDE()
    gm = sf.problems.eight_gaussians()
    out = sf.sample(
        gm.score_fn(sde), sde, sf.PCSampler(sf.ReverseDiffusion(), sf.LangevinCorrector()), (64, 2), steps=20
    )
    assert torch.isfinite(out.samples).all()


def test_per_sample_langevin_step_does_not_depend_on_other_samples():
    sde, gm = sf.VPSDE(), sf.problems.eight_gaussians()
    x = torch.randn(6, 2, dtype=torch.float64)
    t = torch.tensor(0.1, dtype=torch.float64)
    own = sf.LangevinCorrector(snr=0.16)
    shared = sf.LangevinCorrector(snr=0.16, batch_average=True)
    y_all, _ = own.update(exact_score(gm, sde), sde, x, t, t, sf.PerSampleNoise(0, 6))
    y_one, _ = own.update(exact_score(gm, sde), sde, x[:2], t, t, sf.PerSampleNoise(0, 2))
    torch.testing.assert_close(y_all[:2], y_one)
    z_all, _ = shared.update(exact_score(gm, sde), sde, x, t, t, sf.PerSampleNoise(0, 6))
    z_one, _ = shared.update(exact_score(gm, sde), sde, x[:2], t, t, sf.PerSampleNoise(0, 2))
    assert not torch.allclose(z_all[:2], z_one)


# --- NFE, determinism, trajectories -------------------------------------------------------------------
# Every configured solver (conf/solver, the one registry), and settings beyond them whose counts are worth checking:
# a final denoising step, several corrector steps. A new solver is picked up from its config with no entry here.
VARIANTS = {
    "rd+langevin2": sf.PCSampler(sf.ReverseDiffusion(), sf.LangevinCorrector(n_steps=2)),
    "ancestral+denoise": sf.PCSampler(sf.Ancestral(), denoise=True),
    "annealed_langevin_3": sf.PCSampler(sf.NonePredictor(), sf.AnnealedLangevin(n_steps=3)),
    "ode_rk4+denoise": sf.ProbabilityFlowODE("rk4", denoise=True),
}
SAMPLERS = {**every_configured_solver("eight_gaussians"), **VARIANTS}


@pytest.mark.parametrize("name", VARIANTS)
def test_nfe_is_the_number_of_model_calls(name):
    # The configured solvers' counts: test_fast_solvers.py's test_every_solver_keeps_dtype_and_counts_nfe.
    sampler, sde, gm = VARIANTS[name], sf.VESDE(), sf.problems.eight_gaussians()
    calls = []

    def model(x, t):
        calls.append(1)
        return gm.score(x, t, sde)

    out = sf.sample(
        model, sde, sampler, (16, 2), steps=None if sampler.nfe_per_step is None else 7, dtype=torch.float64
    )
    assert out.nfe == len(calls) > 0
    if sampler.nfe_per_step is not None:
        assert out.nfe == 7 * sampler.nfe_per_step + int(sampler.denoise)


@pytest.mark.parametrize("name", SAMPLERS)
def test_same_seed_same_samples_and_batch_size_invariance(name):
    sampler, sde, gm = SAMPLERS[name], sf.VPSDE(), sf.problems.eight_gaussians()
    steps = None if sampler.nfe_per_step is None else 10

    def run(n, offset=0):
        return sf.sample(
            gm.score_fn(sde), sde, sampler, (n, 2), steps=steps, seed=7, offset=offset, dtype=torch.float64
        ).samples

    full = run(8)
    assert torch.equal(full, run(8))
    # A solver whose steps follow one error norm for the whole batch (an adaptive one with an `rtol`) is batch
    # invariant to its tolerance only; every other, per-sample adaptive steps included, to rounding.
    tol = 100 * sampler.rtol if sampler.nfe_per_step is None and hasattr(sampler, "rtol") else 1e-12
    torch.testing.assert_close(run(3), full[:3], rtol=tol, atol=tol)
    torch.testing.assert_close(run(5, offset=3), full[3:], rtol=tol, atol=tol)
    assert not torch.allclose(
        full, sf.sample(gm.score_fn(sde), sde, sampler, (8, 2), steps=steps, seed=8, dtype=torch.float64).samples
    )


@pytest.mark.parametrize("name", ["euler_maruyama", "ode_rk4+denoise", "ode_dopri5"])
def test_trajectory_has_one_state_per_grid_point(name):
    sampler, sde, gm = SAMPLERS[name], sf.VPSDE(), sf.problems.eight_gaussians()
    grid = sf.UniformGrid()(sde, 6)
    x_T = sde.prior_sampling((5, 2), torch.Generator().manual_seed(0), dtype=torch.float64)
    out = sampler.sample(
        exact_score(gm, sde), sde, x_T, grid, generator=torch.Generator().manual_seed(0), return_trajectory=True
    )
    assert out.trajectory.shape == (7, 5, 2)
    assert torch.equal(out.trajectory[0], x_T)
    if not sampler.denoise:
        assert torch.equal(out.trajectory[-1], out.samples)


def test_final_denoising_is_tweedie():
    sde, gm = sf.VPSDE(), sf.problems.eight_gaussians()
    plain = sf.sample(gm.score_fn(sde), sde, sf.ProbabilityFlowODE("euler"), (4, 2), steps=5, dtype=torch.float64)
    denoised = sf.sample(
        gm.score_fn(sde), sde, sf.ProbabilityFlowODE("euler", denoise=True), (4, 2), steps=5, dtype=torch.float64
    )
    expect = exact_score(gm, sde).x0(plain.samples, sde.eps)
    torch.testing.assert_close(denoised.samples, expect)
    assert denoised.nfe == plain.nfe + 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_samplers_keep_the_dtype(dtype):
    # The configured solvers' dtypes: test_fast_solvers.py's test_every_solver_keeps_dtype_and_counts_nfe.
    sde, gm = sf.VESDE(), sf.problems.eight_gaussians()
    for sampler in VARIANTS.values():
        out = sf.sample(
            gm.score_fn(sde), sde, sampler, (4, 2), steps=None if sampler.nfe_per_step is None else 4, dtype=dtype
        )
        assert out.samples.dtype == dtype and torch.isfinite(out.samples).all()


# --- Errors at the door -------------------------------------------------------------------------------------
def test_bad_sampler_arguments():
    sde = sf.VPSDE()
    score = sf.ScoreFunction(lambda x, t: -x, sde)
    x = torch.zeros(2, 2)
    with pytest.raises(ValueError, match="unknown torchdiffeq method"):
        sf.ProbabilityFlowODE("rk45")
    with pytest.raises(ValueError, match="snr must be positive"):
        sf.LangevinCorrector(snr=-1)
    with pytest.raises(ValueError, match="n_steps"):
        sf.AnnealedLangevin(n_steps=0)
    with pytest.raises(ValueError, match="both are none"):
        sf.PCSampler(sf.NonePredictor(), sf.NoneCorrector())
    with pytest.raises(TypeError, match="Predictor"):
        sf.PCSampler("euler_maruyama")
    with pytest.raises(ValueError, match="decreasing grid"):
        sf.PCSampler(sf.EulerMaruyama()).sample(score, sde, x, torch.tensor([0.5, 0.9]))
    with pytest.raises(ValueError, match=r"inside|lie in \[eps, T\]"):
        sf.PCSampler(sf.EulerMaruyama()).sample(score, sde, x, torch.tensor([1.5, 0.5]))
    with pytest.raises(ValueError, match="at least 2 NFE"):
        sf.PCSampler(sf.ReverseDiffusion(), sf.LangevinCorrector()).steps_for_nfe(1)
    with pytest.raises(ValueError, match="give `steps`"):
        sf.sample(score, sde, sf.PCSampler(sf.EulerMaruyama()), (2, 2))
    with pytest.raises(TypeError, match="generator must be"):
        sf.sample(score, sde, sf.PCSampler(sf.EulerMaruyama()), (2, 2), steps=2, generator=3)


def test_grids():
    sde = sf.VPSDE()
    for grid in (sf.UniformGrid(), sf.QuadraticGrid(), sf.LogSNRGrid(), sf.KarrasGrid()):
        t = grid(sde, 10)
        assert len(t) == 11 and t[0] == sde.T and t[-1] == sde.eps and bool((t[1:] < t[:-1]).all())
    assert torch.equal(sf.ListGrid([1.0, 0.5, 0.1])(sde), torch.tensor([1.0, 0.5, 0.1], dtype=torch.float64))
    with pytest.raises(ValueError, match="strictly decreasing"):
        sf.ListGrid([0.1, 0.5])
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        sf.UniformGrid()(sde, 0)
    with pytest.raises(ValueError, match="grid bounds"):
        sf.UniformGrid(t_min=1e-6)(sde, 3)
