"""Real models' schedules as linear SDEs: cosine, discrete-time VP (DDPM / ADM tables), EDM's sigma = t, flow matching.

Every schedule is checked against its closed form, against the forward SDE it defines (fine
Euler-Maruyama from a point mass), through t -> lambda -> t, and through the exponential
integrators, whose end points in (x / alpha, lambda) do not depend on the schedule.
"""

import math

import numpy as np
import pytest
import torch

import sdeflow as sf

from helpers import exact_score

SCHEDULES = {
    "vp": sf.VPSDE(),
    "ve": sf.VESDE(),
    "cosine": sf.CosineVPSDE(),
    "ddpm_linear": sf.DiscreteVPSDE(sf.linear_betas()),
    "adm_cosine": sf.DiscreteVPSDE(sf.cosine_betas()),
    "edm": sf.EDMSDE(),
    "flow": sf.FlowSDE(),
}
NEW = ["cosine", "ddpm_linear", "adm_cosine", "edm", "flow"]


def times(sde, n=101):
    return torch.linspace(sde.eps, sde.T, n, dtype=torch.float64)


# --- Closed forms ------------------------------------------------------------------------------------------------
def test_cosine_schedule_is_nichol_and_dhariwals():
    sde, s = sf.CosineVPSDE(), 0.008
    t = times(sde).numpy()
    abar = np.cos((t + s) / (1 + s) * math.pi / 2) ** 2 / math.cos(s / (1 + s) * math.pi / 2) ** 2
    np.testing.assert_allclose(sde.alpha(times(sde)).numpy() ** 2, abar, rtol=1e-12)
    np.testing.assert_allclose(sde.sigma(times(sde)).numpy() ** 2, 1 - abar, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(
    "betas", [sf.linear_betas(), sf.cosine_betas(), sf.scaled_linear_betas()], ids=["linear", "cosine", "scaled"]
)
def test_discrete_schedule_holds_the_tables_alphas_at_the_training_times(betas):
    sde = sf.DiscreteVPSDE(betas)
    abar = np.cumprod(1 - np.asarray(betas))
    t = torch.arange(1, 1001, dtype=torch.float64) / 1000  # training timestep k is t = (k + 1) / N
    np.testing.assert_allclose(sde.alpha(t).numpy() ** 2, abar, rtol=1e-12)
    np.testing.assert_allclose(sde.sigma(t).numpy() ** 2, 1 - abar, rtol=1e-10)
    assert sde.alpha(torch.tensor(0.0, dtype=torch.float64)).item() == 1.0
    # Between the training times log alpha is linear: the midpoint is the geometric mean of the neighbours' alphas.
    mid = sde.alpha(torch.tensor(500.5 / 1000, dtype=torch.float64)).item()
    assert mid == pytest.approx((abar[499] * abar[500]) ** 0.25, rel=1e-12)


def test_beta_tables_match_diffusers():
    diffusers = pytest.importorskip("diffusers")
    for ours, name in [
        (sf.linear_betas(), "linear"),
        (sf.scaled_linear_betas(), "scaled_linear"),
        (sf.cosine_betas(), "squaredcos_cap_v2"),
    ]:
        kw = {"beta_start": 0.00085, "beta_end": 0.012} if name == "scaled_linear" else {}
        theirs = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule=name, **kw).betas.double().numpy()
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-8, err_msg=name)  # theirs are float32


def test_edm_and_flow_are_their_closed_forms():
    edm, flow = sf.EDMSDE(), sf.FlowSDE()
    t = times(edm)
    assert torch.equal(edm.sigma(t), t) and torch.equal(edm.alpha(t), torch.ones_like(t))
    assert (edm.T, edm.eps, edm.prior_std) == (80.0, 0.002, 80.0)
    t = times(flow)
    torch.testing.assert_close(flow.alpha(t), 1 - t, rtol=1e-14, atol=1e-15)
    assert torch.equal(flow.sigma(t), t)


@pytest.mark.parametrize("name", NEW)
def test_drift_and_diffusion_are_the_derivatives_of_the_marginals(name):
    # f = d log alpha / dt and g^2 = d sigma^2 / dt - 2 f sigma^2, by central differences away from the discrete knots.
    sde = SCHEDULES[name]
    t = torch.linspace(sde.eps, sde.T, 37, dtype=torch.float64)[1:-1] + 0.37 / sde.N * sde.T
    h = 1e-6 * sde.T
    dlog_alpha = (sde.log_alpha(t + h) - sde.log_alpha(t - h)) / (2 * h)
    dvar = (sde.sigma(t + h) ** 2 - sde.sigma(t - h) ** 2) / (2 * h)
    torch.testing.assert_close(sde.f(t), dlog_alpha, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(sde.g2(t), dvar - 2 * sde.f(t) * sde.sigma(t) ** 2, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", NEW)
def test_lambda_round_trips(name):
    sde = SCHEDULES[name]
    t = times(sde, 1001)
    torch.testing.assert_close(sde.t_from_lambda(sde.lambda_(t)), t, rtol=1e-9, atol=1e-12)
    lam = sde.lambda_(t)
    assert bool((lam[1:] < lam[:-1]).all()), "lambda must decrease in t"


@pytest.mark.parametrize("name", NEW)
def test_forward_sde_reaches_the_stated_marginal(name):
    # From a point mass x0, fine Euler-Maruyama of dx = f x dt + g dW gives N(alpha x0, sigma^2):
    # 40,000 paths, 2,000 steps.
    sde = SCHEDULES[name]
    end = 0.6 * sde.T
    n, steps, x0 = 40_000, 2_000, 1.5
    gen = torch.Generator().manual_seed(0)
    x = torch.full((n, 1), x0, dtype=torch.float64)
    grid = torch.linspace(0.0, end, steps + 1, dtype=torch.float64)
    for a, b in zip(grid[:-1], grid[1:]):
        drift, diffusion = sde.sde(x, a)
        x = (
            x
            + drift * (b - a)
            + diffusion[:, None] * torch.sqrt(b - a) * torch.randn(x.shape, generator=gen, dtype=torch.float64)
        )
    t = torch.tensor(end, dtype=torch.float64)
    alpha, sigma = sde.alpha(t).item(), sde.sigma(t).item()
    # Tolerances: 5 standard errors of the mean and of the standard deviation, plus the O(dt) bias of the scheme.
    assert x.mean().item() == pytest.approx(alpha * x0, abs=5 * sigma / math.sqrt(n) + 2e-3 * x0)
    assert x.std().item() == pytest.approx(sigma, rel=5 / math.sqrt(2 * n) + 2e-3)


# --- The exponential integrators do not see the schedule ---------------------------------------------------------
@pytest.mark.parametrize(
    "solver", [sf.DPMSolverPP(2), sf.DPMSolverPP(3), sf.UniPC(2), sf.UniPC(3, variant="bh1"), sf.DDIM()], ids=repr
)
def test_exponential_integrators_give_the_same_end_points_on_grids_matched_in_lambda(solver):
    # DPM-Solver++ and UniPC step in lambda on x / alpha with x0 predictions, which depend on (x / alpha, lambda) only:
    # started from the same x / alpha on the same lambda grid, every schedule ends at the same x / alpha.
    gm = sf.GaussianMixture.random(3, 4, seed=1)
    lam = torch.linspace(-3.5, 4.5, 13, dtype=torch.float64)
    start = torch.randn(64, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * math.exp(3.5)
    ends = {}
    for name, sde in SCHEDULES.items():
        grid = sf.ListGrid(sde.t_from_lambda(lam))
        ts = solver.plan(sde, grid, steps=12)
        alpha = sde.alpha(ts[[0, -1]])
        out = solver.sample(exact_score(gm, sde), sde, alpha[0] * start, ts).samples
        ends[name] = out / alpha[1]
    for name, end in ends.items():
        torch.testing.assert_close(end, ends["vp"], rtol=1e-9, atol=1e-9, msg=name)


# --- Flow matching's velocity ------------------------------------------------------------------------------------
def test_flow_prediction_round_trips_on_every_schedule():
    gen = torch.Generator().manual_seed(0)
    x0, eps = (
        torch.randn(8, 3, generator=gen, dtype=torch.float64),
        torch.randn(8, 3, generator=gen, dtype=torch.float64),
    )
    for name, sde in SCHEDULES.items():
        t = torch.tensor(0.3 * sde.T, dtype=torch.float64)
        alpha, sigma = sde.alpha(t), sde.sigma(t)
        v = sf.FlowPrediction().from_eps_x0(eps, x0, alpha, sigma)
        got_eps, got_x0 = sf.FlowPrediction().to_eps_x0(v, alpha * x0 + sigma * eps, alpha, sigma)
        torch.testing.assert_close(got_eps, eps, msg=name)
        torch.testing.assert_close(got_x0, x0, msg=name)


def test_ddim_on_the_flow_path_is_euler_on_the_velocity_from_t_equal_one():
    # x' = alpha' x0 + sigma' eps = (1 - t') (x - t v) + t' (x + (1 - t) v) = x + (t' - t) v:
    # DDIM is Euler for rectified flow, and it starts at t = 1 (alpha = 0), where the velocity reading
    # needs no division by alpha.
    sde = sf.FlowSDE(T=1.0)
    gm = sf.GaussianMixture.random(2, 4, seed=2)
    exact = sf.ScoreFunction(gm.score_fn(sf.FlowSDE(T=0.999999)), sde)

    def velocity(x, t):  # the exact mixture's E[eps - x0 | x_t] for t < 1; at t = 1, x = eps and E[x0] is the mean
        t = t.clamp_max(1 - 1e-12)
        eps, x0 = exact.eps_x0(x, t)
        return eps - x0

    score = sf.ScoreFunction(velocity, sde, sf.FlowPrediction())
    x = torch.randn(32, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ts = sf.UniformGrid()(sde, 8)
    ours = sf.DDIM().sample(score, sde, x, ts).samples
    for a, b in zip(ts[:-1], ts[1:]):
        x = x + (b - a) * velocity(x, a.expand(len(x)))
    torch.testing.assert_close(ours, x, rtol=1e-12, atol=1e-12)


# --- Grids on the training timesteps -----------------------------------------------------------------------------
def test_leading_timesteps_are_diffusers_ddim_timesteps():
    diffusers = pytest.importorskip("diffusers")
    sde = sf.DiscreteVPSDE(sf.linear_betas())
    for steps, offset in [(10, 1), (50, 1), (7, 0)]:
        sched = diffusers.DDIMScheduler(num_train_timesteps=1000, steps_offset=offset)
        sched.set_timesteps(steps)
        grid = sf.LeadingTimesteps(offset, t_min=0.0)(sf.DiscreteVPSDE(sf.linear_betas(), eps=0.0), steps)
        np.testing.assert_array_equal(np.rint(grid[:-1].numpy() * 1000 - 1).astype(int), sched.timesteps.numpy())
    with pytest.raises(ValueError, match="raise the offset or lower t_min"):
        sf.LeadingTimesteps(offset=0)(sde, 10)
