"""Checkpoints, other people's and sdeflow's own, as sdeflow score functions, from local paths only (no downloads).

A checkpoint format is one loader class (`CheckpointFormat`: `EDMFormat`, `DiffusersFormat`, `ADMFormat`,
`ScoreSdeFormat`, `SdeflowFormat`) whose `load(path, use_ema, device)` gives a `Loaded`: the score
function, its SDE and the typed facts the apps need. Each format is read as data: weights from
safetensors or `torch.load(weights_only=True)`, configs from JSON or through an allow-list, every key
used and every shape checked, and the model wrapped on the schedule it was trained with, so that any
sdeflow solver samples it.
"""

from sdeflow.hub.adm import ADMCheckpoint, ADMFormat, from_adm, to_adm
from sdeflow.hub.diffusers_folder import DiffusersFolder, DiffusersFormat, load_diffusers
from sdeflow.hub.discrete_time import DiscreteTimeModel
from sdeflow.hub.edm import EDMFormat, EDMPickle, load_edm
from sdeflow.hub.format import CheckpointFormat, Loaded
from sdeflow.hub.scaling import IndexLabels, LogSigmaLabels, ScaledDenoiser, ScaledNoise, TimeLabels
from sdeflow.hub.score_sde import ScoreSdeCheckpoint, ScoreSdeFormat, from_score_sde, save_score_sde, to_score_sde
from sdeflow.hub.trained import SdeflowFormat, load_trained

__all__ = [
    "CheckpointFormat",
    "Loaded",
    "ADMFormat",
    "DiffusersFormat",
    "EDMFormat",
    "ScoreSdeFormat",
    "SdeflowFormat",
    "load_diffusers",
    "load_edm",
    "load_trained",
    "from_adm",
    "to_adm",
    "from_score_sde",
    "to_score_sde",
    "save_score_sde",
    "DiscreteTimeModel",
    "IndexLabels",
    "LogSigmaLabels",
    "ScaledDenoiser",
    "ScaledNoise",
    "TimeLabels",
    # The former names of the formats, kept for older configs and code.
    "ADMCheckpoint",
    "DiffusersFolder",
    "EDMPickle",
    "ScoreSdeCheckpoint",
]
