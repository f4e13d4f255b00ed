"""Forward SDEs."""

from sdeflow.sde.base import SDE, ReverseSDE
from sdeflow.sde.ve import VESDE
from sdeflow.sde.vp import SubVPSDE, VPSDE

__all__ = ["SDE", "ReverseSDE", "VPSDE", "SubVPSDE", "VESDE"]
