"""Injected randomness: every random draw of the library goes through one of these noise sources.

One convention for every random draw of a run: a stream is keyed by (seed, purpose) or, per sample,
by (seed, purpose, sample index), through numpy's SeedSequence, so no two streams of a run meet and
neighbouring seeds share none. `PerSampleNoise` keys each sample's draws by its index (a
counter-based generator), so sample i is the same whatever the batch size or the number of
processes that produced it. A plain `torch.Generator` is also accepted (one stream for the whole
batch: reproducible for a fixed batch only, and the cheapest per draw).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from sdeflow.core.tensors import to_device


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

    def increment(self, shape, t0: float, t1: float, dtype=torch.float32, device=None) -> torch.Tensor:
        """The normalised Brownian increment of a step from t0 to t1: here a fresh normal draw (see `BrownianNoise`)."""
        return self.randn(shape, dtype=dtype, device=device)


# The purposes of a run's streams. Append new ones at the end: the numbers key the streams.
(
    PRIOR,
    EXACT,
    NOISE,
    DIRECTIONS,
    INIT_WEIGHTS,
    HELD_OUT,
    SUBSETS,
    DEQUANTIZE,
    BATCHES,
    TRAINING,
    BROWNIAN,
    OBSERVATION,
    MEASUREMENT,
    PILOT,
) = range(14)


class PerSampleNoise:
    """Counter-based noise: the k-th draw of sample `offset + i` is a function of (seed, purpose, offset + i, k) only.

    Sample i is therefore the same whatever the batch size or the number of processes that made
    it, as if each sample had its own generator, but a whole batch is drawn in a few dozen array
    operations: the words are Philox4x32-10 (Salmon et al. 2011, the generator of cuRAND and JAX)
    of the counter (element block, draw index, sample index) under a key fixed by (seed, purpose).
    The integers are the same on every device (computed in numpy on the CPU, in torch on a GPU, so
    noise for GPU samples is made on the GPU); the normals agree across devices to the rounding of
    their float64 logarithm and cosine.

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
        # Normals drawn ahead (see `randn`): (shape, dtype, fast), the first draw index, and a tensor of draws.
        self._ahead: tuple | None = None

    @classmethod
    def for_step(cls, seed: int, step: int, n: int, offset: int = 0) -> "PerSampleNoise":
        """Noise for slots offset..offset+n-1 of training step `step`: the same slot gets the same draws on any rank.

        This is what makes data-parallel training independent of the number of processes: the
        global batch of a step is a function of (seed, step), and each rank draws only its slots.
        Nothing needs saving to resume, whatever the world size then.
        """
        return cls(seed, n, offset, purpose=TRAINING, key=stream_seed(seed, TRAINING, step))

    def words(self, shape, device=None, draw: int | None = None) -> torch.Tensor:
        """The next draw's random 32-bit words, shape (n, *shape[1:]), as int64 on `device` (one word per element).

        `draw`: read the words of this draw index (below 2^32) instead, without advancing the count
        (random access, as a Brownian tree needs). On the CPU they are computed in numpy (cheapest
        for small arrays); on another device by the same arithmetic in torch, there: the integers
        are identical on every device.
        """
        index = self._index(draw)
        words = self._words(shape, device, index)[0]
        return (torch.from_numpy(words.view(np.int64)) if isinstance(words, np.ndarray) else words).reshape(
            tuple(shape)
        )

    def _index(self, draw: int | None, count: int = 1) -> int:
        """The draw index to read (the next one, advancing the count by `count`, or `draw`)."""
        index = self.draws if draw is None else int(draw)
        if not 0 <= index < 2**32 - count + 1:
            raise ValueError(f"a draw index is a 32-bit counter word, got {index}")
        if draw is None:
            self.draws += count
        return index

    def _words(self, shape, device, index: int, count: int = 1):
        """The words of draws index .. index + count - 1 as a (count, n, per-sample) array: uint64 in numpy on the CPU,
        an int64 tensor on another device (one draw there)."""
        shape = tuple(shape)
        if not shape or shape[0] != self.n:
            got = shape[0] if shape else "a scalar"
            raise ValueError(f"this noise source serves {self.n} samples, asked for a batch of {got}")
        device = torch.device("cpu") if device is None else torch.device(device)
        per_sample = _per_sample(shape)
        blocks = -(-per_sample // 4)
        keys = (self.key & 0xFFFFFFFF, self.key >> 32)
        # The counter: (block within the sample, draw index, sample index low word, high word).
        if device.type == "cpu":
            sample = np.arange(self.offset, self.offset + self.n, dtype=np.uint64)[:, None]
            c0 = np.arange(blocks, dtype=np.uint64)[None, :]
            c1 = np.arange(index, index + count, dtype=np.uint64)[:, None, None]
            words = np.stack(philox4x32(c0, c1, sample & _MASK32, sample >> np.uint64(32), *keys), axis=-1)
        else:
            sample = torch.arange(self.offset, self.offset + self.n, dtype=torch.int64, device=device)[:, None]
            c0 = torch.arange(blocks, dtype=torch.int64, device=device).expand(self.n, blocks)
            words = torch.stack(
                philox4x32(c0, index, sample & 0xFFFFFFFF, sample >> 32, *keys, mulhilo=_mulhilo_int64), dim=-1
            )
        # The four words of a block are four consecutive elements.
        return words.reshape(-1, self.n, 4 * blocks)[..., :per_sample]

    def randn(
        self, shape, dtype=torch.float32, device=None, draw: int | None = None, fast: bool = False
    ) -> torch.Tensor:
        """Standard normals, shape (n, *shape[1:]); `draw`: those of this draw index (see `words`).

        Box-Muller on pairs of words, in float64 whatever `dtype`: the tails keep all 32 bits of the
        uniforms (out to 6.7 standard deviations), and a float32 normal is the float64 one rounded, so
        it is the same number whichever device or code path (numpy on the CPU, torch on a GPU) made it.

        `fast`: Box-Muller in float32, four times cheaper; its uniforms keep 24 of the 32 bits, which
        cuts the tails at 5.8 standard deviations (probability 7e-9). For bulk noise whose values are
        summed (the Brownian tree's nodes).

        Small draws made on the CPU one after another in the same shape (a solver's noise, step after
        step) are computed several at a time, up to `DRAW_AHEAD`: numpy's cost is per operation there,
        so a block of eight costs about what three single draws do. Draw k is the same numbers either way.
        """
        place = _where_to_draw(shape, device)
        if draw is not None or place is not None or math.prod(shape) > AHEAD_MAX:
            return to_device(self._normals(shape, dtype, fast, place, self._index(draw))[0], device)
        kind = (tuple(shape), dtype, fast)
        if self._ahead is None or self._ahead[0] != kind or not 0 <= self.draws - self._ahead[1] < len(self._ahead[2]):
            # Draw one ahead at first; double the block while the same draws keep coming.
            last = (
                self._ahead is not None
                and self._ahead[0] == kind
                and self.draws == self._ahead[1] + len(self._ahead[2])
            )
            count = min(2 * len(self._ahead[2]), DRAW_AHEAD) if last else 1
            self._ahead = (kind, self.draws, self._normals(shape, dtype, fast, None, self.draws, count))
        z = self._ahead[2][self._index(None) - self._ahead[1]]
        return to_device(z, device)

    def _normals(self, shape, dtype, fast: bool, place, index: int, count: int = 1) -> torch.Tensor:
        """Draws index .. index + count - 1 of standard normals, shape (count, n, *shape[1:]), made on `place`."""
        w = self._words(_even(shape), place, index, count)
        w = torch.from_numpy(w.view(np.int64)) if isinstance(w, np.ndarray) else w
        # In torch on every device, so the normals are the same numbers on a CPU and a GPU (its vectorised float64
        # logarithm and cosine are also three times numpy's speed). The words are converted before the offset
        # (int64 + 0.5 would be float32); (0, 1) is open, so the log is finite.
        u = (w.reshape(*w.shape[:2], -1, 2).to(torch.float32 if fast else torch.float64) + 0.5) * 2.0**-32
        r = torch.sqrt(-2.0 * torch.log(u[..., 0]))
        angle = (2 * math.pi) * u[..., 1]
        z = torch.stack([r * torch.cos(angle), r * torch.sin(angle)], -1).reshape(*w.shape[:2], -1)[
            ..., : _per_sample(shape)
        ]
        return z.reshape(-1, *tuple(shape)).to(dtype)

    def rand(self, shape, dtype=torch.float32, device=None) -> torch.Tensor:
        """Uniform on [0, 1), with as many random bits as `dtype` holds (at most 32)."""
        bits = min(round(-math.log2(torch.finfo(dtype).eps)) + 1, 32)
        w = self.words(shape, _where_to_draw(shape, device))
        return to_device(((w >> (32 - bits)).to(torch.float64) * 2.0**-bits).to(dtype), device)

    def randint(self, low: int, high: int, shape, device=None) -> torch.Tensor:
        """Integers in [low, high) by Lemire's multiply-shift: bias below (high - low) / 2^32, so ranges stay under 2^24."""
        span = int(high) - int(low)
        if not 0 < span <= 2**24:
            raise ValueError(f"randint needs 0 < high - low <= 2**24, got low={low}, high={high}")
        return to_device(((self.words(shape, _where_to_draw(shape, device)) * span) >> 32) + int(low), device)

    def increment(self, shape, t0: float, t1: float, dtype=torch.float32, device=None) -> torch.Tensor:
        """The normalised Brownian increment of a step from t0 to t1: here a fresh normal draw (see `BrownianNoise`)."""
        return self.randn(shape, dtype=dtype, device=device)


# Philox4x32-10 constants (Salmon et al. 2011; Random123's philox.h).
_MASK32 = np.uint64(0xFFFFFFFF)
_PHILOX_M = (0xD2511F53, 0xCD9E8D57)
_PHILOX_W = (0x9E3779B9, 0xBB67AE85)


def _mulhilo_uint64(m: int, c):
    """High and low 32-bit halves of m * c, for uint64 arrays of 32-bit words (the product is exact in 64 bits)."""
    p = np.uint64(m) * c
    return p >> np.uint64(32), p & _MASK32


def _mulhilo_int64(m: int, c):
    """The same for int64 tensors, which have no unsigned 64-bit product: c is split into 16-bit halves so that
    every partial product stays below 2^49."""
    lo_part, hi_part = c * (m & 0xFFFF), c * (m >> 16)  # m * c = hi_part * 2^16 + lo_part
    low = lo_part + ((hi_part & 0xFFFF) << 16)
    return (hi_part >> 16) + (low >> 32), low & 0xFFFFFFFF


def philox4x32(c0, c1, c2, c3, k0: int, k1: int, rounds: int = 10, mulhilo=_mulhilo_uint64) -> tuple:
    """Philox4x32-`rounds` of the counter words (c0, c1, c2, c3) under key (k0, k1): four arrays of 32-bit words.

    The words are uint64 numpy arrays (default) or int64 tensors (with `mulhilo=_mulhilo_int64`),
    broadcasting against each other.
    """
    if mulhilo is _mulhilo_uint64:
        return _philox4x32_numpy(c0, c1, c2, c3, k0, k1, rounds)
    for _ in range(rounds):
        hi0, lo0 = mulhilo(_PHILOX_M[0], c0)
        hi1, lo1 = mulhilo(_PHILOX_M[1], c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0, k1 = (k0 + _PHILOX_W[0]) & 0xFFFFFFFF, (k1 + _PHILOX_W[1]) & 0xFFFFFFFF
    return c0, c1, c2, c3


def _philox4x32_numpy(c0, c1, c2, c3, k0: int, k1: int, rounds: int) -> tuple:
    """The same rounds in numpy with the two multiplied words stacked, so a round is five array operations, not ten.

    A = (c0, c2) are the words multiplied, B = (c1, c3) the words xored in: a round maps A to
    (hi(M1 c2) ^ c1 ^ k0, hi(M0 c0) ^ c3 ^ k1) and B to (lo(M1 c2), lo(M0 c0)), the halves swapped.
    On small draws numpy's cost is per call, so fewer calls are faster.
    """
    shape = np.broadcast(c0, c1, c2, c3).shape
    a, b = np.empty((2, *shape), np.uint64), np.empty((2, *shape), np.uint64)
    a[0], a[1], b[0], b[1] = c0, c2, c1, c3
    ones = (1,) * len(shape)
    m = np.array(_PHILOX_M, np.uint64).reshape(2, *ones)
    r = np.arange(rounds, dtype=np.uint64)[:, None]
    keys = ((np.array([k0, k1], np.uint64) + r * np.array(_PHILOX_W, np.uint64)) & _MASK32).reshape(rounds, 2, *ones)
    for key in keys:
        p = a * m
        a = (p >> np.uint64(32))[::-1] ^ b
        a ^= key
        b = (p & _MASK32)[::-1]
    return a[0], b[0], a[1], b[1]


# Draws of at most this many numbers are made ahead, up to DRAW_AHEAD at a time (see `PerSampleNoise.randn`): below it
# numpy's per-operation cost dominates; above it a draw costs in proportion to its size, and drawing ahead would only hold memory.
AHEAD_MAX = 2**15
DRAW_AHEAD = 8

# Below this many numbers a draw is made on the CPU and copied: the ~200 small kernels of Philox and
# Box-Muller on a GPU cost more launch time than numpy takes (batch-1 sampling, small training batches).
# The numbers are the same either way.
DEVICE_DRAW_MIN = 2**17


def _where_to_draw(shape, device) -> torch.device | None:
    if device is None or torch.device(device).type == "cpu" or math.prod(shape) < DEVICE_DRAW_MIN:
        return None
    return torch.device(device)


def _per_sample(shape) -> int:
    return math.prod(tuple(shape)[1:])


def _even(shape):
    """The shape of the words a normal draw needs: an even number per sample (Box-Muller makes pairs)."""
    m = _per_sample(shape)
    return (tuple(shape)[0], m + m % 2)


def stream_seed(seed: int, *key: int) -> int:
    """The seed of stream `key` (a purpose, and a sample index for per-sample streams) of run `seed`."""
    return _stream_seed(int(seed), tuple(int(k) for k in key))


@functools.lru_cache(maxsize=1024)
def _stream_seed(seed: int, key: tuple) -> int:
    # SeedSequence decorrelates neighbouring seeds and keys, unlike seeding with seed + key. Cached: it takes
    # about 10 us, and every sampling call keys two streams.
    state = np.random.SeedSequence(seed, spawn_key=key).generate_state(1, np.uint64)[0]
    return int(state) & 0x7FFF_FFFF_FFFF_FFFF


def seeded_generator(seed: int, *key: int) -> torch.Generator:
    """A CPU generator for stream `key` of run `seed`, independent of every other stream of every run."""
    return torch.Generator().manual_seed(stream_seed(seed, *key))


class FreshIncrements:
    """A user's noise source that has `randn` but no `increment`: each step's increment is a fresh normal draw."""

    def __init__(self, source):
        self.source = source

    def __getattr__(self, name):
        if name == "source":  # not yet set (a copy being made): no recursion
            raise AttributeError(name)
        return getattr(self.source, name)

    def increment(self, shape, t0: float, t1: float, dtype=torch.float32, device=None) -> torch.Tensor:
        return self.source.randn(shape, dtype=dtype, device=device)


def as_noise(generator):
    """Normalise what users pass as `generator` (None, a torch.Generator or a noise source) to a noise source.

    A noise source has `randn(shape, dtype, device)` (fresh normals: Langevin steps, EDM's churn,
    Restart's jumps) and `increment(shape, t0, t1, dtype, device)` (the normalised Brownian
    increment (W(t1) - W(t0)) / sqrt|t1 - t0| of a step; the same as a fresh draw except for
    `BrownianNoise`, whose path does not depend on the grid).
    """
    if generator is None or isinstance(generator, torch.Generator):
        return SharedNoise(generator)
    if callable(getattr(generator, "randn", None)):
        return generator if callable(getattr(generator, "increment", None)) else FreshIncrements(generator)
    raise TypeError(
        f"generator must be None, a torch.Generator, or a noise source with a randn(shape, dtype, device) method "
        f"such as sdeflow.PerSampleNoise; got {type(generator).__name__}"
    )
