"""Failures are reported where they happen: NaN and infinity, wrong shapes, dtypes and devices, bad budgets."""

import numpy as np
import pytest
import torch

import sdeflow as sf
from sdeflow.eval.stats import StatsFileError, load_stats
from sdeflow.nets import ScoreMLP
from sdeflow.samplers.base import NonFiniteError

from helpers import every_configured_solver

SOLVERS = every_configured_solver()


class PoisonedScore:
    """The exact mixture score, until call `after`; from then on every value is `bad` (NaN or infinity)."""

    def __init__(self, sde, bad: float, after: int):
        self.exact, self.bad, self.after, self.calls = (
            sf.GaussianMixture.random(dim=16, components=8, std_range=(0.05, 0.2)),
            bad,
            after,
            0,
        )
        self.fn = self.exact.score_fn(sde)

    def __call__(self, x, t):
        self.calls += 1
        out = self.fn(x, t)
        return out if self.calls <= self.after else torch.full_like(out, self.bad)


def _run(solver, score_model, sde, n=32):
    score = sf.ScoreFunction(score_model, sde)
    timesteps = solver.plan(sde, sf.LogSNRGrid(), nfe=20)
    x = sde.prior_sampling((n, 16), torch.Generator().manual_seed(0), dtype=torch.float64)
    return solver.sample(score, sde, x, timesteps, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")], ids=["nan", "inf"])
@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_every_sampler_stops_at_the_first_non_finite_score(name, bad):
    solver, sde = SOLVERS[name], sf.VPSDE()
    _run(solver, PoisonedScore(sde, bad, after=10**9), sde)  # control: the clean score runs through
    poisoned = PoisonedScore(sde, bad, after=3)
    with pytest.raises(NonFiniteError, match=r"NaN or infinity .*(step \d+|t = )") as info:
        _run(solver, poisoned, sde)
    assert type(solver).__name__ in str(info.value) or "ProbabilityFlowODE" in str(info.value)
    # Stopped where it happened, not after spinning: a few evaluations past the poisoned one at most.
    assert poisoned.calls <= 3 + 8


def test_a_non_finite_prior_draw_is_refused():
    sde = sf.VPSDE()
    score = sf.ScoreFunction(sf.problems.eight_gaussians().score_fn(sde), sde)
    x = torch.full((4, 2), float("nan"))
    with pytest.raises(NonFiniteError, match="initial state"):
        sf.DDIM().sample(score, sde, x, sf.UniformGrid()(sde, 5))


def test_a_score_of_the_wrong_shape_is_refused_at_its_first_call():
    sde = sf.VPSDE()
    calls = []

    def flat(x, t):
        calls.append(1)
        return torch.zeros(x.shape[0], 1)  # would broadcast silently against (n, 2)

    with pytest.raises(ValueError, match=r"returned \(8, 1\) for input of shape \(8, 2\)"):
        sf.sample(flat, sde, sf.DDIM(), (8, 2), steps=10)
    assert len(calls) == 1


def test_score_output_in_another_dtype_keeps_the_samples_dtype():
    sde = sf.VPSDE()
    exact = sf.problems.eight_gaussians().score_fn(sde)
    out = sf.sample(lambda x, t: exact(x, t).half(), sde, sf.DPMSolverPP(2), (8, 2), steps=10, dtype=torch.float64)
    assert out.samples.dtype == torch.float64


@pytest.mark.parametrize("order", [2, 3])
def test_unipc_runs_in_half_precision(order):
    sde = sf.VPSDE()
    exact = sf.problems.eight_gaussians().score_fn(sde)
    kw = dict(shape=(256, 2), steps=10, grid=sf.LogSNRGrid(), seed=0)
    half = sf.sample(lambda x, t: exact(x.double(), t.double()).half(), sde, sf.UniPC(order), dtype=torch.float16, **kw)
    full = sf.sample(exact, sde, sf.UniPC(order), dtype=torch.float64, **kw)
    assert half.samples.dtype == torch.float16
    # Half precision carries about 3 significant digits; samples of norm ~2 agree to a few 1e-3.
    assert float((half.samples.double() - full.samples).abs().median()) < 1e-2


def test_a_model_of_another_dtype_or_device_is_refused_in_one_line():
    sde = sf.VPSDE()
    net = ScoreMLP(2, hidden=8, blocks=1)
    with pytest.raises(ValueError, match="weights are torch.float32 but the samples are torch.float64"):
        sf.sample(sf.ScoreFunction(net, sde, sf.EpsPrediction()), sde, sf.DDIM(), (4, 2), steps=5, dtype=torch.float64)
    with pytest.raises(ValueError, match="on meta but the samples are on cpu"):
        sf.sample(sf.ScoreFunction(net.to("meta"), sde, sf.EpsPrediction()), sde, sf.DDIM(), (4, 2), steps=5)


def test_generate_without_a_budget_names_what_is_missing():
    sde = sf.VPSDE()
    score = sf.ScoreFunction(sf.problems.eight_gaussians().score_fn(sde), sde)
    with pytest.raises(ValueError, match="DDIM steps on a grid: give `steps` or `nfe`"):
        sf.generate(score, sde, sf.DDIM(), n=4, shape=(2,), nfe=None, grid=sf.LogSNRGrid(), progress=False)


def _stats_file(path, mu, sigma):
    np.savez(path, mu=mu, sigma=sigma)
    return path


def test_reference_statistics_are_validated_on_load(tmp_path):
    good = _stats_file(tmp_path / "good.npz", np.zeros(3), np.eye(3))
    assert load_stats(good)[1].shape == (3, 3)
    with pytest.raises(StatsFileError, match="NaN or infinity"):
        load_stats(_stats_file(tmp_path / "nan.npz", np.array([0.0, np.nan, 0.0]), np.eye(3)))
    with pytest.raises(StatsFileError, match="not symmetric"):
        load_stats(_stats_file(tmp_path / "asym.npz", np.zeros(2), np.array([[1.0, 0.5], [0.0, 1.0]])))
    with pytest.raises(StatsFileError, match="not positive semi-definite"):
        load_stats(_stats_file(tmp_path / "neg.npz", np.zeros(2), np.array([[1.0, 2.0], [2.0, 1.0]])))
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    with pytest.raises(StatsFileError, match="empty"):
        load_stats(empty)
