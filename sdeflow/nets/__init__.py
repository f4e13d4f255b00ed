"""Score networks in plain PyTorch."""

from sdeflow.nets.embeddings import GaussianFourierEmbedding, LabelEmbedding, SinusoidalEmbedding
from sdeflow.nets.mlp import ScoreMLP
from sdeflow.nets.ncsnpp import NCSNpp
from sdeflow.nets.precond import EDMPrecond
from sdeflow.nets.song_unet import DhariwalUNet, SongUNet

__all__ = [
    "GaussianFourierEmbedding",
    "SinusoidalEmbedding",
    "LabelEmbedding",
    "ScoreMLP",
    "NCSNpp",
    "EDMPrecond",
    "SongUNet",
    "DhariwalUNet",
]
