"""`ByBudget` (`solver=auto`): the solver of each budget runs exactly as if named, and the table is checked at the
door."""

import os
import sys

import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate

import sdeflow as sf

from helpers import every_configured_solver, exact_score

SDE = sf.VESDE(0.002, 80.0, eps=0.0)
GM = sf.GaussianMixture.random(dim=8, components=4, seed=0)


def configured(name: str):
    with initialize_config_module("sdeflow.conf", version_base="1.3"):
        return instantiate(compose("sample", overrides=[f"solver={name}", "checkpoint=x"]).solver[name])


def test_the_configured_choice_runs_the_measured_solver_of_each_budget_exactly():
    auto = configured("auto")
    expected = {
        1: sf.DDIM(),
        2: sf.DEIS(2),
        3: sf.DEIS(3),
        5: sf.DEIS(3),
        19: sf.DEIS(3),
        20: sf.UniPC(3),
        50: sf.UniPC(3),
    }
    x_T = SDE.prior_sampling((16, 8), torch.Generator().manual_seed(0), dtype=torch.float64)
    for nfe, solver in expected.items():
        grid = auto.plan(SDE, sf.LogSNRGrid(), nfe=nfe)
        torch.testing.assert_close(grid, solver.plan(SDE, sf.LogSNRGrid(), nfe=nfe), rtol=0, atol=0)
        ours, theirs = (
            auto.sample(exact_score(GM, SDE), SDE, x_T, grid),
            solver.sample(exact_score(GM, SDE), SDE, x_T, grid),
        )
        assert ours.nfe == theirs.nfe == nfe
        torch.testing.assert_close(ours.samples, theirs.samples, rtol=0, atol=0)


def test_the_default_takes_every_budget():
    # The apps' default must run whatever nfe= a user gives, 1 included (DEIS-3 alone refuses grids under 3 steps).
    auto, score = configured("auto"), exact_score(GM, SDE)
    x_T = SDE.prior_sampling((4, 8), torch.Generator().manual_seed(0), dtype=torch.float64)
    for nfe in range(1, 41):
        assert auto.sample(score, SDE, x_T, auto.plan(SDE, sf.LogSNRGrid(), nfe=nfe)).nfe == nfe


def test_the_configured_table_is_the_choice_the_committed_measurements_make():
    # benchmarks/default_choice.py scores every solver on the committed results of three problems; the table in
    # conf/solver/auto.yaml must run its choice at each measured budget, and the lower budget's choice between them.
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks"))
    from default_choice import choices

    picked, named, auto = choices(), every_configured_solver(), configured("auto")
    assert sorted(picked) == [5, 10, 20, 50]
    for nfe in range(5, 61):
        measured = max(b for b in picked if b <= nfe)
        assert repr(auto.choose(nfe)) == repr(named[picked[measured]]), (nfe, picked[measured])


def test_a_tuned_grid_is_tuned_for_the_chosen_solver(tmp_path):
    # timesteps=auto tunes what runs: a ByBudget at 5 NFE gets UniPC-2's tuned grid, through the same cache key
    # machinery.
    auto = sf.ByBudget([[10, sf.UniPC(2)], [None, sf.UniPC(3)]])
    grid = sf.AutoGrid(pilot=16, maxiter=60)
    fit, report = grid.tuned(exact_score(GM, SDE), SDE, auto, 5, (8,), None, "gmm", dtype=torch.float64, progress=False)
    direct, _ = grid.tuned(
        exact_score(GM, SDE), SDE, sf.UniPC(2), 5, (8,), None, "gmm", dtype=torch.float64, progress=False
    )
    torch.testing.assert_close(fit.times, direct.times, rtol=0, atol=0)
    assert report["kept_tuned"] and not torch.equal(fit.times, auto.plan(SDE, sf.LogSNRGrid(), nfe=5))


def test_the_table_is_refused_at_the_door_when_it_cannot_mean_one_solver_per_budget():
    with pytest.raises(ValueError, match="increasing positive integers"):
        sf.ByBudget([[10, sf.UniPC(2)], [5, sf.UniPC(3)]])
    with pytest.raises(ValueError, match="increasing positive integers"):
        sf.ByBudget([[None, sf.UniPC(2)], [5, sf.UniPC(3)]])
    with pytest.raises(ValueError, match="one evaluation per step"):
        sf.ByBudget([[10, sf.EDMHeun()]])
    with pytest.raises(ValueError, match="deterministic"):
        sf.ByBudget([[10, sf.DPMSolverPPSDE()]])
    with pytest.raises(ValueError, match=r"\[max_nfe, solver\] pairs"):
        sf.ByBudget([])
