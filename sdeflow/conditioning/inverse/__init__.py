"""Inverse problems: measurement operators y = A x and the methods that sample p(x | y) with any sampler.

Each method is one class, configured by keyword, whose `bind(score, sde, solver, operator, y, noise_std, seed,
offset)` returns the `Bound` (score, sampler, hook) one batch samples with.
"""

from sdeflow.conditioning.inverse.base import Bound, DivergenceError, InverseMethod, Observed
from sdeflow.conditioning.inverse.dps import DPS
from sdeflow.conditioning.inverse.methods import DPSMethod, PiGDMMethod, RePaintMethod, ReplacementMethod
from sdeflow.conditioning.inverse.operators import (
    AveragePooling,
    Colorization,
    Inpainting,
    LinearOperator,
    MatrixOperator,
    Projection,
)
from sdeflow.conditioning.inverse.pigdm import PiGDM
from sdeflow.conditioning.inverse.repaint import RePaint
from sdeflow.conditioning.inverse.replacement import Replacement

__all__ = [
    "LinearOperator",
    "Projection",
    "Inpainting",
    "Colorization",
    "AveragePooling",
    "MatrixOperator",
    "InverseMethod",
    "Bound",
    "Observed",
    "DivergenceError",
    "Replacement",
    "RePaint",
    "DPS",
    "PiGDM",
    # Former names of the methods (each was a settings class beside the class it built).
    "ReplacementMethod",
    "RePaintMethod",
    "DPSMethod",
    "PiGDMMethod",
]
