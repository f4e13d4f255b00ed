"""Samplers: predictor-corrector, the probability-flow ODE, and the fast solvers."""

from sdeflow.samplers.analytic import AnalyticJump, GaussianStats
from sdeflow.samplers.by_budget import ByBudget
from sdeflow.samplers.base import BudgetError, IncompatibleSampler, Multistep, NonFiniteError, SampleResult, Sampler, SolverError, State
from sdeflow.samplers.correctors import AnnealedLangevin, Corrector, LangevinCorrector, NoneCorrector
from sdeflow.samplers.ddim import DDIM
from sdeflow.samplers.ddim_stochastic import StochasticDDIM
from sdeflow.samplers.deis import DEIS
from sdeflow.samplers.dpm_solver import DPMSolver
from sdeflow.samplers.dpm_solver_adaptive import DPMSolverAdaptive
from sdeflow.samplers.dpm_solver_pp import DPMSolverPP
from sdeflow.samplers.dpm_solver_pp_3m_sde import DPMSolverPP3MSDE
from sdeflow.samplers.dpm_solver_pp_sde import DPMSolverPPSDE
from sdeflow.samplers.dpm_solver_pp_sde_singlestep import DPMSolverPPSDESinglestep
from sdeflow.samplers.edm_stochastic import EDMStochastic
from sdeflow.samplers.er_sde import ERScaler, ERSDE, ODEScaler, SDEScaler
from sdeflow.samplers.euler_ancestral import EulerAncestral
from sdeflow.samplers.exponential import Schedule, weighted_sum
from sdeflow.samplers.gotta_go_fast import GottaGoFast
from sdeflow.samplers.heun import EDMHeun
from sdeflow.samplers.learned_multistep import LearnedMultistep
from sdeflow.samplers.ipndm import IPNDM
from sdeflow.samplers.lms import LMS
from sdeflow.samplers.ode import ProbabilityFlowODE
from sdeflow.samplers.pc import PCSampler
from sdeflow.samplers.restart import Restart
from sdeflow.samplers.sa_solver import SASolver
from sdeflow.samplers.predictors import Ancestral, EulerMaruyama, NonePredictor, Predictor, ReverseDiffusion
from sdeflow.samplers.unipc import UniPC

__all__ = [
    "SampleResult", "Sampler", "State", "Multistep", "Schedule", "weighted_sum", "SolverError", "NonFiniteError", "BudgetError", "IncompatibleSampler",
    "PCSampler", "Predictor", "EulerMaruyama", "ReverseDiffusion", "Ancestral", "NonePredictor",
    "Corrector", "LangevinCorrector", "AnnealedLangevin", "NoneCorrector",
    "ProbabilityFlowODE",
    "DDIM", "DPMSolver", "DPMSolverAdaptive", "DPMSolverPP", "UniPC", "EDMHeun", "IPNDM", "LMS",
    "EDMStochastic", "DPMSolverPPSDE", "GottaGoFast",
    "DEIS", "StochasticDDIM", "EulerAncestral", "DPMSolverPP3MSDE", "DPMSolverPPSDESinglestep", "SASolver",
    "ERSDE", "ERScaler", "ODEScaler", "SDEScaler", "Restart",
    "AnalyticJump", "GaussianStats", "LearnedMultistep", "ByBudget",
]
