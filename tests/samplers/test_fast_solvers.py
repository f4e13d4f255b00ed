"""Solvers against exact answers: the order of every deterministic grid solver, the statistics of every stochastic
one, NFE counts and dtypes of all (each from the registry, conf/solver, plus variants), identities between
algorithms, the adaptive and analytic solvers' own checks, errors."""

import json

import pytest
import torch

import sdeflow as sf
from sdeflow.eval.metrics import rms_error

from helpers import assert_mixture_moments, every_configured_solver, exact_score, slope

CONFIGURED = every_configured_solver("eight_gaussians")

# Settings beyond conf/solver, each worth the generic checks: other orders and variants, and the deterministic
# (eta = 0, tau = 0, no restarts) limits of stochastic solvers. A configured solver is tested with no entry here.
DETERMINISTIC_VARIANTS = {
    "dpm_solver_1": sf.DPMSolver(1),
    "unipc_1_bh2": sf.UniPC(1, "bh2"),
    "unip_2": sf.UniPC(2, corrector=False),
    "deis_2": sf.DEIS(2),
    "sa_solver_p2c3": sf.SASolver(2, 3, tau=0.0),
    "sa_solver_p3c4": sf.SASolver(3, 4, tau=0.0),
    "er_sde_2_ode": sf.ERSDE(2, sf.ODEScaler()),
    "er_sde_3_ode": sf.ERSDE(3, sf.ODEScaler()),
    "dpmpp_3m_sde_eta0": sf.DPMSolverPP3MSDE(eta=0.0),
    "dpmpp_2s": sf.DPMSolverPPSDESinglestep(eta=0.0),
    "euler": sf.EulerAncestral(eta=0.0),
    "restart_none": sf.Restart(restarts=[]),
    # The references' numerics, second order where they depart from the Taylor expansion.
    "dpmpp_3m_reference": sf.DPMSolverPP(3, reference_3m=True),
    "dpmpp_3m_sde_eta0_reference": sf.DPMSolverPP3MSDE(eta=0.0, reference_3m=True),
    "er_sde_3_ode_unshifted": sf.ERSDE(3, sf.ODEScaler(), shift_difference=False),
    "ipndm_3": sf.IPNDM(3),
}
STOCHASTIC_VARIANTS = {
    "edm_stochastic_churn_everywhere": sf.EDMStochastic(S_churn=10.0, S_tmin=0.0, S_tmax=1e3),
    "er_sde_reverse": sf.ERSDE(1, sf.SDEScaler()),
}
VARIANTS = {**DETERMINISTIC_VARIANTS, **STOCHASTIC_VARIANTS}
SOLVERS = {**CONFIGURED, **VARIANTS}


def on_its_grid(solver) -> bool:
    """Whether `solver` steps on every point of the grid it is given and returns the solution there (no final
    denoising): what a test that refines the grid measures."""
    return solver.nfe_per_step is not None and not solver.fixed_head and not solver.denoise


# The exceptions, each tested elsewhere: a solver absent from these tables gets the generic tests.
ORDER_ELSEWHERE = {
    "auto": "its order is its weakest choice's, while these grids all run UniPC-3: test_by_budget runs each choice",
}
MOMENTS_ELSEWHERE = {
    "gotta_go_fast": "its rejections bias 2-D mode weights (its docstring): test_gotta_go_fast_reproduces_moments_*",
    "pc_langevin": "per-sample Langevin steps are heavy-tailed in 2-D: test_pc_with_per_sample_langevin_*_in_16d",
}
DETERMINISTIC = {
    name: s for name, s in SOLVERS.items() if not s.stochastic and on_its_grid(s) and name not in ORDER_ELSEWHERE
}
# Stochastic solvers that claim convergence (order >= 1: not corrector-only sampling), adaptive ones included.
STOCHASTIC = {
    name: s
    for name, s in SOLVERS.items()
    if s.stochastic and s.order >= 1 and not s.fixed_head and not s.denoise and name not in MOMENTS_ELSEWHERE
}


# The order problem: a mixture of its own (seed 1; the benchmark's is seed 0) and step counts from 60 to 480, where
# every solver's error is in its asymptotic regime: the warm-up's lower-order steps no longer show, the local slopes
# have settled, and the errors stay far above the reference's (a 1e-12 solve). Two grid families, each on its SDE in
# the fast tier and on the other in the slow one.
ORDER_STEPS = [60, 120, 240, 480]
ORDER_CASES = {
    "vp-logsnr": (sf.VPSDE(), sf.LogSNRGrid()),
    "ve-karras": (sf.VESDE(), sf.KarrasGrid()),
    "vp-karras": (sf.VPSDE(), sf.KarrasGrid()),
    "ve-logsnr": (sf.VESDE(), sf.LogSNRGrid()),
}
SLOW_CASES = ("vp-karras", "ve-logsnr")


@pytest.fixture(scope="module")
def order_problem():
    """(mixture, reference(sde) -> (x_T, the exact PF-ODE solution)), each reference solved once per module."""
    gm = sf.GaussianMixture.random(dim=4, components=3, std_range=(0.3, 0.5), seed=1)
    solved = {}

    def reference(sde):
        key = repr(sde)
        if key not in solved:
            x_T = sde.prior_sampling((32, 4), torch.Generator().manual_seed(0), dtype=torch.float64)
            solved[key] = x_T, gm.ode_reference(sde, x_T, rtol=1e-12, atol=1e-12)
        return solved[key]

    return gm, reference


def fitted_order(solver, case: str, order_problem) -> float:
    """The slope of log(error) against log(1 / steps) over `ORDER_STEPS` on the grid family and SDE of `case`."""
    (sde, grid), (gm, reference) = ORDER_CASES[case], order_problem
    x_T, ref = reference(sde)
    score = exact_score(gm, sde)
    errors = [rms_error(solver.sample(score, sde, x_T, grid(sde, n)).samples, ref).max() for n in ORDER_STEPS]
    return slope(ORDER_STEPS, errors)


@pytest.mark.parametrize("name", DETERMINISTIC)
@pytest.mark.parametrize(
    "case", [pytest.param(c, marks=pytest.mark.slow) if c in SLOW_CASES else c for c in ORDER_CASES]
)
def test_convergence_order(name, case, order_problem):
    # Float64, exact score. Every solver, multistep ones included, is held to its declared order.
    solver = DETERMINISTIC[name]
    fitted = fitted_order(solver, case, order_problem)
    assert abs(fitted - solver.order) <= 0.3, f"fitted order {fitted:.2f}, declared {solver.order}"


def test_ddim_is_dpm_solver_1(sde):
    gm = sf.GaussianMixture.random(dim=3, components=4, seed=2)
    x_T = sde.prior_sampling((16, 3), torch.Generator().manual_seed(0), dtype=torch.float64)
    grid = sf.KarrasGrid()(sde, 12)
    a = sf.DDIM().sample(exact_score(gm, sde), sde, x_T, grid).samples
    b = sf.DPMSolver(1).sample(exact_score(gm, sde), sde, x_T, grid).samples
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_unip_2_bh2_is_dpm_solver_pp_2m(sde):
    gm = sf.GaussianMixture.random(dim=3, components=4, seed=2)
    x_T = sde.prior_sampling((16, 3), torch.Generator().manual_seed(0), dtype=torch.float64)
    grid = sf.LogSNRGrid()(sde, 15)
    a = sf.UniPC(2, "bh2", corrector=False).sample(exact_score(gm, sde), sde, x_T, grid).samples
    b = sf.DPMSolverPP(2).sample(exact_score(gm, sde), sde, x_T, grid).samples
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "name",
    [
        "dpmpp_2m",
        "dpmpp_3m",
        "unipc_2_bh2",
        "ddim",
        "edm_heun",
        "sa_solver_p2c3",
        "er_sde_3_ode",
        "dpmpp_3m_sde_eta0",
        "dpmpp_2s",
        "restart_none",
    ],
)
def test_invariant_to_the_time_parameterisation(name):
    # The probability-flow ODE of VP, written in x / alpha and sigma / alpha, is VE's: a solver that
    # works in lambda gives the same answer on a VP grid and on the VE grid with the same log-SNRs.
    vp = sf.VPSDE()
    gm = sf.GaussianMixture.random(dim=3, components=4, seed=2)
    t_vp = sf.LogSNRGrid()(vp, 10)
    ratio = torch.exp(-vp.lambda_(t_vp))  # sigma / alpha at each grid point
    ve = sf.VESDE(sigma_min=float(ratio[-1]), sigma_max=float(ratio[0]), eps=0.0)
    t_ve = ve.t_from_lambda(vp.lambda_(t_vp))
    t_ve[0], t_ve[-1] = 1.0, 0.0
    x_T = vp.prior_sampling((16, 3), torch.Generator().manual_seed(0), dtype=torch.float64)
    a_T, a_0 = vp.alpha(t_vp[0]), vp.alpha(t_vp[-1])
    out_vp = DETERMINISTIC[name].sample(exact_score(gm, vp), vp, x_T, t_vp).samples
    out_ve = DETERMINISTIC[name].sample(exact_score(gm, ve), ve, x_T / a_T, t_ve).samples
    torch.testing.assert_close(out_vp / a_0, out_ve, rtol=1e-9, atol=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("name", STOCHASTIC)
def test_stochastic_solvers_reproduce_moments_and_mode_weights(sde, name):
    # 20k samples, 200 steps (adaptive solvers: their own); tolerances: weights 0.02, mean 0.05, covariance 0.1.
    gm, solver = sf.problems.eight_gaussians(radius=2.0, std=0.2), STOCHASTIC[name]
    out = sf.sample(
        gm.score_fn(sde),
        sde,
        solver,
        (20_000, 2),
        steps=None if solver.nfe_per_step is None else 200,
        grid=sf.LogSNRGrid(),
        generator=torch.Generator().manual_seed(0),
        dtype=torch.float64,
    )
    assert_mixture_moments(out.samples, gm, sde, weights=0.02, mean=0.05, cov=0.1)


@pytest.mark.slow
@pytest.mark.parametrize("sde", [sf.VPSDE(), sf.VESDE()], ids=["vp", "ve"])
def test_gotta_go_fast_reproduces_moments_and_counts_nfe(sde):
    # d = 16 (see the class docstring for the rejection bias in very low dimensions); 5k samples.
    # Tolerances: mode weights 0.03 (binomial sd <= 0.007), mean 0.05, covariance 0.1.
    gm = sf.GaussianMixture.random(dim=16, components=4, std_range=(0.2, 0.4), seed=0)
    calls = []

    def model(x, t):
        calls.append(1)
        return gm.score(x, t, sde)

    nfes = []
    for reltol in (0.05, 0.01):
        calls.clear()
        out = sf.sample(
            model,
            sde,
            sf.GottaGoFast(reltol=reltol, abstol=reltol / 2),
            (5000, 16),
            generator=torch.Generator().manual_seed(0),
            dtype=torch.float64,
        )
        assert out.nfe == len(calls)
        nfes.append(out.nfe)
        assert_mixture_moments(out.samples, gm, sde, weights=0.03, mean=0.05, cov=0.1)
    assert nfes[1] > nfes[0]


def test_gotta_go_fast_is_batch_invariant_with_per_sample_noise():
    sde, gm = sf.VPSDE(), sf.problems.eight_gaussians()

    def run(n, off=0):
        solver = sf.GottaGoFast(reltol=0.05)
        return sf.sample(gm.score_fn(sde), sde, solver, (n, 2), seed=3, offset=off, dtype=torch.float64).samples

    full = run(6)
    torch.testing.assert_close(run(2), full[:2], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(run(4, 2), full[2:], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("order", [2, 3])
def test_adaptive_dpm_solver_error_follows_its_tolerance(order):
    sde = sf.VESDE(0.002, 80.0, eps=0.0)
    gm = sf.GaussianMixture.random(dim=8, components=4, seed=0)
    x_T = sde.prior_sampling((64, 8), torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = gm.ode_reference(sde, x_T)
    ends = torch.tensor([sde.T, sde.eps], dtype=torch.float64)
    loose = sf.DPMSolverAdaptive(order, rtol=0.05, atol=0.01).sample(exact_score(gm, sde), sde, x_T, ends)
    tight = sf.DPMSolverAdaptive(order, rtol=1e-3, atol=2e-4).sample(exact_score(gm, sde), sde, x_T, ends)
    e_loose, e_tight = rms_error(loose.samples, ref).median(), rms_error(tight.samples, ref).median()
    assert tight.nfe > loose.nfe
    assert e_tight < 1e-3 and e_tight < e_loose


def test_analytic_jump_is_exact_for_gaussian_data(sde):
    gm = sf.GaussianMixture([1.0], [[0.5, -1.0, 0.2]], [[0.3, 0.8, 0.5]])
    x_T = sde.prior_sampling((10, 3), torch.Generator().manual_seed(0), dtype=torch.float64)
    stats = sf.GaussianStats.from_distribution(gm)
    T, e = torch.tensor(sde.T, dtype=torch.float64), torch.tensor(sde.eps, dtype=torch.float64)
    torch.testing.assert_close(stats.flow(sde, x_T, T, e), gm.ode_reference(sde, x_T), rtol=1e-8, atol=1e-8)
    # Through the sampler: the jump costs nothing, the rest is the inner solver's.
    jump = sf.AnalyticJump(sf.DDIM(), stats, sigma_jump=0.5)
    out = sf.sample(gm.score_fn(sde), sde, jump, (10, 3), steps=4, dtype=torch.float64)
    assert out.nfe == 4 and len(out.timesteps) == 6


def test_low_rank_statistics_from_samples():
    x = torch.randn(500, 1, 4, 4, dtype=torch.float64) * torch.linspace(0.1, 2.0, 16).reshape(1, 1, 4, 4)
    stats = sf.GaussianStats.from_samples(x, rank=3)
    assert stats.eigvecs.shape == (16, 3) and stats.rest > 0
    sde = sf.VPSDE()
    y = stats.flow(sde, torch.randn(5, 1, 4, 4, dtype=torch.float64), torch.tensor(1.0), torch.tensor(0.3))
    assert y.shape == (5, 1, 4, 4) and torch.isfinite(y).all()


def test_grid_optimisation_helps_on_held_out_samples(tmp_path):
    sde = sf.VESDE(0.002, 80.0, eps=0.0)
    gm = sf.GaussianMixture.random(dim=8, components=4, seed=0)
    score = exact_score(gm, sde)
    pilot = sde.prior_sampling((64, 8), torch.Generator().manual_seed(1), dtype=torch.float64)
    held_out = sde.prior_sampling((64, 8), torch.Generator().manual_seed(2), dtype=torch.float64)
    solver = sf.DPMSolverPP(2)
    init = sf.UniformGrid()(sde, 8)
    grid, report = sf.optimize_grid(
        solver, score, sde, pilot, gm.ode_reference(sde, pilot), init, maxiter=300, progress=False
    )
    ref = gm.ode_reference(sde, held_out)
    before = rms_error(solver.sample(score, sde, held_out, init).samples, ref).median()
    after = rms_error(solver.sample(score, sde, held_out, grid).samples, ref).median()
    assert after < 0.5 * before
    path = sf.save_grid(tmp_path / "grid.json", grid, report)
    loaded = sf.OptimizedGrid(path)
    assert torch.equal(loaded(sde), grid) and loaded.report["steps"] == 8
    with pytest.raises(FileNotFoundError, match="no optimised grid"):
        sf.OptimizedGrid(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text(json.dumps({"times": [1, 0]}))
    with pytest.raises(ValueError, match="not a saved grid"):
        sf.OptimizedGrid(tmp_path / "bad.json")


@pytest.mark.parametrize("name", SOLVERS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_solver_keeps_dtype_and_counts_nfe(name, dtype):
    solver, sde, gm = SOLVERS[name], sf.VESDE(), sf.problems.eight_gaussians()
    calls = []

    def model(x, t):
        calls.append(1)
        return gm.score(x, t, sde)

    steps = None if solver.nfe_per_step is None else 6
    out = sf.sample(model, sde, solver, (8, 2), steps=steps, grid=sf.KarrasGrid(), dtype=dtype)
    assert out.samples.dtype == dtype and torch.isfinite(out.samples).all()
    assert out.nfe == len(calls)
    if steps is not None:
        assert out.nfe == steps * solver.nfe_per_step + getattr(solver, "restart_nfe", 0) + int(solver.denoise)


def test_impossible_combinations_are_refused():
    sde = sf.VPSDE()
    score = sf.ScoreFunction(lambda x, t: -x, sde)
    x = torch.zeros(2, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="needs at least 3 steps"):
        sf.DPMSolverPP(3).sample(score, sde, x, sf.UniformGrid()(sde, 2))
    with pytest.raises(ValueError, match="needs at least 3 steps"):
        sf.UniPC(3).sample(score, sde, x, sf.UniformGrid()(sde, 2))
    with pytest.raises(ValueError, match="order 2 or 3"):
        sf.DPMSolverPP(4)
    with pytest.raises(ValueError, match="variant"):
        sf.UniPC(2, variant="bh3")
    with pytest.raises(ValueError, match="at least 3 NFE"):
        sf.DPMSolver(3).steps_for_nfe(2)
    with pytest.raises(ValueError, match="chooses its own steps"):
        sf.DPMSolverAdaptive().steps_for_nfe(10)
    with pytest.raises(ValueError, match="sigma_jump must lie"):
        sf.AnalyticJump(sf.DDIM(), sf.GaussianStats.from_cov(torch.zeros(2), torch.eye(2)), sigma_jump=1e6).timesteps(
            sf.UniformGrid(), sde, 4
        )
    with pytest.raises(ValueError, match="S_churn"):
        sf.EDMStochastic(S_churn=-1)
