"""Noise: keyed random streams (per sample or shared) and per-sample Brownian paths."""

from sdeflow.noise.brownian import BrownianNoise
from sdeflow.noise.generators import PerSampleNoise, SharedNoise, as_noise
from sdeflow.noise.streams import streams

__all__ = ["PerSampleNoise", "SharedNoise", "BrownianNoise", "as_noise", "streams"]
