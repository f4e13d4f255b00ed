"""Samplers: predictor-corrector, the probability-flow ODE, and the fast solvers."""

from sdeflow.samplers.base import SampleResult, Sampler, SolverError, StepSampler
from sdeflow.samplers.correctors import AnnealedLangevin, Corrector, LangevinCorrector, NoneCorrector
from sdeflow.samplers.ode import ProbabilityFlowODE
from sdeflow.samplers.pc import PCSampler
from sdeflow.samplers.predictors import Ancestral, EulerMaruyama, NonePredictor, Predictor, ReverseDiffusion

__all__ = [
    "SampleResult", "Sampler", "SolverError", "StepSampler",
    "PCSampler", "Predictor", "EulerMaruyama", "ReverseDiffusion", "Ancestral", "NonePredictor",
    "Corrector", "LangevinCorrector", "AnnealedLangevin", "NoneCorrector",
    "ProbabilityFlowODE",
]
