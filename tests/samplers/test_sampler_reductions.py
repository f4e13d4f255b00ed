"""The samplers of the literature reduce to the ones they generalise, to rounding, on exact mixture scores."""

import pytest
import torch

import sdeflow as sf

from helpers import exact_score


def run(solver, sde, grid, noise_seed=None):
    gm = sf.GaussianMixture.random(dim=3, components=4, seed=2)
    x_T = sde.prior_sampling((16, 3), torch.Generator().manual_seed(0), dtype=torch.float64)
    noise = None if noise_seed is None else sf.PerSampleNoise(noise_seed, 16)
    return solver.sample(exact_score(gm, sde), sde, x_T, grid, generator=noise).samples


PAIRS = {
    # (solver, the one it reduces to, grid)
    "deis_1_is_ddim": (sf.DEIS(1), sf.DDIM(), sf.LogSNRGrid()),
    "sa_solver_p1_tau0_is_ddim": (sf.SASolver(1, 0, tau=0.0), sf.DDIM(), sf.KarrasGrid()),
    "er_sde_1_ode_is_ddim": (sf.ERSDE(1, sf.ODEScaler()), sf.DDIM(), sf.LogSNRGrid()),
    "dpmpp_3m_sde_eta0_is_dpmpp_3m": (
        sf.DPMSolverPP3MSDE(eta=0.0),
        sf.DPMSolverPP(3, lower_order_final=False),
        sf.LogSNRGrid(),
    ),
    "stochastic_ddim_eta0_is_ddim": (sf.StochasticDDIM(eta=0.0), sf.DDIM(), sf.QuadraticGrid()),
    "restart_without_restarts_is_edm_heun": (sf.Restart(restarts=[]), sf.EDMHeun(), sf.KarrasGrid()),
    "restart_with_k0_is_edm_heun": (sf.Restart(restarts=[[4, 0, 0.06, 0.3]]), sf.EDMHeun(), sf.KarrasGrid()),
}


@pytest.mark.parametrize("name", PAIRS)
@pytest.mark.parametrize("sde", [sf.VPSDE(), sf.VESDE()], ids=["vp", "ve"])
def test_reduces_to_rounding(name, sde):
    solver, reference, grid = PAIRS[name]
    torch.testing.assert_close(
        run(solver, sde, grid(sde, 12)), run(reference, sde, grid(sde, 12)), rtol=1e-10, atol=1e-10
    )


# The same random draws, the same algebra: the ancestral posterior three ways.
STOCHASTIC_PAIRS = {
    "ddim_eta1_is_ancestral": (sf.StochasticDDIM(eta=1.0), sf.PCSampler(sf.Ancestral())),
    "euler_ancestral_is_ddim_eta1": (sf.EulerAncestral(eta=1.0), sf.StochasticDDIM(eta=1.0)),
    "er_sde_1_reverse_scaler_is_ancestral": (sf.ERSDE(1, sf.SDEScaler()), sf.PCSampler(sf.Ancestral())),
}


@pytest.mark.parametrize("name", STOCHASTIC_PAIRS)
@pytest.mark.parametrize("sde", [sf.VPSDE(), sf.VESDE()], ids=["vp", "ve"])
def test_stochastic_reduces_with_the_same_noise(name, sde):
    solver, reference = STOCHASTIC_PAIRS[name]
    grid = sf.LogSNRGrid()(sde, 12)
    torch.testing.assert_close(
        run(solver, sde, grid, noise_seed=3), run(reference, sde, grid, noise_seed=3), rtol=1e-10, atol=1e-10
    )


def test_er_sde_with_the_ode_scaler_matches_dpm_solver_pp_in_order_not_digits(sde=sf.VPSDE()):
    # ER-SDE expands x0 in sigma / alpha, DPM-Solver++ in lambda: on the ODE both are order p, their
    # numbers differ at O(h^p). Measured: the gap falls at least at the order as the grid refines.
    gaps = []
    for steps in (20, 40):
        grid = sf.LogSNRGrid()(sde, steps)
        gaps.append(
            (run(sf.ERSDE(2, sf.ODEScaler()), sde, grid) - run(sf.DPMSolverPP(2, lower_order_final=False), sde, grid))
            .abs()
            .max()
        )
    assert gaps[0] > 1e-8 and gaps[1] < gaps[0] / 3.0


def test_restart_counts_its_restarts_in_the_budget():
    # Intervals in the reference's restart_info layout [N, K, s_min, s_max]: N points are N - 1 Heun steps back.
    solver, sde = sf.Restart(restarts=[[4, 2, 0.06, 0.3], [3, 1, 0.5, 2.0]]), sf.VESDE()
    assert solver.restart_nfe == 2 * (2 * 3 + 1 * 2)
    steps = solver.steps_for_nfe(40)
    assert steps == (40 - 16) // 2
    out = sf.sample(
        sf.problems.eight_gaussians().score_fn(sde),
        sde,
        solver,
        (4, 2),
        nfe=40,
        grid=sf.KarrasGrid(),
        dtype=torch.float64,
    )
    assert out.nfe == 2 * steps + 16 <= 40
    with pytest.raises(ValueError, match="needs at least 18 NFE"):
        solver.steps_for_nfe(17)
    with pytest.raises(ValueError, match="restart interval"):
        sf.Restart(restarts=[[3, 1, 0.3, 0.06]])
    # sdeflow's former layout [s_min, s_max, K, steps] is refused, not read in the new one.
    with pytest.raises(ValueError, match=r"restart interval is \[N, K, s_min, s_max\]"):
        sf.Restart(restarts=[[0.06, 0.3, 2, 3]])
    with pytest.raises(ValueError, match="restart_gamma"):
        sf.Restart(restart_gamma=-0.1)


def test_bad_arguments_are_refused_at_the_door():
    with pytest.raises(ValueError, match="eta must lie in"):
        sf.StochasticDDIM(eta=1.5)
    with pytest.raises(ValueError, match="DEIS supports order"):
        sf.DEIS(4)
    with pytest.raises(ValueError, match="predictor_order"):
        sf.SASolver(5, 2)
    with pytest.raises(ValueError, match="ERSDE supports order"):
        sf.ERSDE(4)
    with pytest.raises(TypeError, match="noise_scaler"):
        sf.ERSDE(2, noise_scaler=3.0)
    with pytest.raises(ValueError, match="riemann_points"):
        sf.ERSDE(2, riemann_points=0)
    with pytest.raises(ValueError, match="variance_clip"):
        sf.ERSDE(2, variance_clip=-1.0)
    with pytest.raises(ValueError, match="0 < r < 1"):
        sf.DPMSolverPPSDESinglestep(r=1.0)
