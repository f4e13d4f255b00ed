"""Forward SDEs."""

from sdeflow.sde.base import SDE, ReverseSDE
from sdeflow.sde.beta_schedule import VPSchedule
from sdeflow.sde.cosine import CosineVPSDE
from sdeflow.sde.discrete import DiscreteVPSDE, cosine_betas, linear_betas, scaled_linear_betas
from sdeflow.sde.edm import EDMSDE
from sdeflow.sde.flow import FlowSDE
from sdeflow.sde.ve import VESDE
from sdeflow.sde.vp import VPSDE, SubVPSDE

__all__ = [
    "SDE",
    "ReverseSDE",
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
]
