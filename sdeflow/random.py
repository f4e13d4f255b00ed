"""Injected randomness: every random draw of the library goes through one of these noise sources.

One convention for every random draw of a run: a stream is keyed by (seed, purpose) or, per sample,
by (seed, purpose, sample index), through numpy's SeedSequence, so no two streams of a run meet and
neighbouring seeds share none. `PerSampleNoise` keys each sample's draws by its index (a
counter-based generator), so sample i is the same whatever the batch size or the number of
processes that produced it. A plain `torch.Generator` is also accepted (one stream for the whole
batch: reproducible for a fixed batch only, and the cheapest per draw).
"""

from __future__ import annotations

import math

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
PRIOR, EXACT, NOISE, DIRECTIONS, INIT_WEIGHTS, HELD_OUT, SUBSETS, DEQUANTIZE, BATCHES, TRAINING = range(10)


class PerSampleNoise:
    """Counter-based noise: the k-th draw of sample `offset + i` is a function of (seed, purpose, offset + i, k) only.

    Sample i is therefore the same whatever the batch size or the number of processes that made
    it, as if each sample had its own generator, but a whole batch is drawn in a few dozen array
    operations: the words are Philox4x32-10 (Salmon et al. 2011, the generator of cuRAND and JAX)
    of the counter (element block, draw index, sample index) under a key fixed by (seed, purpose).
    The integers are computed on the CPU (in numpy, where small arrays cost least), so a seed gives
    the same samples on every device.

    Args:
        seed: the run's base seed.
        n: number of samples in the batch this noise source serves.
        offset: global index of the batch's first sample (for batched or sharded generation).
        purpose: which of the run's streams (`PRIOR` for the initial draw, `NOISE` for a solver's noise, ...).
    """

    def __init__(self, seed: int, n: int, offset: int = 0, purpose: int = NOISE, key: int | None = None):
        if n < 1 or offset < 0:
            raise ValueError(f"need n >= 1 and offset >= 0, got n={n}, offset={offset}")
        self.seed, self.n, self.offset, self.purpose = int(seed), int(n), int(offset), int(purpose)
        self.key = stream_seed(self.seed, self.purpose) if key is None else int(key)
        # How many draws each sample has made: the second word of every counter.
        self.draws = 0

    @classmethod
    def for_step(cls, seed: int, step: int, n: int, offset: int = 0) -> "PerSampleNoise":
        """Noise for slots offset..offset+n-1 of training step `step`: the same slot gets the same draws on any rank.

        This is what makes data-parallel training independent of the number of processes: the
        global batch of a step is a function of (seed, step), and each rank draws only its slots.
        Nothing needs saving to resume, whatever the world size then.
        """
        return cls(seed, n, offset, purpose=TRAINING, key=stream_seed(seed, TRAINING, step))

    def words(self, shape) -> np.ndarray:
        """The next draw's random 32-bit words, shape (n, *shape[1:]) as uint64 (one word per element)."""
        shape = tuple(shape)
        if not shape or shape[0] != self.n:
            got = shape[0] if shape else "a scalar"
            raise ValueError(f"this noise source serves {self.n} samples, asked for a batch of {got}")
        per_sample = int(np.prod(shape[1:], dtype=np.int64))
        blocks = -(-per_sample // 4)
        sample = np.arange(self.offset, self.offset + self.n, dtype=np.uint64)[:, None]
        c0 = np.broadcast_to(np.arange(blocks, dtype=np.uint64), (self.n, blocks))
        c1 = np.full((1, 1), self.draws, dtype=np.uint64)
        self.draws += 1
        out = philox4x32(c0, c1, sample & _MASK32, sample >> np.uint64(32), self.key & 0xFFFFFFFF, self.key >> 32)
        # The four words of a block are four consecutive elements.
        return np.stack(out, axis=-1).reshape(self.n, -1)[:, :per_sample].reshape(shape)

    def randn(self, shape, dtype=torch.float32, device=None) -> torch.Tensor:
        w = self.words(_even(shape))
        # Box-Muller on pairs of words, in float64 (open interval (0, 1), so the logarithm is finite).
        u = (w.reshape(self.n, -1, 2) + 0.5) * 2.0**-32
        r = np.sqrt(-2.0 * np.log(u[..., 0]))
        z = np.stack([r * np.cos(2 * np.pi * u[..., 1]), r * np.sin(2 * np.pi * u[..., 1])], axis=-1)
        return _to_torch(z.reshape(self.n, -1)[:, : _per_sample(shape)].reshape(tuple(shape)), dtype, device)

    def rand(self, shape, dtype=torch.float32, device=None) -> torch.Tensor:
        """Uniform on [0, 1), with as many random bits as `dtype` holds (at most 32)."""
        bits = min(round(-math.log2(torch.finfo(dtype).eps)) + 1, 32)
        u = (self.words(shape) >> np.uint64(32 - bits)).astype(np.float64) * 2.0**-bits
        return _to_torch(u, dtype, device)

    def randint(self, low: int, high: int, shape, device=None) -> torch.Tensor:
        """Integers in [low, high) by Lemire's multiply-shift: bias below (high - low) / 2^32, so ranges stay under 2^24."""
        span = int(high) - int(low)
        if not 0 < span <= 2**24:
            raise ValueError(f"randint needs 0 < high - low <= 2**24, got low={low}, high={high}")
        k = (self.words(shape) * np.uint64(span)) >> np.uint64(32)
        return to_device(torch.from_numpy(k.astype(np.int64) + int(low)), device)


# Philox4x32-10 constants (Salmon et al. 2011; Random123's philox.h).
_MASK32 = np.uint64(0xFFFFFFFF)
_PHILOX_M = (np.uint64(0xD2511F53), np.uint64(0xCD9E8D57))
_PHILOX_W = (0x9E3779B9, 0xBB67AE85)


def philox4x32(c0, c1, c2, c3, k0: int, k1: int, rounds: int = 10) -> tuple[np.ndarray, ...]:
    """Philox4x32-`rounds` of the counter words (c0, c1, c2, c3) under key (k0, k1): four arrays of 32-bit words.

    Words are held in uint64 arrays (broadcasting against each other), so the 32 x 32-bit products
    are exact and their high and low halves are a shift and a mask away.
    """
    shift = np.uint64(32)
    for _ in range(rounds):
        p0, p1 = _PHILOX_M[0] * c0, _PHILOX_M[1] * c2
        c0, c1, c2, c3 = (p1 >> shift) ^ c1 ^ np.uint64(k0), p1 & _MASK32, (p0 >> shift) ^ c3 ^ np.uint64(k1), p0 & _MASK32
        k0, k1 = (k0 + _PHILOX_W[0]) & 0xFFFFFFFF, (k1 + _PHILOX_W[1]) & 0xFFFFFFFF
    return c0, c1, c2, c3


def _per_sample(shape) -> int:
    return int(np.prod(tuple(shape)[1:], dtype=np.int64))


def _even(shape):
    """The shape of the words a normal draw needs: an even number per sample (Box-Muller makes pairs)."""
    m = _per_sample(shape)
    return (tuple(shape)[0], m + m % 2)


def _to_torch(a: np.ndarray, dtype, device) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(a)).to(dtype)
    return to_device(t, device)


def to_device(t: torch.Tensor, device) -> torch.Tensor:
    """A CPU tensor moved to `device`; to a GPU through pinned memory and without blocking, since a copy from
    pageable memory first waits for every kernel queued on the stream (a host sync per draw)."""
    if device is None or torch.device(device).type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


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
