"""Test problems with exact answers, and toy data for pictures."""

from sdeflow.problems.conditional import FullMixture, LabelledMixture, linear_posterior, observed_posterior
from sdeflow.problems.gaussian import flow_map, gaussian_data, reverse_transition
from sdeflow.problems.gmm import GaussianMixture
from sdeflow.problems.tasks import GuidedProblem, InpaintingProblem
from sdeflow.problems.toy import checkerboard, eight_gaussians, grid_gaussians, swiss_roll, two_moons

__all__ = [
    "GaussianMixture",
    "eight_gaussians",
    "grid_gaussians",
    "two_moons",
    "swiss_roll",
    "checkerboard",
    "gaussian_data",
    "flow_map",
    "reverse_transition",
    "LabelledMixture",
    "FullMixture",
    "observed_posterior",
    "linear_posterior",
    "GuidedProblem",
    "InpaintingProblem",
]
