"""Injected randomness: every random draw of the library goes through one of these noise sources.

One convention for every random draw of a run: a stream is keyed by (seed, purpose) or, per sample,
by (seed, purpose, sample index), through numpy's SeedSequence, so no two streams of a run meet and
neighbouring seeds share none. `PerSampleNoise` gives each sample its own generator, so sample i is
the same whatever the batch size or the number of processes that produced it. A plain
`torch.Generator` is also accepted (one stream for the whole batch: reproducible for a fixed batch,
and faster for very large batches of small samples).
"""

from __future__ import annotations

import numpy as np
import torch


class SharedNoise:
    """Noise for the whole batch from one `torch.Generator` (None: torch's global generator)."""

    def __init__(self, generator: torch.Generator | None = None):
        self.generator = generator

    def _device(self, device):
        return self.generator.device if self.generator is not None else device

    def randn(self, shape, dtype=torch.float32, device=None) -> torch.Tensor:
        return torch.randn(tuple(shape), generator=self.generator, dtype=dtype, device=self._device(device)).to(device)

    def rand(self, shape, dtype=torch.float32, device=None) -> torch.Tensor:
        return torch.rand(tuple(shape), generator=self.generator, dtype=dtype, device=self._device(device)).to(device)

    def randint(self, low: int, high: int, shape, device=None) -> torch.Tensor:
        return torch.randint(low, high, tuple(shape), generator=self.generator, device=self._device(device)).to(device)


# The purposes of a run's streams. Append new ones at the end: the numbers key the streams.
PRIOR, EXACT, NOISE, DIRECTIONS, INIT_WEIGHTS, HELD_OUT, SUBSETS, DEQUANTIZE, BATCHES = range(9)


class PerSampleNoise:
    """One generator per sample: sample `offset + i` draws from the stream keyed by (seed, purpose, offset + i).

    Args:
        seed: the run's base seed.
        n: number of samples in the batch this noise source serves.
        offset: global index of the batch's first sample (for batched or sharded generation).
        purpose: which of the run's streams (`PRIOR` for the initial draw, `NOISE` for a solver's noise, ...).
    """

    def __init__(self, seed: int, n: int, offset: int = 0, generators: list[torch.Generator] | None = None, purpose: int = NOISE):
        if n < 1 or offset < 0:
            raise ValueError(f"need n >= 1 and offset >= 0, got n={n}, offset={offset}")
        self.seed, self.n, self.offset, self.purpose = int(seed), int(n), int(offset), int(purpose)
        self._generators = generators

    @property
    def generators(self) -> list[torch.Generator]:
        # Made on the first draw: a deterministic solver's noise source costs nothing.
        if self._generators is None:
            self._generators = [torch.Generator().manual_seed(stream_seed(self.seed, self.purpose, i))
                                for i in range(self.offset, self.offset + self.n)]
        return self._generators

    @classmethod
    def for_step(cls, seed: int, step: int, n: int, offset: int = 0) -> "PerSampleNoise":
        """Noise for slots offset..offset+n-1 of training step `step`: the same slot gets the same draws on any rank.

        This is what makes data-parallel training independent of the number of processes: the
        global batch of a step is a function of (seed, step), and each rank draws only its slots.
        Nothing needs saving to resume, whatever the world size then.
        """
        base = np.random.SeedSequence(int(seed), spawn_key=(int(step),)).generate_state(1, np.uint64)[0]
        seeds = _splitmix64(base + np.arange(offset, offset + n, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15))
        # One SeedSequence per step and a vectorised mix per slot: a tenth of the cost of one SeedSequence per slot.
        return cls(seed, n, offset, [torch.Generator().manual_seed(int(s) & 0x7FFF_FFFF_FFFF_FFFF) for s in seeds])

    def _per_sample(self, draw, shape, device) -> torch.Tensor:
        shape = tuple(shape)
        if shape[0] != self.n:
            raise ValueError(f"this noise source serves {self.n} samples, asked for a batch of {shape[0]}")
        # Drawn on the CPU so that a seed gives the same samples on every device.
        return torch.stack([draw(shape[1:], g) for g in self.generators]).to(device)

    def randn(self, shape, dtype=torch.float32, device=None) -> torch.Tensor:
        return self._per_sample(lambda s, g: torch.randn(s, generator=g, dtype=dtype), shape, device)

    def rand(self, shape, dtype=torch.float32, device=None) -> torch.Tensor:
        return self._per_sample(lambda s, g: torch.rand(s, generator=g, dtype=dtype), shape, device)

    def randint(self, low: int, high: int, shape, device=None) -> torch.Tensor:
        return self._per_sample(lambda s, g: torch.randint(low, high, s, generator=g), shape, device)


def stream_seed(seed: int, *key: int) -> int:
    """The seed of stream `key` (a purpose, and a sample index for per-sample streams) of run `seed`."""
    # SeedSequence decorrelates neighbouring seeds and keys, unlike seeding with seed + key.
    state = np.random.SeedSequence(int(seed), spawn_key=tuple(int(k) for k in key)).generate_state(1, np.uint64)[0]
    return int(state) & 0x7FFF_FFFF_FFFF_FFFF


def seeded_generator(seed: int, *key: int) -> torch.Generator:
    """A CPU generator for stream `key` of run `seed`, independent of every other stream of every run."""
    return torch.Generator().manual_seed(stream_seed(seed, *key))


def streams(seed: int, n: int, offset: int = 0) -> tuple["PerSampleNoise", "PerSampleNoise"]:
    """The per-sample streams of samples offset..offset+n-1 of a sampling run: (prior draws, solver noise)."""
    return PerSampleNoise(seed, n, offset, purpose=PRIOR), PerSampleNoise(seed, n, offset, purpose=NOISE)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The SplitMix64 finaliser: a bijective mix of 64-bit integers (vectorised, wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        x = np.asarray(x, dtype=np.uint64)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def as_noise(generator) -> SharedNoise | PerSampleNoise:
    """Normalise what users pass as `generator` (None, a torch.Generator or a noise source) to a noise source."""
    if generator is None or isinstance(generator, torch.Generator):
        return SharedNoise(generator)
    if callable(getattr(generator, "randn", None)):
        return generator
    raise TypeError(
        f"generator must be None, a torch.Generator, or a noise source with a randn(shape, dtype, device) method "
        f"such as sdeflow.PerSampleNoise; got {type(generator).__name__}"
    )
