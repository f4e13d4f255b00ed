"""sdeflow: score-based generative modelling with SDEs and interchangeable samplers.

The public API, re-exported in one place.
"""

from sdeflow.api import sample
from sdeflow.generation import Generated, generate
from sdeflow.guidance import Autoguidance, ClassifierFreeGuidance, ClassifierGuidance, DynamicThresholding, GuidedScore
from sdeflow.grids import Grid, KarrasGrid, LeadingTimesteps, ListGrid, LogSNRGrid, QuadraticGrid, UniformGrid
from sdeflow.problems import GaussianMixture
from sdeflow.random import PerSampleNoise, SharedNoise
from sdeflow.grid_search import OptimizedGrid, optimize_grid, save_grid
from sdeflow.learned import Learned, MultistepFit, ShiftedScore, learn, learn_multistep, save_learned
from sdeflow.autotune import AutoGrid, AutoMultistep
from sdeflow.samplers import (
    DDIM, IPNDM, LMS, AnalyticJump, Ancestral, AnnealedLangevin, DPMSolver, DPMSolverAdaptive, DPMSolverPP, DPMSolverPPSDE,
    EDMHeun, EDMStochastic, EulerMaruyama, GaussianStats, GottaGoFast, LangevinCorrector, NoneCorrector, NonePredictor,
    BudgetError, IncompatibleSampler, Multistep, NonFiniteError, PCSampler, ProbabilityFlowODE, ReverseDiffusion, SampleResult, Sampler,
    Schedule, SolverError, State, UniPC, weighted_sum,
    DEIS, DPMSolverPP3MSDE, DPMSolverPPSDESinglestep, ERScaler, ERSDE, EulerAncestral, ODEScaler, Restart, SASolver, SDEScaler,
    StochasticDDIM, LearnedMultistep, ByBudget,
)
from sdeflow.brownian import BrownianNoise
from sdeflow.compiled import Compiled, compile_score
from sdeflow import hub, inverse
from sdeflow.inversion import decode, encode
from sdeflow.sdedit import sdedit
from sdeflow.score import EpsPrediction, FlowPrediction, Prediction, ScoreFunction, ScorePrediction, VPrediction, X0Prediction
from sdeflow.sde import (
    EDMSDE, SDE, CosineVPSDE, DiscreteVPSDE, FlowSDE, SubVPSDE, VESDE, VPSchedule, VPSDE, cosine_betas, linear_betas, scaled_linear_betas,
)

__version__ = "0.1.0"

__all__ = [
    "sample", "generate", "Generated", "encode", "decode", "sdedit", "inverse", "hub",
    "SDE", "VPSDE", "SubVPSDE", "VESDE", "VPSchedule", "CosineVPSDE", "DiscreteVPSDE", "EDMSDE", "FlowSDE",
    "linear_betas", "scaled_linear_betas", "cosine_betas",
    "GuidedScore", "ClassifierFreeGuidance", "ClassifierGuidance", "Autoguidance", "DynamicThresholding",
    "Compiled", "compile_score",
    "ScoreFunction", "Prediction", "ScorePrediction", "EpsPrediction", "X0Prediction", "VPrediction", "FlowPrediction",
    "GaussianMixture",
    "Grid", "UniformGrid", "QuadraticGrid", "LogSNRGrid", "KarrasGrid", "LeadingTimesteps", "ListGrid", "OptimizedGrid",
    "optimize_grid", "save_grid", "AutoGrid", "AutoMultistep", "Learned", "MultistepFit", "ShiftedScore", "learn", "learn_multistep", "save_learned",
    "PerSampleNoise", "SharedNoise", "BrownianNoise",
    "Sampler", "State", "Multistep", "Schedule", "weighted_sum", "SampleResult", "SolverError", "NonFiniteError", "BudgetError", "IncompatibleSampler",
    "PCSampler", "EulerMaruyama", "ReverseDiffusion", "Ancestral", "NonePredictor",
    "LangevinCorrector", "AnnealedLangevin", "NoneCorrector",
    "ProbabilityFlowODE",
    "DDIM", "DPMSolver", "DPMSolverAdaptive", "DPMSolverPP", "UniPC", "EDMHeun", "IPNDM", "LMS",
    "EDMStochastic", "DPMSolverPPSDE", "GottaGoFast",
    "DEIS", "StochasticDDIM", "EulerAncestral", "DPMSolverPP3MSDE", "DPMSolverPPSDESinglestep", "SASolver",
    "ERSDE", "ERScaler", "ODEScaler", "SDEScaler", "Restart",
    "AnalyticJump", "GaussianStats", "LearnedMultistep", "ByBudget",
]
