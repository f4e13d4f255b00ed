"""The sampler layer's contract: one loop, the plan, the trajectory, the hook, the SDE passed once, the random
streams."""

import copy
import typing

import pytest
import torch

import sdeflow as sf
from sdeflow.eval.metrics import rms_error
from sdeflow.noise.generators import NOISE, PRIOR, PerSampleNoise
from sdeflow.noise.streams import streams
from sdeflow.samplers.base import Sampler, Step

from helpers import every_configured_solver

SOLVERS = every_configured_solver()
# The adaptive solvers, as the registry has them: those with a step-size controller.
ADAPTIVE = {name: s for name, s in SOLVERS.items() if s.controller is not None}
GMM = sf.GaussianMixture.random(dim=16, components=8, std_range=(0.05, 0.2))


def _score(sde):
    return sf.ScoreFunction(GMM.score_fn(sde), sde)


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_every_sampler_returns_a_state_for_every_grid_point(name):
    solver, sde = SOLVERS[name], sf.VPSDE()
    timesteps = solver.plan(sde, sf.LogSNRGrid(), nfe=20)
    x = sde.prior_sampling((8, 16), torch.Generator().manual_seed(0), dtype=torch.float64)
    out = solver.sample(
        _score(sde), sde, x, timesteps, generator=torch.Generator().manual_seed(1), return_trajectory=True
    )
    assert out.trajectory.shape == (len(timesteps), 8, 16)
    assert torch.equal(out.trajectory[0], x)
    # The last state is the sample (before any final denoising).
    if not solver.denoise:
        assert torch.equal(out.trajectory[-1], out.samples)


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_the_hook_sees_every_grid_point_and_its_result_is_used(name):
    solver, sde = SOLVERS[name], sf.VPSDE()
    timesteps = solver.plan(sde, sf.LogSNRGrid(), nfe=20)
    x = sde.prior_sampling((8, 16), torch.Generator().manual_seed(0), dtype=torch.float64)
    seen = []

    def hook(x_i, t):
        seen.append(float(t))
        return x_i.clamp(-0.25, 0.25)  # a projection, as an inverse-problem method would make

    out = solver.sample(
        _score(sde), sde, x, timesteps, generator=torch.Generator().manual_seed(1), hook=hook, return_trajectory=True
    )
    assert seen == pytest.approx(timesteps[1:].tolist())
    assert bool((out.trajectory[1:].abs() <= 0.25).all())


def class_variables(cls) -> set[str]:
    """The attributes `cls` (with its bases) declares as ClassVar: facts of the class, never set on an instance."""
    hints = typing.get_type_hints(cls)
    return {k for k, hint in hints.items() if hint is typing.ClassVar or typing.get_origin(hint) is typing.ClassVar}


@pytest.mark.parametrize("name", sorted(SOLVERS) + ["learned_multistep"])
def test_a_solvers_facts_are_declared_and_no_class_variable_is_set_on_an_instance(name):
    solver = SOLVERS[name] if name in SOLVERS else sf.LearnedMultistep([[1.0, 0.5]])
    # order, nfe_per_step and stochastic are facts of the instance (the base class declares no value for them).
    assert not {"order", "nfe_per_step", "stochastic"} & class_variables(Sampler)
    assert not class_variables(type(solver)) & set(vars(solver))
    # Each solver declares them, on its class or in its constructor. Order 0 claims no convergence: only
    # corrector-only sampling (annealed Langevin dynamics) makes that claim.
    assert type(solver.order) is int and (solver.order >= 1 or (solver.stochastic and solver.order == 0))
    assert solver.nfe_per_step is None or (type(solver.nfe_per_step) is int and solver.nfe_per_step >= 1)
    assert type(solver.stochastic) is bool


def spied(solver):
    """A copy of `solver` whose every attempted step is recorded as (the state it started from, its proposal)."""
    spy, attempts = copy.copy(solver), []
    own_step = spy.step

    def step(score, sde, x, i, state, noise):
        proposal = Step(*own_step(score, sde, x, i, state, noise))
        attempts.append((state, proposal))
        return proposal

    spy.step = step
    return spy, attempts


@pytest.mark.parametrize("name", sorted(ADAPTIVE))
def test_an_adaptive_solver_runs_in_the_one_loop_where_its_error_decides_each_attempt(name):
    assert type(ADAPTIVE[name]).solve is Sampler.solve
    solver, attempts = spied(ADAPTIVE[name])
    solver.h_init = 100.0  # a first attempt across the whole grid, far beyond the tolerance: it must be rejected
    sde = sf.VPSDE()
    x = sde.prior_sampling((8, 16), torch.Generator().manual_seed(0), dtype=torch.float64)
    out = solver.sample(_score(sde), sde, x, solver.plan(sde), generator=torch.Generator().manual_seed(1))
    errors = [torch.as_tensor(proposal.error) for _, proposal in attempts]
    assert bool((errors[0] > 1).all()) and any(bool((e <= 1).any()) for e in errors)
    # Each attempt starts where the last one's proposal was taken (error at most 1), or where that one started.
    for (before, proposal), (after, _) in zip(attempts, attempts[1:]):
        error = torch.as_tensor(proposal.error)
        torch.testing.assert_close(after.t, torch.where(error <= 1, proposal.state.t, before.t), rtol=0, atol=0)
    # The last attempt's proposal is the sample, where it was taken; the run ends at the grid's last time.
    last_state, last = attempts[-1]
    taken = torch.as_tensor(last.error) <= 1
    assert torch.equal(torch.where(taken.reshape(-1, *[1] * (x.ndim - 1)), last.x, out.samples), out.samples)
    end = torch.where(taken, last.state.t, last_state.t).reshape(-1)
    assert end.tolist() == pytest.approx([sde.eps] * len(end), rel=1e-9)


def test_the_adaptive_dpm_solver_meets_its_tolerance_on_an_exact_problem_through_the_loop():
    # The mixture's exact probability-flow solution is known: rejected attempts cost evaluations, not accuracy.
    sde = sf.VESDE(0.002, 80.0, eps=0.0)
    gm = sf.GaussianMixture.random(dim=8, components=4, seed=0)
    x_T = sde.prior_sampling((64, 8), torch.Generator().manual_seed(0), dtype=torch.float64)
    solver, attempts = spied(sf.DPMSolverAdaptive(3, rtol=1e-4, atol=1e-5, h_init=30.0))
    out = solver.sample(sf.ScoreFunction(gm.score_fn(sde), sde), sde, x_T, solver.plan(sde))
    rejected = sum(proposal.error > 1 for _, proposal in attempts)
    assert rejected >= 1 and out.nfe == 3 * len(attempts)
    assert float(rms_error(out.samples, gm.ode_reference(sde, x_T)).median()) < 1e-3


@pytest.mark.parametrize("name", sorted(ADAPTIVE))
def test_an_adaptive_solver_lands_on_every_grid_point_it_is_given(name):
    solver, sde = ADAPTIVE[name], sf.VPSDE()
    timesteps = sf.LogSNRGrid()(sde, 4)
    x = sde.prior_sampling((8, 16), torch.Generator().manual_seed(0), dtype=torch.float64)
    seen = []
    out = solver.sample(
        _score(sde),
        sde,
        x,
        timesteps,
        generator=torch.Generator().manual_seed(1),
        hook=lambda x_i, t: seen.append(float(t)) or x_i,
        return_trajectory=True,
    )
    assert seen == pytest.approx(timesteps[1:].tolist())
    assert bool(torch.isfinite(out.trajectory).all()) and torch.equal(out.trajectory[-1], out.samples)


def test_plan_turns_a_budget_into_the_grid_the_sampler_runs():
    sde = sf.VPSDE()
    assert len(sf.DPMSolver(3).plan(sde, sf.LogSNRGrid(), nfe=10)) == 3 + 1
    assert len(sf.DDIM(denoise=True).plan(sde, nfe=10)) == 9 + 1
    stats = sf.GaussianStats.from_distribution(GMM)
    jump = sf.AnalyticJump(sf.UniPC(2), stats, sigma_jump=3.0)
    assert len(jump.plan(sde, sf.LogSNRGrid(), nfe=6)) == 6 + 2  # T, the jump's landing point, then 6 steps
    assert sf.DPMSolverAdaptive().plan(sde, nfe=50).tolist() == [sde.T, sde.eps]
    with pytest.raises(sf.BudgetError, match="chooses its own steps"):
        sf.GottaGoFast().plan(sde, steps=10)
    with pytest.raises(ValueError, match="not both"):
        sf.DDIM().plan(sde, nfe=10, steps=10)
    out = sf.sample(GMM.score_fn(sde), sde, sf.DPMSolverPP(2), (4, 16), nfe=7, grid=sf.LogSNRGrid())
    assert out.nfe == 7 and len(out.timesteps) == 8


def test_a_score_of_one_sde_is_refused_by_a_sampler_given_another():
    vp, ve = sf.VPSDE(), sf.VESDE()
    x = ve.prior_sampling((4, 16), torch.Generator().manual_seed(0), dtype=torch.float64)
    with pytest.raises(ValueError, match="reads its model through VPSDE.*given VESDE"):
        sf.DDIM().sample(_score(vp), ve, x, sf.LogSNRGrid()(ve, 5))
    # The same process under another instance is the same SDE.
    assert sf.VPSDE() == sf.VPSDE() and sf.VPSDE(beta_max=10.0) != sf.VPSDE()
    sf.DDIM().sample(_score(sf.VPSDE()), vp, vp.prior_sampling((4, 16), dtype=torch.float64), sf.LogSNRGrid()(vp, 5))


def test_neighbouring_seeds_share_no_stream():
    draws = {}
    for seed in (0, 1):
        prior, noise = streams(seed, 4)
        draws[seed, PRIOR] = prior.randn((4, 8))
        draws[seed, NOISE] = noise.randn((4, 8))
    keys = list(draws)
    for i, a in enumerate(keys):
        for b in keys[i + 1 :]:
            # No row of one stream equals any row of another (seed + 1's prior once was seed's noise).
            assert not any(torch.equal(r, q) for r in draws[a] for q in draws[b]), (a, b)


def test_sample_i_depends_on_seed_and_i_only():
    sde = sf.VPSDE()
    big = sf.sample(GMM.score_fn(sde), sde, sf.PCSampler(sf.EulerMaruyama()), (6, 16), steps=5, seed=3)
    part = sf.sample(GMM.score_fn(sde), sde, sf.PCSampler(sf.EulerMaruyama()), (2, 16), steps=5, seed=3, offset=4)
    assert torch.equal(big.samples[4:], part.samples)
    assert torch.equal(PerSampleNoise(3, 2, 4).randn((2, 5)), PerSampleNoise(3, 6).randn((6, 5))[4:])


def test_a_solver_is_reentrant_configuration():
    # Two runs interleaved through one solver object do not disturb each other: the state is the run's.
    sde, solver = sf.VPSDE(), sf.UniPC(3)
    score = _score(sde)
    sched_a = sf.GridCoefficients(sde, sf.LogSNRGrid()(sde, 6).double())
    sched_b = sf.GridCoefficients(sde, sf.UniformGrid()(sde, 6).double())
    xa = xb = sde.prior_sampling((4, 16), torch.Generator().manual_seed(0), dtype=torch.float64)
    sa, sb = solver.init(score, sde, xa, sched_a), solver.init(score, sde, xb, sched_b)
    for i in range(6):
        xa, sa = solver.step(score, sde, xa, i, sa, None)
        xb, sb = solver.step(score, sde, xb, i, sb, None)
    ref_a = solver.sample(
        score, sde, sde.prior_sampling((4, 16), torch.Generator().manual_seed(0), dtype=torch.float64), sched_a.t
    )
    assert torch.equal(xa, ref_a.samples)


def test_calls_on_one_grid_share_its_coefficients_and_a_learned_grid_gets_its_own():
    sde = sf.VPSDE()
    t = sf.LogSNRGrid()(sde, 8).float()
    shared = sf.GridCoefficients.of(sde, t)
    assert sf.GridCoefficients.of(sf.VPSDE(), t.clone()) is shared  # an equal SDE and equal times
    assert sf.GridCoefficients.of(sf.VPSDE(beta_max=19.0), t) is not shared
    assert sf.GridCoefficients.of(sde, t.double()) is not shared
    assert sf.Schedule is sf.GridCoefficients  # the old name
    fresh = sf.GridCoefficients(sde, t)
    assert shared.num == fresh.num and torch.equal(shared.alpha, fresh.alpha) and torch.equal(shared.t, t)
    # Times being learned: coefficients of their own each call, through which gradients reach the times.
    learned = t.double().requires_grad_(True)
    a, b = sf.GridCoefficients.of(sde, learned), sf.GridCoefficients.of(sde, learned)
    assert a is not b
    a.alpha.sum().backward()
    assert learned.grad is not None and bool(torch.isfinite(learned.grad).all()) and float(learned.grad.abs().sum()) > 0
