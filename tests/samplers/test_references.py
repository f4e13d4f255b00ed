"""Solvers against their reference implementations: the options that reproduce each reference, checked against its
algorithm re-derived from its source (on the same inputs and, where it draws noise, the same noise), and the
derivations behind the departures from them."""

import dataclasses
import math

import numpy as np
import pytest
import torch

import sdeflow as sf
from sdeflow.eval.metrics import rms_error
from sdeflow.samplers.exponential import third_order_weights

from helpers import exact_score

GM = sf.GaussianMixture.random(dim=3, components=4, seed=2)
SDES = {"vp": sf.VPSDE(), "ve": sf.VESDE(0.002, 80.0, eps=0.0)}


class StepNoise:
    """The same normal draw for step i of `grid`: to a solver through `increment` (found by the step's start time),
    and to a reference as `z[i]`."""

    def __init__(self, grid: torch.Tensor, shape, seed: int = 3):
        g = torch.Generator().manual_seed(seed)
        self.z = torch.randn((len(grid) - 1, *shape), generator=g, dtype=torch.float64)
        self.step = {t: i for i, t in enumerate(grid[:-1].tolist())}

    def randn(self, shape, dtype=torch.float64, device=None):
        raise AssertionError("this solver was expected to draw only step increments")

    def increment(self, shape, t0: float, t1: float, dtype=torch.float64, device=None):
        return self.z[self.step[t0]].to(dtype)


def scaled(sde, grid):
    """(sigma~ = sigma / alpha at each grid point as floats, the denoiser D(x~, i) = x0(alpha_i x~, t_i))."""
    score = exact_score(GM, sde)
    alpha = sde.alpha(grid)
    return sde.nsr(grid).tolist(), lambda x, i: score.x0(alpha[i] * x, grid[i])


def prior(sde, n: int = 16) -> torch.Tensor:
    return sde.prior_sampling((n, 3), torch.Generator().manual_seed(0), dtype=torch.float64)


# --- DPM-Solver++(3M) -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("eta", [0.0, 0.7])
def test_the_3m_step_integrates_a_quadratic_x0_exactly(eta):
    # Third order means exact for an x0 quadratic in lambda: x0 = 1 - 2 u + 3 u^2 at u = lambda - lambda_s, sampled at
    # the step's start and two earlier points. The drift integral, with H = (1 + eta) h and E = e^{-H}, is
    # a_t (1 + eta) int_0^h e^{-(1 + eta)(h - u)} x0(u) du = a_t [(1 - E) p0 + (H - 1 + E) p1 / (1 + eta)
    # + (H^2 - 2 H + 2 - 2 E) p2 / (1 + eta)^2]. The references' D2 misses the p2 term by half.
    a_t, h, r0, r1, p = 0.7, 0.3, 1.2, 0.9, (1.0, -2.0, 3.0)
    H, E = (1 + eta) * h, math.exp(-(1 + eta) * h)
    exact = a_t * (
        (1 - E) * p[0] + (H - 1 + E) * p[1] / (1 + eta) + (H * H - 2 * H + 2 - 2 * E) * p[2] / (1 + eta) ** 2
    )
    m = [p[0] + p[1] * u + p[2] * u * u for u in (0.0, -r0 * h, -(r0 + r1) * h)]  # at the last three grid points
    for reference, missing in ((False, 0.0), (True, 1.0)):
        c = third_order_weights(a_t, H, r0, r1, reference)
        step = -a_t * math.expm1(-H) * m[0] + sum(ci * mi for ci, mi in zip(c, m))
        # The references' error is half the x0'' term: a_t phi_3 h^2 x0'' / 2, with x0'' = 2 p2.
        phi_3 = (math.expm1(-H) / H + 1) / H - 0.5
        assert step == pytest.approx(exact + missing * a_t * phi_3 * h * h * p[2], rel=1e-12, abs=1e-14)


@pytest.mark.parametrize("reference_3m", [False, True], ids=["taylor", "reference"])
def test_the_folded_3m_weights_are_the_papers_form(reference_3m):
    # DPMSolverPP's third-order step, as folded weights, against the paper's form written out: with the reference's D2
    # that form is diffusers' `multistep_dpm_solver_third_order_update` (dpmsolver++), with twice it the Taylor term.
    sde = sf.VPSDE()
    grid = sf.LogSNRGrid()(sde, 10)
    sched = sf.GridCoefficients(sde, grid)
    g = torch.Generator().manual_seed(1)
    x, m2, m1, m0 = (torch.randn(5, 3, generator=g, dtype=torch.float64) for _ in range(4))
    i, lam, alpha, sigma = 4, sched.num.lam, sched.num.alpha, sched.num.sigma
    h, h0, h1 = lam[i + 1] - lam[i], lam[i] - lam[i - 1], lam[i - 1] - lam[i - 2]
    r0, r1 = h0 / h, h1 / h
    d1_0, d1_1 = (m0 - m1) / r0, (m1 - m2) / r1
    D1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
    D2 = (1 if reference_3m else 2) * (d1_0 - d1_1) / (r0 + r1)
    phi_1 = math.expm1(-h)
    paper = (
        sigma[i + 1] / sigma[i] * x
        - alpha[i + 1] * phi_1 * m0
        + alpha[i + 1] * (phi_1 / h + 1) * D1
        - alpha[i + 1] * ((phi_1 + h) / h**2 - 0.5) * D2
    )
    folded = sf.DPMSolverPP.update(x, [m2, m1, m0], sched, i, 3, reference_3m)
    torch.testing.assert_close(folded, paper, rtol=1e-13, atol=1e-13)


def k_diffusion_3m_sde(denoise, x, sigmas, eta: float, s_noise: float, z):
    """k-diffusion's `sample_dpmpp_3m_sde` re-derived from its source, on sigmas that end above 0, in x~ and sigma~.

    With lambda = -log sigma~ and H = (1 + eta) h: x~ decays by e^{-H} towards the newest prediction; the second
    step adds phi_2 D1, later ones phi_2 D1 - phi_3 D2 (D1, D2 from the last three predictions, D2 = (d1_0 - d1_1) /
    (r0 + r1)); then the noise sigma~_next sqrt(1 - e^{-2 eta h}) s_noise z_i.
    """
    preds, steps = [], []  # newest first
    for i in range(len(sigmas) - 1):
        preds.insert(0, denoise(x, i))
        h = math.log(sigmas[i] / sigmas[i + 1])
        H = h * (1 + eta)
        phi_2 = math.expm1(-H) / H + 1
        x = math.exp(-H) * x - math.expm1(-H) * preds[0]
        if len(steps) >= 2:
            r0, r1 = steps[0] / h, steps[1] / h
            d1_0, d1_1 = (preds[0] - preds[1]) / r0, (preds[1] - preds[2]) / r1
            d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
            d2 = (d1_0 - d1_1) / (r0 + r1)
            x = x + phi_2 * d1 - (phi_2 / H - 0.5) * d2
        elif steps:
            x = x + phi_2 * (preds[0] - preds[1]) / (steps[0] / h)
        if eta > 0:
            x = x + sigmas[i + 1] * math.sqrt(-math.expm1(-2 * eta * h)) * s_noise * z[i]
        steps.insert(0, h)
    return x


@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("name", SDES)
def test_dpm_solver_pp_3m_sde_reference_3m_is_k_diffusions_sampler(name, eta):
    sde = SDES[name]
    grid = sf.KarrasGrid()(sde, 12)
    x_T, noise = prior(sde), StepNoise(grid, (16, 3))
    sigmas, denoise = scaled(sde, grid)
    solver = sf.DPMSolverPP3MSDE(eta=eta, s_noise=1.1, reference_3m=True)
    ours = solver.sample(exact_score(GM, sde), sde, x_T, grid, generator=noise).samples
    alpha = sde.alpha(grid)
    theirs = alpha[-1] * k_diffusion_3m_sde(denoise, x_T / alpha[0], sigmas, eta, 1.1, noise.z)
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)
    # The default differs from it: by the doubled D2 (and at eta = 0 the midpoint warm-up step).
    default = sf.DPMSolverPP3MSDE(eta=eta, s_noise=1.1).sample(exact_score(GM, sde), sde, x_T, grid, generator=noise)
    assert (default.samples - theirs).abs().max() > 1e-6


# --- ER-SDE -----------------------------------------------------------------------------------------------------------
def er_sde_reference(denoise, x, s, phi, z, stages: int = 3):
    """Cui et al.'s `vp_3_order_taylor` (`ve_` on VE; `*_2_order_taylor`, `*_1_order` for fewer stages), re-derived
    from the reference code, in x~ and s = sigma~: the integrals as left Riemann sums of 100 points from s_{i+1},
    the first difference D' taken unshifted in the third stage, a step's noise zeroed where its variance is below 1e-6.
    """
    n = 100
    m_old = d_old = None
    for i in range(len(s) - 1):
        m = denoise(x, i)
        r = phi(s[i + 1]) / phi(s[i])
        variance = s[i + 1] ** 2 - s[i] ** 2 * r**2
        u = s[i + 1] + np.arange(n) / n * (s[i] - s[i + 1])
        du = (s[i] - s[i + 1]) / n
        x = r * x + (1 - r) * m
        if stages >= 2 and m_old is not None:
            d = (m - m_old) / (s[i] - s[i - 1])
            x = x + (s[i + 1] - s[i] + phi(s[i + 1]) * float(np.sum(du / phi(u)))) * d
            if stages >= 3 and d_old is not None:
                dd = 2 * (d - d_old) / (s[i] - s[i - 2])
                c2 = (s[i + 1] - s[i]) ** 2 / 2 + phi(s[i + 1]) * float(np.sum((u - s[i]) / phi(u) * du))
                x = x + c2 * dd
            d_old = d
        m_old = m
        x = x + (math.sqrt(variance) if abs(variance) >= 1e-6 else 0.0) * z[i]
    return x


REFERENCE_ER_SDE = dict(riemann_points=100, shift_difference=False, variance_clip=1e-6)


@pytest.mark.parametrize("stages", [2, 3])
@pytest.mark.parametrize("name", SDES)
def test_er_sde_with_the_reference_options_is_the_reference_code(name, stages):
    sde = SDES[name]
    grid = sf.LogSNRGrid()(sde, 25)
    x_T, noise = prior(sde), StepNoise(grid, (16, 3))
    s, denoise = scaled(sde, grid)
    scaler = sf.ERScaler()
    alpha = sde.alpha(grid)
    theirs = alpha[-1] * er_sde_reference(denoise, x_T / alpha[0], s, scaler, noise.z, stages)

    def run(**options):
        solver = sf.ERSDE(stages, scaler, **options)
        return solver.sample(exact_score(GM, sde), sde, x_T, grid, generator=noise).samples

    torch.testing.assert_close(run(**REFERENCE_ER_SDE), theirs, rtol=1e-10, atol=1e-10)
    # Each option is needed: without any one of them the result departs from the reference's.
    for option, default in (("riemann_points", None), ("shift_difference", True), ("variance_clip", 0.0)):
        if option == "shift_difference" and stages < 3:
            continue
        assert (run(**{**REFERENCE_ER_SDE, option: default}) - theirs).abs().max() > 1e-6, option


# --- Restart ----------------------------------------------------------------------------------------------------------
def restart_reference(denoise, x, sigmas, restart_info, gamma, S_noise, S_min, S_max, rho, draw):
    """Xu et al.'s `restart_sampler` re-derived from the reference code, in x~ and sigma~ (EDM's VE variables), on
    sigmas that end above 0 (so every main step is Heun's) and with S_churn = 0 on the main grid, as its published runs.

    After the main step that reaches the grid point nearest t_min, K times: x~ jumps up to t_max with the noise
    sqrt(t_max^2 - sigma^2) S_noise z, then comes back down in N - 1 Heun steps on the EDM grid of N points from
    t_max to that grid point, each raising its sigma by the factor 1 + gamma with fresh noise where
    S_min <= sigma <= S_max.
    """

    def heun(x, s, s_next):
        d = (x - denoise(x, s)) / s
        x_euler = x + (s_next - s) * d
        return x + (s_next - s) * 0.5 * (d + (x_euler - denoise(x_euler, s_next)) / s_next)

    nearest = {int(np.argmin(np.abs(np.asarray(sigmas) - t_min))): (n, k, t_max) for n, k, t_min, t_max in restart_info}
    for i in range(len(sigmas) - 1):
        x = heun(x, sigmas[i], sigmas[i + 1])
        if i + 1 not in nearest:
            continue
        n, k, t_max = nearest[i + 1]
        ramp = np.arange(n) / (n - 1)
        way_back = (t_max ** (1 / rho) + ramp * (sigmas[i + 1] ** (1 / rho) - t_max ** (1 / rho))) ** rho
        for _ in range(k):
            x = x + draw() * math.sqrt(way_back[0] ** 2 - way_back[-1] ** 2) * S_noise
            for s, s_next in zip(way_back[:-1], way_back[1:]):
                s_hat = s * (1 + gamma) if S_min <= s <= S_max else s
                if s_hat > s:
                    x = x + math.sqrt(s_hat**2 - s**2) * S_noise * draw()
                x = heun(x, s_hat, s_next)
    return x


@pytest.mark.parametrize("name", SDES)
def test_restart_is_the_reference_sampler_given_the_same_noise(name):
    # Two intervals in the reference's restart_info layout, the second reaching above S_max = 1 (no churn up there).
    sde = SDES[name]
    info = [[3, 2, 0.06, 0.30], [4, 1, 0.8, 2.0]]
    solver = sf.Restart(info, restart_gamma=0.05, S_noise=1.003, S_tmin=0.01, S_tmax=1.0)
    grid = sf.KarrasGrid()(sde, 12)
    x_T = prior(sde)
    ours = solver.sample(exact_score(GM, sde), sde, x_T, grid, generator=torch.Generator().manual_seed(5)).samples
    score, g = exact_score(GM, sde), torch.Generator().manual_seed(5)

    def denoise(x, s):  # D(x~, sigma~) = x0(alpha x~, t(sigma~))
        t = sde.t_from_nsr(torch.tensor(s, dtype=torch.float64))
        return score.x0(sde.alpha(t) * x, t)

    def draw():
        return torch.randn(x_T.shape, generator=g, dtype=torch.float64)

    alpha = sde.alpha(grid)
    theirs = restart_reference(denoise, x_T / alpha[0], sde.nsr(grid).tolist(), info, 0.05, 1.003, 0.01, 1.0, 7.0, draw)
    torch.testing.assert_close(ours, alpha[-1] * theirs, rtol=1e-9, atol=1e-9)
    assert solver.restart_nfe == 2 * (2 * 2 + 1 * 3)


# --- SA-Solver --------------------------------------------------------------------------------------------------------
class SASolverWithDiffusersTerm(sf.SASolver):
    """SA-Solver with the O(h^3) term diffusers' `SASolverScheduler` adds to order-2 predictor and corrector weights,
    re-derived from its source: with H = (1 + tau^2) h and c = (H - 1 + e^{-H}) / (1 + tau^2)^2, the predictor's weight
    of the newest prediction gains (1 + tau^2) alpha_t (h^2 / 2 - c) / h_prev and the one before loses it; the
    corrector's gains (1 + tau^2) alpha_t (h / 2 - c / h)."""

    def init(self, score, sde, x, sched):
        state = super().init(score, sde, x, sched)
        num, steps = sched.num, []
        for i, step in enumerate(state.steps):
            tau2 = self.tau**2 if self.tau_min <= num.nsr[i] <= self.tau_max else 0.0
            h, scale = num.h[i], (1 + tau2) * num.alpha[i + 1]
            c = ((1 + tau2) * h - 1 + math.exp(-(1 + tau2) * h)) / (1 + tau2) ** 2
            predictor, corrector = list(step.predictor), list(step.corrector)
            extras = (scale * (h * h / 2 - c) / num.h[i - 1], scale * (h / 2 - c / h))
            for weights, extra in zip((predictor, corrector), extras):
                if len(weights) == 2:
                    weights[0], weights[1] = weights[0] + extra, weights[1] - extra
            steps.append(dataclasses.replace(step, predictor=tuple(predictor), corrector=tuple(corrector)))
        return dataclasses.replace(state, steps=tuple(steps))


@pytest.mark.parametrize("orders", [(2, 2), (3, 3)], ids=["p2c2", "p3c3"])
def test_sa_solver_leaves_out_diffusers_order_2_term(orders):
    # The benchmark's problem (benchmarks/solver_accuracy.py) at tau = 0 and 10 NFE on the Karras grid: leaving the
    # term out, as the paper does, is the more accurate (median RMS error; the docstring gives the numbers).
    sde = sf.VESDE(0.002, 80.0, eps=0.0)
    gm = sf.GaussianMixture.random(dim=16, components=8, std_range=(0.05, 0.2), seed=0)
    x_T = sde.prior_sampling((128, 16), torch.Generator().manual_seed(0), dtype=torch.float64)
    ref, score = gm.ode_reference(sde, x_T), exact_score(gm, sde)
    ours, theirs = sf.SASolver(*orders, tau=0.0), SASolverWithDiffusersTerm(*orders, tau=0.0)
    grid = ours.plan(sde, sf.KarrasGrid(), nfe=10)
    errors = [rms_error(s.sample(score, sde, x_T, grid).samples, ref).median() for s in (ours, theirs)]
    assert errors[0] < 0.9 * errors[1], errors
