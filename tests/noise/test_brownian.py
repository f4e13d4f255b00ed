"""Brownian-tree noise: the law of its increments, its consistency across grids and batches, and strong convergence."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

import sdeflow as sf
from sdeflow.problems import gaussian_data

from helpers import exact_score, slope

N = 20_000


def test_increments_are_standard_normal_and_independent():
    # KS at the 1e-3 level; correlations of disjoint increments within 5 / sqrt(n).
    noise = sf.BrownianNoise(0, N, t0=1e-3, t1=1.0)
    times = [1.0, 0.71, 0.3, 0.05, 0.0123, 1e-3]
    incs = [noise.increment((N, 1), a, b, dtype=torch.float64)[:, 0] for a, b in zip(times[:-1], times[1:])]
    for z in incs:
        assert stats.kstest(z.numpy(), "norm").pvalue > 1e-3
    corr = np.corrcoef(torch.stack(incs).numpy())
    assert np.abs(corr - np.eye(len(incs))).max() < 5 / math.sqrt(N)


def test_path_covariance_is_min_of_times():
    noise = sf.BrownianNoise(1, N, t0=1e-4, t1=2.0)
    times = [1e-4, 0.02, 0.4, 1.3, 2.0]
    w = torch.stack([noise.path((N, 1), t)[:, 0] for t in times])
    cov = torch.cov(w)
    expected = torch.tensor([[min(s, t) for t in times] for s in times], dtype=torch.float64)
    # Standard error of a sample covariance: sqrt((s t + min^2) / n); allow 5 of them.
    tol = 5 * torch.sqrt((torch.tensor(times)[:, None] * torch.tensor(times)[None] + expected**2) / N)
    assert ((cov - expected).abs() <= tol).all()


def test_the_path_does_not_depend_on_the_grid_the_batch_or_the_order_of_queries():
    shape = (12, 3)
    a = sf.BrownianNoise(5, 12, t0=1e-3, t1=1.0)
    fine = [a.path(shape, t) for t in torch.linspace(1.0, 1e-3, 41).tolist()]
    b = sf.BrownianNoise(5, 12, t0=1e-3, t1=1.0)
    for k in (40, 0, 17, 3, 29):  # another order, other points queried in between
        b.path(shape, 0.5 * k / 41 + 0.01)
        assert torch.equal(b.path(shape, torch.linspace(1.0, 1e-3, 41)[k].item()), fine[k])
    # Samples 4..8 drawn as their own batch are the same numbers.
    c = sf.BrownianNoise(5, 5, offset=4, t0=1e-3, t1=1.0)
    assert torch.equal(c.path((5, 3), 0.37), a.path(shape, 0.37)[4:9])
    # Another seed, another path.
    assert not torch.allclose(sf.BrownianNoise(6, 12, t0=1e-3, t1=1.0).path(shape, 0.37), a.path(shape, 0.37))


def test_increments_add_up_across_refinements():
    noise = sf.BrownianNoise(2, 64, t0=1e-3, t1=1.0)
    s, m, t = 0.9, 0.4123, 0.01
    whole = math.sqrt(s - t) * noise.increment((64, 2), s, t, dtype=torch.float64)
    parts = math.sqrt(s - m) * noise.increment((64, 2), s, m, dtype=torch.float64) + math.sqrt(m - t) * noise.increment(
        (64, 2), m, t, dtype=torch.float64
    )
    torch.testing.assert_close(whole, parts, rtol=0, atol=1e-12)


def test_stochastic_samples_are_the_same_in_any_batch():
    sde, gm = sf.VPSDE(), sf.problems.eight_gaussians()
    solver = sf.DPMSolverPP3MSDE()
    x_T = sde.prior_sampling((8, 2), sf.PerSampleNoise(0, 8), dtype=torch.float64)
    grid = sf.LogSNRGrid()(sde, 10)
    full = solver.sample(exact_score(gm, sde), sde, x_T, grid, generator=sf.BrownianNoise(3, 8, t0=sde.eps)).samples
    part = solver.sample(
        exact_score(gm, sde), sde, x_T[2:5], grid, generator=sf.BrownianNoise(3, 3, offset=2, t0=sde.eps)
    ).samples
    torch.testing.assert_close(part, full[2:5], rtol=1e-12, atol=1e-12)


def test_below_t0_the_path_is_the_bridge_to_w0_zero():
    # Times across t0 and octaves below it (the bridge from W(0) = 0, octave by octave): increments standard normal
    # and independent, the covariance min(s, t), at the 1e-3 KS level and within 5 standard errors as above.
    noise = sf.BrownianNoise(3, N, t0=1e-3, t1=1.0)
    times = [0.02, 1e-3, 7e-4, 3.1e-4, 2.9e-4, 1e-7, 3e-12, 1.5e-16, 0.0]
    incs = [noise.increment((N, 1), a, b, dtype=torch.float64)[:, 0] for a, b in zip(times[:-1], times[1:])]
    for z in incs:
        assert stats.kstest(z.numpy(), "norm").pvalue > 1e-3
    corr = np.corrcoef(torch.stack(incs).numpy())
    assert np.abs(corr - np.eye(len(incs))).max() < 5 / math.sqrt(N)
    below = [7e-4, 3.1e-4, 2.9e-4, 1e-7]
    scale = torch.tensor(below, dtype=torch.float64)[:, None] ** 0.5
    w = torch.stack([noise.path((N, 1), t)[:, 0] for t in below]) / scale  # W(t) / sqrt(t): correlations
    expected = torch.tensor([[min(s, t) / math.sqrt(s * t) for t in below] for s in below], dtype=torch.float64)
    assert (torch.cov(w) - expected).abs().max() < 5 * math.sqrt(2 / N)
    # The same points whatever the order they are asked in, the batch, or a fresh source.
    again = sf.BrownianNoise(3, 7, offset=5, t0=1e-3, t1=1.0)
    for t in reversed(below):
        assert torch.equal(again.path((7, 1), t), noise.path((N, 1), t)[5:12])


def test_a_grid_ending_just_above_zero_runs_with_a_brownian_path():
    # A grid computed from sigmas ends at 1.5e-16 rather than 0 on an SDE with eps = 0: the samplers accept it, and
    # so does the path, whose increment across [1.5e-16, t] is W's, not an error.
    sde = sf.VESDE(sigma_min=0.002, sigma_max=80.0, eps=0.0)
    times = sf.KarrasGrid()(sde, 8)
    times[-1] = 1.5e-16
    out = sf.sample(
        exact_score(sf.problems.eight_gaussians(), sde),
        sde,
        sf.StochasticDDIM(),
        (64, 2),
        steps=8,
        grid=sf.ListGrid(times),
        brownian=True,
        dtype=torch.float64,
    )
    assert out.nfe == 8 and bool(torch.isfinite(out.samples).all()) and out.timesteps[-1].item() == 1.5e-16


def test_bad_queries_are_refused():
    noise = sf.BrownianNoise(0, 4, t0=1e-3, t1=1.0, depth=4)
    with pytest.raises(ValueError, match="spans"):
        noise.path((4, 1), 2.0)
    noise.path((4, 1), 0.5001)
    with pytest.raises(ValueError, match="one leaf"):
        noise.path((4, 1), 0.5002)
    with pytest.raises(ValueError, match="0 < t0 < t1"):
        sf.BrownianNoise(0, 4, t0=0.0)
    with pytest.raises(ValueError, match="depth"):
        sf.BrownianNoise(0, 4, depth=40)
    with pytest.raises(ValueError, match="serves 4 samples"):
        noise.increment((5, 1), 0.9, 0.8)


@pytest.mark.slow
@pytest.mark.parametrize("sde", [sf.VPSDE(), sf.VESDE()], ids=["vp", "ve"])
def test_euler_maruyama_converges_strongly_on_a_fixed_path(sde):
    # Gaussian data: the reverse SDE is linear with additive noise, so Euler-Maruyama's strong
    # (pathwise) order is 1. The reference is the same path integrated on a grid 32 times finer.
    gm = gaussian_data(0.3, 0.5, 2)
    x_T = sde.prior_sampling((500, 2), sf.PerSampleNoise(0, 500), dtype=torch.float64)
    solver = sf.PCSampler(sf.EulerMaruyama())

    def solve(steps):
        noise = sf.BrownianNoise(9, 500, t0=sde.eps, t1=sde.T)
        return solver.sample(exact_score(gm, sde), sde, x_T, sf.UniformGrid()(sde, steps), generator=noise).samples

    ref = solve(32 * 160)
    steps = [20, 40, 80, 160]
    errors = [float(((solve(n) - ref) ** 2).sum(1).mean().sqrt()) for n in steps]
    assert 0.85 <= slope(steps, errors) <= 1.25, errors
    # The control: fresh noise at every step is another path, whose distance does not shrink with the steps.
    fresh = solver.sample(
        exact_score(gm, sde), sde, x_T, sf.UniformGrid()(sde, steps[-1]), generator=sf.PerSampleNoise(9, 500)
    ).samples
    assert float(((fresh - ref) ** 2).sum(1).mean().sqrt()) > 10 * errors[-1]


def test_the_benchmark_draws_its_paths_on_an_sde_with_eps_zero():
    # VE over EDM's range ends at t = 0 (sigma(0) = sigma_min): the path spans brownian_span(sde) and W(0) = 0.
    from sdeflow.apps.bench import runner

    sde = sf.VESDE(sigma_min=0.002, sigma_max=80.0, eps=0.0)
    rows, _ = runner.run(
        sf.problems.eight_gaussians(),
        sde,
        {"ddim_eta1": sf.StochasticDDIM()},
        sf.KarrasGrid(),
        [5],
        n_trajectory=8,
        n_distribution=64,
        n_directions=8,
        progress=False,
        reference={"rtol": 1e-6, "atol": 1e-6},
    )
    assert rows[0]["nfe"] == 5 and not rows[0]["diverged"]


def test_the_benchmark_charges_the_shared_path_to_no_row(monkeypatch):
    # Two stochastic rows at one budget share one path. Its values are made slow here (0.1 s each), so whichever row
    # asks first would show seconds over 1: the time is left out of both rows' seconds and shown on each of them.
    import time

    from sdeflow.apps.bench import runner

    descend = sf.BrownianNoise._descend
    monkeypatch.setattr(sf.BrownianNoise, "_descend", lambda *a: time.sleep(0.1) or descend(*a))
    sde = sf.VPSDE()
    rows, _ = runner.run(
        sf.problems.eight_gaussians(),
        sde,
        {"em": sf.PCSampler(sf.EulerMaruyama()), "ddim_eta1": sf.StochasticDDIM()},
        sf.LogSNRGrid(),
        [6],
        n_trajectory=8,
        n_distribution=64,
        n_directions=8,
        progress=False,
        reference={"rtol": 1e-6, "atol": 1e-6},
    )
    shared = {r["shared_seconds"] for r in rows}
    assert len(shared) == 1 and shared.pop() > 0.7  # seven points of the grid, computed once
    assert all(r["seconds"] < 0.5 for r in rows), rows
