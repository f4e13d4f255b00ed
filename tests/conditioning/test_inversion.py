"""ODE inversion and SDEdit against Gaussian data, where the flow map and the reverse transition are known exactly."""

import pytest
import torch

import sdeflow as sf
from sdeflow.eval.likelihood import log_likelihood
from sdeflow.problems import flow_map, gaussian_data, reverse_transition

from helpers import exact_score, slope

MEAN, STD = 0.5, 0.3
ENCODERS = {
    "ddim": sf.DDIM(),
    "dpmpp_2m": sf.DPMSolverPP(2),
    "edm_heun": sf.EDMHeun(),
    "unipc_3": sf.UniPC(2),
    "deis_3": sf.DEIS(3),
    "ode_rk4": sf.ProbabilityFlowODE("rk4"),
}


def data(sde, n=64, dim=3):
    gm = gaussian_data(MEAN, STD, dim)
    return gm, gm.sample(n, torch.Generator().manual_seed(0), t=sde.eps, sde=sde)


@pytest.mark.parametrize("name", ENCODERS)
@pytest.mark.parametrize("sde", [sf.VPSDE(), sf.VESDE()], ids=["vp", "ve"])
def test_encoding_error_falls_at_the_solver_order(name, sde):
    solver = ENCODERS[name]
    gm, x = data(sde)
    exact = flow_map(sde, MEAN, STD, x, sde.eps, sde.T)
    steps = [40, 80, 160, 320]
    errors = [
        float(
            (sf.encode(exact_score(gm, sde), sde, solver, x, steps=n, grid=sf.LogSNRGrid()).samples - exact).abs().max()
        )
        for n in steps
    ]
    assert solver.convergence_order - 0.3 <= slope(steps, errors) <= solver.order + 1.0, errors


@pytest.mark.parametrize("sde", [sf.VPSDE(), sf.VESDE()], ids=["vp", "ve"])
def test_decode_of_encode_returns_the_data(sde):
    gm, x = data(sde)
    solver = sf.DPMSolverPP(2)
    gaps = []
    for steps in (10, 40, 160):
        z = sf.encode(exact_score(gm, sde), sde, solver, x, steps=steps, grid=sf.LogSNRGrid()).samples
        gaps.append(
            float(
                (sf.decode(exact_score(gm, sde), sde, solver, z, steps=steps, grid=sf.LogSNRGrid()).samples - x)
                .abs()
                .max()
            )
        )
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 1e-5, gaps


def test_the_code_is_the_one_inside_the_likelihood():
    sde = sf.VPSDE()
    gm = sf.GaussianMixture.random(dim=2, components=3, std_range=(0.2, 0.4), seed=4)
    x = gm.sample(32, torch.Generator().manual_seed(1), t=sde.eps, sde=sde)
    tol = dict(rtol=1e-9, atol=1e-9)
    z = sf.encode(exact_score(gm, sde), sde, sf.ProbabilityFlowODE("dopri5", **tol), x).samples
    _, _, z_lik = log_likelihood(exact_score(gm, sde), sde, x, return_code=True, **tol)
    torch.testing.assert_close(z, z_lik, rtol=1e-6, atol=1e-6)


def test_encoding_refuses_what_cannot_run_forwards():
    sde = sf.VPSDE()
    gm, x = data(sde, n=4)
    score = exact_score(gm, sde)
    with pytest.raises(ValueError, match="stochastic"):
        sf.encode(score, sde, sf.PCSampler(sf.EulerMaruyama()), x, steps=4)
    with pytest.raises(ValueError, match="cannot integrate forwards"):
        sf.encode(score, sde, sf.DPMSolverAdaptive(), x)
    with pytest.raises(ValueError, match="denoise=False"):
        sf.encode(score, sde, sf.DDIM(denoise=True), x, steps=4)
    with pytest.raises(ValueError, match="stochastic"):
        sf.StochasticDDIM().sample(score, sde, x, sf.UniformGrid()(sde, 4).flip(0))
    with pytest.raises(ValueError, match="strictly decreasing"):
        sf.DDIM().sample(score, sde, x, torch.tensor([1.0, 0.5, 0.7]))


@pytest.mark.parametrize("t_start", [0.4, 1.0])
@pytest.mark.parametrize(
    "solver", [sf.PCSampler(sf.EulerMaruyama()), sf.SASolver()], ids=["euler_maruyama", "sa_solver"]
)
def test_sdedit_output_law_is_the_exact_gaussian(t_start, solver):
    # Data N(MEAN, STD^2); the guides x0 ~ N(-0.4, 0.2^2), another law. Noised to t_start and run back by the
    # reverse SDE, the output is N(A m + b, A^2 v + C) with (A, b, C) the exact reverse transition and
    # N(m, v) the law of the noised guides. n = 20000: mean within 0.03, variance within 0.03 (about
    # 5 standard errors; discretisation error at 200 steps is below 0.01).
    sde, n = sf.VPSDE(), 20_000
    gm = gaussian_data(MEAN, STD, 2)
    x0 = -0.4 + 0.2 * torch.randn(n, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    out = sf.sdedit(exact_score(gm, sde), sde, solver, x0, t_start, steps=200, seed=5)
    assert out.timesteps[0] == pytest.approx(t_start) and out.timesteps[-1] == pytest.approx(sde.eps)
    t = torch.tensor(t_start, dtype=torch.float64)
    a, s = float(sde.alpha(t)), float(sde.sigma(t))
    m, v = a * -0.4, a**2 * 0.2**2 + s**2
    A, b, C = reverse_transition(sde, MEAN, STD, sde.eps, t_start)
    assert (out.samples.mean(0) - (A * m + b)).abs().max() < 0.03
    assert (out.samples.var(0) - (A**2 * v + C)).abs().max() < 0.03


def test_sdedit_from_T_is_unconditional_sampling_in_distribution():
    sde, n = sf.VPSDE(), 20_000
    gm = sf.problems.eight_gaussians(radius=2.0, std=0.2)
    x0 = torch.zeros(n, 2, dtype=torch.float64)
    edited = sf.sdedit(gm.score_fn(sde), sde, sf.DPMSolverPP3MSDE(), x0, sde.T, steps=100, seed=1).samples
    fresh = sf.sample(
        gm.score_fn(sde), sde, sf.DPMSolverPP3MSDE(), (n, 2), steps=100, seed=2, dtype=torch.float64
    ).samples
    w_edit = torch.bincount(gm.assign(edited), minlength=8).double() / n
    w_fresh = torch.bincount(gm.assign(fresh), minlength=8).double() / n
    assert (w_edit - w_fresh).abs().max() < 0.02
    assert (edited.mean(0) - fresh.mean(0)).abs().max() < 0.05
    assert (torch.cov(edited.T) - torch.cov(fresh.T)).abs().max() < 0.1


def test_sdedit_refuses_bad_times():
    sde = sf.VPSDE()
    with pytest.raises(ValueError, match="t_start must lie"):
        sf.sdedit(lambda x, t: -x, sde, sf.DDIM(), torch.zeros(2, 2), 0.0, steps=3)
