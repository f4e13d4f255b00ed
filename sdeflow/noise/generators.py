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

from sdeflow.core.checks import integer
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
        steps: the steps of the run this source serves, where known (`sdeflow.sample` gives its plan's): a
            solver's step noise is then drawn that many draws at a time, in as few blocks as `BLOCK_MAX` allows
            (see `randn`). The numbers are the same either way.
    """

    def __init__(
        self,
        seed: int,
        n: int,
        offset: int = 0,
        purpose: int = NOISE,
        key: int | None = None,
        steps: int | None = None,
    ):
        if n < 1 or offset < 0:
            raise ValueError(f"need n >= 1 and offset >= 0, got n={n}, offset={offset}")
        if steps is not None:
            integer("steps", steps, accepted=" or None (not known)")
        self.seed, self.n, self.offset, self.purpose = int(seed), int(n), int(offset), int(purpose)
        self.steps = None if steps is None else int(steps)
        self.key = stream_seed(self.seed, self.purpose) if key is None else int(key)
        # How many draws each sample has made: the second word of every counter.
        self.draws = 0
        # Normals drawn ahead (see `randn`): (shape, dtype, fast), the first draw index, and a tensor of draws.
        self._ahead: tuple | None = None
        # A source whose first block is drawn with this one's first draw (`draw_with`).
        self._partner: PerSampleNoise | None = None

    def draw_with(self, other: "PerSampleNoise") -> "PerSampleNoise":
        """Draw `other`'s first block of normals in the same Philox call as this source's first draw: a sampling run's
        prior draw and its step noise in one call instead of two (numpy's cost is per call at these sizes, and a call
        made between two network evaluations runs from a cold cache). The numbers are the same either way. `other`
        must serve the same samples; returns self."""
        if not isinstance(other, PerSampleNoise) or (other.n, other.offset) != (self.n, self.offset):
            raise ValueError("draw_with takes a PerSampleNoise of the same samples (n and offset)")
        self._partner = other
        return self

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
        a, b = self._pairs(shape, device, index, count)
        # The four words of a block, (a[0], b[0], a[1], b[1]), are four consecutive elements.
        words = (np.stack if isinstance(a, np.ndarray) else torch.stack)([a[0], b[0], a[1], b[1]], -1)
        return words.reshape(-1, self.n, words.shape[-2] * 4)[..., : _per_sample(shape)]

    def _pairs(self, shape, device, index: int, count: int = 1, also=()):
        """The Philox words of draws index .. index + count - 1 as two arrays of shape (2, count, n, blocks):
        a = (x0, x2) and b = (x1, x3) of every block (x0, x1, x2, x3) of four elements. uint64 in numpy on the CPU,
        int64 tensors on another device (one draw there). `also`: (source, index, count) of other sources of the same
        samples, whose draws follow along the count axis, made in the same call (on the CPU)."""
        shape = tuple(shape)
        if not shape or shape[0] != self.n:
            got = shape[0] if shape else "a scalar"
            raise ValueError(f"this noise source serves {self.n} samples, asked for a batch of {got}")
        device = torch.device("cpu") if device is None else torch.device(device)
        blocks = -(-_per_sample(shape) // 4)
        if device.type == "cpu":
            return self._pairs_numpy(blocks, index, count, also)
        return self._pairs_torch(blocks, device, index)

    def _pairs_numpy(self, blocks: int, index: int, count: int, also=()) -> tuple:
        # The counter: (block within the sample, draw index, sample index low word, high word).
        c0, lo, hi = _counter_words(self.offset, self.n, blocks)
        if not also:
            c1 = np.arange(index, index + count, dtype=np.uint64)[:, None, None]
            return _philox4x32_numpy(c0, c1, lo, hi, self.key & 0xFFFFFFFF, self.key >> 32, 10)
        # Each draw row under its own source's key.
        rows = [(self, index, count), *also]
        c1 = np.concatenate([np.arange(i, i + c, dtype=np.uint64) for _, i, c in rows])[:, None, None]
        k = np.concatenate([np.full(c, src.key, dtype=np.uint64) for src, _, c in rows])[:, None, None]
        return _philox4x32_numpy(c0, c1, lo, hi, k & _MASK32, k >> np.uint64(32), 10)

    def _pairs_torch(self, blocks: int, device, index: int) -> tuple:
        """The same words by int64 tensor arithmetic on `device`, one draw (the integers are the numpy ones)."""
        sample = torch.arange(self.offset, self.offset + self.n, dtype=torch.int64, device=device)[:, None]
        c0 = torch.arange(blocks, dtype=torch.int64, device=device).expand(self.n, blocks)
        keys = (self.key & 0xFFFFFFFF, self.key >> 32)
        x = philox4x32(c0, index, sample & 0xFFFFFFFF, sample >> 32, *keys, mulhilo=_mulhilo_int64)
        return torch.stack([x[0], x[2]])[:, None], torch.stack([x[1], x[3]])[:, None]

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
        step) are computed in blocks: numpy's cost is per operation there, so a block of ten draws of 256 x 16
        costs about what three single draws do. With `steps` known, a block is `steps` draws (or, beyond
        `BLOCK_MAX` numbers, that many split evenly); else the blocks double from one draw up to `DRAW_AHEAD`.
        Draw k is the same numbers either way.
        """
        place = _where_to_draw(shape, device)
        if draw is not None or place is not None or math.prod(shape) > AHEAD_MAX:
            return to_device(self._normals(shape, dtype, fast, place, self._index(draw))[0], device)
        kind = (tuple(shape), dtype, fast)
        if self._ahead is None or self._ahead[0] != kind or not 0 <= self.draws - self._ahead[1] < len(self._ahead[2]):
            count, partner, self._partner = self._block(kind), self._partner, None
            if partner is not None and partner.draws == 0 and partner._ahead is None:
                also = partner._block(kind)
                z = self._normals(shape, dtype, fast, None, self.draws, count, also=[(partner, 0, also)])
                partner._ahead, z = (kind, 0, z[count:]), z[:count]
            else:
                z = self._normals(shape, dtype, fast, None, self.draws, count)
            self._ahead = (kind, self.draws, z)
        z = self._ahead[2][self._index(None) - self._ahead[1]]
        return to_device(z, device)

    def _block(self, kind) -> int:
        """How many draws of `kind` to make at once: the run's steps, split evenly into blocks of at most `BLOCK_MAX`
        numbers; where the steps are not known, one at first, doubling up to `DRAW_AHEAD` while the same draws keep
        coming."""
        cap = max(1, BLOCK_MAX // math.prod(kind[0]))
        if self.steps is not None:
            return -(-self.steps // -(-self.steps // cap))
        previous = self._ahead
        continuing = previous is not None and previous[0] == kind and self.draws == previous[1] + len(previous[2])
        return min(2 * len(previous[2]), DRAW_AHEAD, cap) if continuing else 1

    def _normals(self, shape, dtype, fast: bool, place, index: int, count: int = 1, also=()) -> torch.Tensor:
        """Draws index .. index + count - 1 of standard normals, shape (count, n, *shape[1:]), made on `place`
        (followed by the draws of `also`, see `_pairs`).

        Box-Muller on the word pairs (a, b) of every block: z = sqrt(-2 log u_a) (cos, sin)(2 pi u_b), with
        u = (word + 1/2) 2^-32. In torch on every device, so the normals are the same numbers on a CPU and a GPU (its
        vectorised float64 logarithm and cosine are also three times numpy's speed); in place, so that a block of
        draws makes no temporary but the cosine.
        """
        a, b = self._pairs(_even(shape), place, index, count, also)
        a, b = (torch.from_numpy(w.view(np.int64)) if isinstance(w, np.ndarray) else w for w in (a, b))
        real = torch.float32 if fast else torch.float64
        # The words are converted before the offset (int64 + 0.5 would be float32); (0, 1) is open: the log is finite.
        r = a.to(real).add_(0.5).mul_(2.0**-32).log_().mul_(-2.0).sqrt_()
        angle = b.to(real).add_(0.5).mul_(2.0**-32).mul_(2 * math.pi)
        cos = torch.cos(angle).mul_(r)
        sin = angle.sin_().mul_(r)
        # Element 4j + 2i + k of a sample is (cos, sin)[k] of pair i of block j, rounded to `dtype` in the copy.
        z = torch.empty((*a.shape[1:], 2, 2), dtype=dtype, device=a.device)
        z[..., 0].copy_(cos.permute(1, 2, 3, 0))
        z[..., 1].copy_(sin.permute(1, 2, 3, 0))
        z, per_sample = z.reshape(*a.shape[1:3], -1), _per_sample(shape)
        return (z if z.shape[-1] == per_sample else z[..., :per_sample]).reshape(-1, *tuple(shape))

    def rand(self, shape, dtype=torch.float32, device=None) -> torch.Tensor:
        """Uniform on [0, 1), with as many random bits as `dtype` holds (at most 32)."""
        bits = min(round(-math.log2(torch.finfo(dtype).eps)) + 1, 32)
        w = self.words(shape, _where_to_draw(shape, device))
        return to_device(((w >> (32 - bits)).to(torch.float64) * 2.0**-bits).to(dtype), device)

    def randint(self, low: int, high: int, shape, device=None) -> torch.Tensor:
        """Integers in [low, high) by Lemire's multiply-shift: bias below (high - low) / 2^32, so ranges stay under
        2^24."""
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
        a, b = _philox4x32_numpy(c0, c1, c2, c3, k0, k1, rounds)
        return a[0], b[0], a[1], b[1]
    for _ in range(rounds):
        hi0, lo0 = mulhilo(_PHILOX_M[0], c0)
        hi1, lo1 = mulhilo(_PHILOX_M[1], c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0, k1 = (k0 + _PHILOX_W[0]) & 0xFFFFFFFF, (k1 + _PHILOX_W[1]) & 0xFFFFFFFF
    return c0, c1, c2, c3


def _philox4x32_numpy(c0, c1, c2, c3, k0, k1, rounds: int) -> tuple:
    """The same rounds in numpy with the two multiplied words stacked, so a round is five array operations, not ten.
    Returns (a, b): a = (x0, x2) and b = (x1, x3) of the output words (x0, x1, x2, x3), each of shape (2, ...). The
    key is two words, or two arrays that broadcast against the counter (a key per draw row).

    A = (c0, c2) are the words multiplied, B = (c1, c3) the words xored in: a round maps A to
    (hi(M1 c2) ^ c1 ^ k0, hi(M0 c0) ^ c3 ^ k1) and B to (lo(M1 c2), lo(M0 c0)), the halves swapped.
    On small draws numpy's cost is per call, so fewer calls are faster; every operation writes into one of three
    buffers, so a large block allocates nothing per round.
    """
    shape = np.broadcast(c0, c1, c2, c3).shape
    a, b, p = (np.empty((2, *shape), np.uint64) for _ in range(3))
    swapped = p[::-1]
    a[0], a[1], b[0], b[1] = c0, c2, c1, c3
    m = _PHILOX_M_WORDS.reshape(2, *(1,) * len(shape))
    for key in _round_keys(k0, k1, rounds, len(shape)):
        np.multiply(a, m, out=p)
        np.right_shift(swapped, np.uint64(32), out=a)
        a ^= b
        a ^= key
        np.bitwise_and(swapped, _MASK32, out=b)
    return a, b


_PHILOX_M_WORDS = np.array(_PHILOX_M, np.uint64)


def _round_keys(k0, k1, rounds: int, ndim: int) -> np.ndarray:
    """The key of every round, shape (rounds, 2, ...) broadcasting against (2, *counter shape) of `ndim` axes."""
    if isinstance(k0, np.ndarray):
        k = np.array([k0, k1], np.uint64)
        k = k.reshape(2, *(1,) * (ndim - (k.ndim - 1)), *k.shape[1:])
        r = np.arange(rounds, dtype=np.uint64).reshape(rounds, 1, *(1,) * ndim)
        return (k + r * np.array(_PHILOX_W, np.uint64).reshape(1, 2, *(1,) * ndim)) & _MASK32
    return _scalar_round_keys(int(k0), int(k1), rounds).reshape(rounds, 2, *(1,) * ndim)


@functools.lru_cache(maxsize=64)
def _scalar_round_keys(k0: int, k1: int, rounds: int) -> np.ndarray:
    # Cached: a source's key is the same for every draw it makes.
    r = np.arange(rounds, dtype=np.uint64)[:, None]
    keys = (np.array([k0, k1], np.uint64) + r * np.array(_PHILOX_W, np.uint64)) & _MASK32
    keys.flags.writeable = False
    return keys


@functools.lru_cache(maxsize=64)
def _counter_words(offset: int, n: int, blocks: int) -> tuple:
    """The counter words that do not change from draw to draw: (block index, sample index low word, high word)."""
    sample = np.arange(offset, offset + n, dtype=np.uint64)[:, None]
    words = (np.arange(blocks, dtype=np.uint64)[None, :], sample & _MASK32, sample >> np.uint64(32))
    for w in words:
        w.flags.writeable = False
    return words


# Draws of at most this many numbers are made ahead, in blocks of up to BLOCK_MAX numbers, or of DRAW_AHEAD draws where
# the run's steps are not known (see `PerSampleNoise.randn`). Below AHEAD_MAX numbers a draw costs little more than
# numpy's per-operation cost; above it a draw costs in proportion to its size, and drawing ahead would only hold
# memory. A block of 2^15 to 2^17 numbers costs 47-54 us a draw of 256 x 16 on a 2-core CPU (130 us alone); past
# 2^17 its float64 temporaries (1 MB each) leave the cache and take fresh memory, and a draw costs four to six times
# more. BLOCK_MAX keeps a factor of two from that edge.
AHEAD_MAX = 2**15
BLOCK_MAX = 2**16
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
