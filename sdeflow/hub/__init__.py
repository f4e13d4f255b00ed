"""Other people's checkpoints as sdeflow score functions, from local paths only (nothing is downloaded).

Each format is read as data: weights from safetensors or `torch.load(weights_only=True)`, configs
from JSON, every key used and every shape checked, and the model wrapped on the schedule it was
trained with, so that any sdeflow solver samples it.
"""

from sdeflow.hub.diffusers_folder import DiffusersFolder, load_diffusers
from sdeflow.hub.discrete_time import DiscreteTimeModel
from sdeflow.hub.edm import EDMPickle, load_edm

__all__ = ["DiscreteTimeModel", "DiffusersFolder", "load_diffusers", "EDMPickle", "load_edm"]
