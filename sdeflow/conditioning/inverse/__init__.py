"""Inverse problems: measurement operators y = A x and the methods that sample p(x | y) with any sampler."""

from sdeflow.conditioning.inverse.dps import DPS
from sdeflow.conditioning.inverse.methods import (
    Bound,
    DPSMethod,
    InverseMethod,
    PiGDMMethod,
    RePaintMethod,
    ReplacementMethod,
)
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
    "Replacement",
    "RePaint",
    "DPS",
    "PiGDM",
    "InverseMethod",
    "Bound",
    "ReplacementMethod",
    "RePaintMethod",
    "DPSMethod",
    "PiGDMMethod",
]
