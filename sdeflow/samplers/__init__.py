"""Sampling: the time grids, the one loop every solver runs on, the solvers, and `sample` / `generate`."""

from sdeflow.samplers import solvers
from sdeflow.samplers.base import (
    Adaptive,
    BudgetError,
    IncompatibleSampler,
    Multistep,
    NonFiniteError,
    Sampler,
    SampleResult,
    SolverError,
    State,
    Step,
)
from sdeflow.samplers.coefficients import GridCoefficients, Schedule, weighted_sum
from sdeflow.samplers.correctors import AnnealedLangevin, Corrector, LangevinCorrector, NoneCorrector
from sdeflow.samplers.predictors import Ancestral, EulerMaruyama, NonePredictor, Predictor, ReverseDiffusion
from sdeflow.samplers.solvers import *  # noqa: F403 (the registry: every solver file's __all__)

__all__ = [
    "SampleResult",
    "Sampler",
    "State",
    "Multistep",
    "Adaptive",
    "Step",
    "GridCoefficients",
    "Schedule",  # the old name of GridCoefficients
    "weighted_sum",
    "SolverError",
    "NonFiniteError",
    "BudgetError",
    "IncompatibleSampler",
    "Predictor",
    "EulerMaruyama",
    "ReverseDiffusion",
    "Ancestral",
    "NonePredictor",
    "Corrector",
    "LangevinCorrector",
    "AnnealedLangevin",
    "NoneCorrector",
    *solvers.__all__,
]
