"""The inverse methods' former names: each method was a settings class (`DPSMethod`, ...) beside the class it built.

A method is now one class (`sdeflow.conditioning.inverse.base`); the former names are that class.
"""

from sdeflow.conditioning.inverse.base import Bound, InverseMethod
from sdeflow.conditioning.inverse.dps import DPS
from sdeflow.conditioning.inverse.pigdm import PiGDM
from sdeflow.conditioning.inverse.repaint import RePaint
from sdeflow.conditioning.inverse.replacement import Replacement

# Former names.
ReplacementMethod = Replacement
RePaintMethod = RePaint
DPSMethod = DPS
PiGDMMethod = PiGDM

__all__ = ["Bound", "InverseMethod", "ReplacementMethod", "RePaintMethod", "DPSMethod", "PiGDMMethod"]
