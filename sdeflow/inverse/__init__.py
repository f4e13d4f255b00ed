"""Inverse problems: measurement operators y = A x and the methods that sample p(x | y) with any sampler."""

from sdeflow.inverse.dps import DPS
from sdeflow.inverse.methods import Bound, DPSMethod, InverseMethod, PiGDMMethod, RePaintMethod, ReplacementMethod
from sdeflow.inverse.operators import AveragePooling, Colorization, Inpainting, LinearOperator, MatrixOperator, Projection
from sdeflow.inverse.pigdm import PiGDM
from sdeflow.inverse.repaint import RePaint
from sdeflow.inverse.replacement import Replacement

__all__ = ["LinearOperator", "Projection", "Inpainting", "Colorization", "AveragePooling", "MatrixOperator",
           "Replacement", "RePaint", "DPS", "PiGDM",
           "InverseMethod", "Bound", "ReplacementMethod", "RePaintMethod", "DPSMethod", "PiGDMMethod"]
