"""Injected randomness: every random draw of the library goes through one of these noise sources.

`PerSampleNoise` gives each sample its own generator, seeded from (seed, sample index), so sample i
is the same whatever the batch size or the number of processes that produced it. A plain
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

    def randn(self, shape, dtype=torch.float32, device=None) -> torch.Tensor:
        gen_device = self.generator.device if self.generator is not None else device
        return torch.randn(tuple(shape), generator=self.generator, dtype=dtype, device=gen_device).to(device)


class PerSampleNoise:
    """One generator per sample: sample `offset + i` draws from a stream seeded by (seed, offset + i).

    Args:
        seed: the run's base seed.
        n: number of samples in the batch this noise source serves.
        offset: global index of the batch's first sample (for batched or sharded generation).
    """

    def __init__(self, seed: int, n: int, offset: int = 0):
        if n < 1 or offset < 0:
            raise ValueError(f"need n >= 1 and offset >= 0, got n={n}, offset={offset}")
        self.seed, self.n, self.offset = int(seed), int(n), int(offset)
        self.generators = [seeded_generator(self.seed, i) for i in range(offset, offset + n)]

    def randn(self, shape, dtype=torch.float32, device=None) -> torch.Tensor:
        shape = tuple(shape)
        if shape[0] != self.n:
            raise ValueError(f"this noise source serves {self.n} samples, asked for a batch of {shape[0]}")
        # Drawn on the CPU so that a seed gives the same samples on every device.
        draws = [torch.randn(shape[1:], generator=g, dtype=dtype) for g in self.generators]
        return torch.stack(draws).to(device)


def seeded_generator(seed: int, key: int) -> torch.Generator:
    """A CPU generator for stream `key` of run `seed`, independent of every other (seed, key) pair."""
    # SeedSequence decorrelates neighbouring pairs, unlike seeding with seed + key.
    state = np.random.SeedSequence(int(seed), spawn_key=(int(key),)).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & 0x7FFF_FFFF_FFFF_FFFF)


def as_noise(generator) -> SharedNoise | PerSampleNoise:
    """Normalise what users pass as `generator` (None, a torch.Generator or a noise source) to a noise source."""
    if generator is None or isinstance(generator, torch.Generator):
        return SharedNoise(generator)
    if callable(getattr(generator, "randn", None)):
        return generator
    raise TypeError(
        f"generator must be None, a torch.Generator, or a noise source with a randn(shape, dtype, device) "
        f"method such as sdeflow.PerSampleNoise; got {type(generator).__name__}"
    )
