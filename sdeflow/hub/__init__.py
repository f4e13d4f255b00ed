"""Other people's checkpoints as sdeflow score functions, from local paths only (nothing is downloaded).

Each format is read as data: weights from safetensors or `torch.load(weights_only=True)`, configs
from JSON, every key used and every shape checked, and the model wrapped on the schedule it was
trained with, so that any sdeflow solver samples it.
"""

from sdeflow.hub.adm import ADMCheckpoint, from_adm, to_adm
from sdeflow.hub.diffusers_folder import DiffusersFolder, load_diffusers
from sdeflow.hub.discrete_time import DiscreteTimeModel
from sdeflow.hub.edm import EDMPickle, load_edm
from sdeflow.hub.scaling import IndexLabels, LogSigmaLabels, ScaledDenoiser, ScaledNoise, TimeLabels
from sdeflow.hub.score_sde import ScoreSdeCheckpoint, from_score_sde, save_score_sde, to_score_sde

__all__ = ["ADMCheckpoint", "from_adm", "to_adm", "DiscreteTimeModel", "DiffusersFolder", "load_diffusers", "EDMPickle", "load_edm",
           "IndexLabels", "LogSigmaLabels", "ScaledDenoiser", "ScaledNoise", "TimeLabels", "ScoreSdeCheckpoint", "from_score_sde",
           "save_score_sde", "to_score_sde"]
