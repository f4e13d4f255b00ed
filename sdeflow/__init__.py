"""sdeflow: score-based generative modelling with SDEs and interchangeable samplers.

The public API, re-exported in one place. The solvers come from the one registry,
`sdeflow.samplers.solvers`: a solver file added there is exported here with no other edit.
"""

from sdeflow import hub, noise
from sdeflow.conditioning import inverse
from sdeflow.conditioning.editing import decode, encode, sdedit
from sdeflow.conditioning.guidance import (
    Autoguidance,
    ClassifierFreeGuidance,
    ClassifierGuidance,
    DynamicThresholding,
    GuidedScore,
)
from sdeflow.noise import BrownianNoise, PerSampleNoise, SharedNoise
from sdeflow.problems import GaussianMixture
from sdeflow.samplers import solvers as _solvers
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
from sdeflow.samplers.coefficients import GridCoefficients, Schedule, weighted_sum  # Schedule: the old name
from sdeflow.samplers.correctors import AnnealedLangevin, LangevinCorrector, NoneCorrector
from sdeflow.samplers.generate import Generated, generate
from sdeflow.samplers.grids import Grid, KarrasGrid, LeadingTimesteps, ListGrid, LogSNRGrid, QuadraticGrid, UniformGrid
from sdeflow.samplers.predictors import Ancestral, EulerMaruyama, NonePredictor, ReverseDiffusion
from sdeflow.samplers.sample import sample
from sdeflow.samplers.solvers import *  # noqa: F403 (every solver of the registry)
from sdeflow.score import (
    Compiled,
    EpsPrediction,
    FlowPrediction,
    Prediction,
    ScoreFunction,
    ScorePrediction,
    VPrediction,
    X0Prediction,
    compile_score,
)
from sdeflow.sde import (
    EDMSDE,
    SDE,
    VESDE,
    VPSDE,
    CosineVPSDE,
    DiscreteVPSDE,
    FlowSDE,
    SubVPSDE,
    VPSchedule,
    cosine_betas,
    linear_betas,
    scaled_linear_betas,
)
from sdeflow.tuning.autotune import AutoGrid, AutoMultistep
from sdeflow.tuning.grid_search import OptimizedGrid, optimize_grid, save_grid
from sdeflow.tuning.learned import Learned, MultistepFit, ShiftedScore, learn, learn_multistep, save_learned

__version__ = "0.1.0"

__all__ = [
    "sample",
    "generate",
    "Generated",
    "encode",
    "decode",
    "sdedit",
    "inverse",
    "hub",
    "noise",
    "SDE",
    "VPSDE",
    "SubVPSDE",
    "VESDE",
    "VPSchedule",
    "CosineVPSDE",
    "DiscreteVPSDE",
    "EDMSDE",
    "FlowSDE",
    "linear_betas",
    "scaled_linear_betas",
    "cosine_betas",
    "GuidedScore",
    "ClassifierFreeGuidance",
    "ClassifierGuidance",
    "Autoguidance",
    "DynamicThresholding",
    "Compiled",
    "compile_score",
    "ScoreFunction",
    "Prediction",
    "ScorePrediction",
    "EpsPrediction",
    "X0Prediction",
    "VPrediction",
    "FlowPrediction",
    "GaussianMixture",
    "Grid",
    "UniformGrid",
    "QuadraticGrid",
    "LogSNRGrid",
    "KarrasGrid",
    "LeadingTimesteps",
    "ListGrid",
    "OptimizedGrid",
    "optimize_grid",
    "save_grid",
    "AutoGrid",
    "AutoMultistep",
    "Learned",
    "MultistepFit",
    "ShiftedScore",
    "learn",
    "learn_multistep",
    "save_learned",
    "PerSampleNoise",
    "SharedNoise",
    "BrownianNoise",
    "Sampler",
    "State",
    "Multistep",
    "Adaptive",
    "Step",
    "GridCoefficients",
    "Schedule",
    "weighted_sum",
    "SampleResult",
    "SolverError",
    "NonFiniteError",
    "BudgetError",
    "IncompatibleSampler",
    "EulerMaruyama",
    "ReverseDiffusion",
    "Ancestral",
    "NonePredictor",
    "LangevinCorrector",
    "AnnealedLangevin",
    "NoneCorrector",
    *_solvers.__all__,
]
