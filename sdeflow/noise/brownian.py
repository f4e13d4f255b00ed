"""Per-sample Brownian paths that do not depend on the grid: a counter-based Brownian tree.

A stochastic sampler's noise over a step from t to t_next is the increment W(t_next) - W(t) of a
Brownian path. When every sample has one path, fixed by (seed, sample index), two runs with
different grids, step counts or batch sizes integrate the same realisation of the reverse SDE:
their samples differ only by discretisation error, which is what an error-against-NFE curve of a
stochastic sampler should show (the common random numbers of Monte Carlo practice), and what a
strong-convergence test needs.

The path on [t0, t1] is a Brownian tree (Levy's construction): W(t0) ~ N(0, t0), W(t1) - W(t0) ~
N(0, t1 - t0), and every interval [a, b] of the tree is split at a point m drawn from the Brownian
bridge between its ends, W(m) = W(a) + (m - a) / (b - a) (W(b) - W(a)) + sqrt((m - a)(b - m) / (b - a)) z,
an exact Brownian motion in t. The split points are dyadic in log t, where diffusion grids are
about uniform (they crowd towards eps), so a few levels separate the points of any practical grid.
Each z is a Philox draw keyed by the node and the sample (`PerSampleNoise.randn(..., draw=node)`,
its fast float32 transform: the path itself is summed in float64), so any point of the path is
computed directly, in any order, on any device. Below the `depth`-th level (leaves of 1.8e-4 in
log t over [1e-5, 1] at the default depth 16) the value at t is drawn from the bridge across its
leaf. Two different times inside one leaf would share that draw and get the wrong joint law, so that
is refused with a clear error (raise `depth`). A query costs one normal draw per level below what
the previous query shared: about depth - log2(steps) draws per step, against one for fresh noise.

Below t0 the path goes on to W(0) = 0, by the same construction: the bridge from 0 to W(t0) halves
time octave by octave, W(s / 2) = W(s) / 2 + (sqrt(s) / 2) z at s = t0, t0 / 2, ..., and each octave
[s / 2, s] is a tree of its own (its draws keyed by the octave), so any time in (0, T] is a point of
one exact Brownian path: a grid that ends at 1.5e-16 rather than 0 (a time computed from a sigma)
works on an SDE with eps = 0. A time 2^-k t0 costs k normal draws the first time, once per run.
"""

from __future__ import annotations

import copy
import math
import time

import torch

from sdeflow.core.checks import integer
from sdeflow.noise.generators import BROWNIAN, NOISE, PerSampleNoise, stream_seed


def brownian_span(sde) -> tuple[float, float]:
    """The span (t0, t1) of the tree of a Brownian path for sampling `sde`: [eps, T], or [1e-6 T, T] where eps = 0.

    The path itself is defined on all of [0, T]: below t0 it is the bridge to W(0) = 0 (see the module notes).
    """
    return (sde.eps if sde.eps > 0 else 1e-6 * sde.T), sde.T


class BrownianNoise:
    """A noise source whose step increments come from one Brownian path per sample (see the module notes).

    `increment(shape, t, t_next)` is (W(t_next) - W(t)) / sqrt|t_next - t|: a standard normal for
    every step, additive across refinements of the grid, and the same for sample i whatever the
    grid, the batch or the process that drew it. `randn`, `rand` and `randint` are fresh per-sample
    draws (Langevin steps, EDM's churn and Restart's jumps need noise that is not a path increment).

    Args:
        seed: the run's base seed.
        n: samples in the batch; offset: the global index of its first sample.
        t0, t1: the span of the tree, 0 < t0 < t1 (the SDE's [eps, T], `brownian_span(sde)`). Every time
            in [0, t1] is a point of the path: below t0, by bridges to W(0) = 0.
        depth: levels of each tree, at most 29 (each query draws at most depth + 1 normals).
        cache_size: how many queried values of the path to keep (a run that revisits a grid, such as a
            benchmark whose rows share grids, keeps one grid's worth).
        steps: the run's steps, where known: the fresh draws are then made in blocks (`PerSampleNoise`).
    """

    def __init__(
        self,
        seed: int,
        n: int,
        offset: int = 0,
        t0: float = 1e-5,
        t1: float = 1.0,
        depth: int = 16,
        cache_size: int = 4,
        steps: int | None = None,
    ):
        if not 0 < t0 < t1:
            raise ValueError(
                f"a Brownian path needs 0 < t0 < t1 (its tree splits in log t; use the SDE's [eps, T]), "
                f"got t0={t0}, t1={t1}"
            )
        integer("depth", depth, 1, 29, " (node ids are 32-bit counter words)")
        self.fresh = PerSampleNoise(seed, n, offset, purpose=NOISE, steps=steps)
        self.tree = PerSampleNoise(seed, n, offset, purpose=BROWNIAN)
        integer("cache_size", cache_size, 2, accepted=" (a step's two ends)")
        self.n, self.t0, self.t1, self.depth, self.cache_size = (
            int(n),
            float(t0),
            float(t1),
            int(depth),
            int(cache_size),
        )
        self._log0, self._log1 = math.log(self.t0), math.log(self.t1)
        # Per (shape, device): the last queries' values; W at the octaves' ends below t0; and per tree (the main
        # one, None, and octave k), W at tree positions (integers in [0, 2^depth]) along the last two descents, so
        # memory stays at 2 x depth states while a monotone grid's queries share most of their path, and each leaf's
        # one queried time.
        self._cache: dict = {}
        # Seconds spent computing values of the path, shared with every `restarted` copy (`seconds`).
        self._work = {"seconds": 0.0}

    @property
    def seconds(self) -> float:
        """The time spent computing values of the path so far (not reading them from the cache), by this source and
        every `restarted` copy of it: the work that runs sharing one path share, which a benchmark times apart."""
        return self._work["seconds"]

    def restarted(self) -> "BrownianNoise":
        """The same path, sharing what has been computed of it, with the fresh draws from their start: the
        numbers a new `BrownianNoise` of the same arguments gives, for a run that reuses the path."""
        other = copy.copy(self)
        other.fresh = PerSampleNoise(self.fresh.seed, self.n, self.fresh.offset, purpose=NOISE, steps=self.fresh.steps)
        return other

    # Fresh draws, for noise that is not an increment of the path.
    def randn(self, shape, dtype=torch.float32, device=None) -> torch.Tensor:
        return self.fresh.randn(shape, dtype=dtype, device=device)

    def rand(self, shape, dtype=torch.float32, device=None) -> torch.Tensor:
        return self.fresh.rand(shape, dtype=dtype, device=device)

    def randint(self, low: int, high: int, shape, device=None) -> torch.Tensor:
        return self.fresh.randint(low, high, shape, device=device)

    def increment(self, shape, t0: float, t1: float, dtype=torch.float32, device=None) -> torch.Tensor:
        """(W(t1) - W(t0)) / sqrt|t1 - t0| for every sample: a standard normal, in `dtype` on `device`."""
        t0, t1 = float(t0), float(t1)
        if t0 == t1:
            raise ValueError(f"a Brownian increment needs two different times, got t0 = t1 = {t0}")
        dw = self.path(shape, t1, device) - self.path(shape, t0, device)
        return (dw / math.sqrt(abs(t1 - t0))).to(dtype)

    def path(self, shape, t: float, device=None) -> torch.Tensor:
        """W(t) for every sample, shape (n, *shape[1:]), in float64 on `device`."""
        t = float(t)
        slack = 1e-9 * self.t1
        shape, device = tuple(shape), torch.device("cpu") if device is None else torch.device(device)
        if t == 0:
            return torch.zeros(self._check(shape), dtype=torch.float64, device=device)  # W(0) = 0
        if not 0 < t <= self.t1 + slack:
            raise ValueError(f"the Brownian path spans [0, {self.t1}], asked for t = {t}")
        # Times equal to an end but for rounding (an end computed two ways) are that end.
        t = self.t0 if self.t0 - slack <= t < self.t0 else min(t, self.t1)
        cache = self._cache.setdefault((shape, device), {"values": {}, "octaves": {}, "trees": {}})
        values = cache["values"]
        if t in values:
            # Most recently used last: a step asks for W at its start (the previous step's end) after W at its end.
            values[t] = values.pop(t)
            return values[t]
        start = time.perf_counter()
        if t >= self.t0:
            w = self._descend(cache, None, t, shape, device)
        else:
            # Octave k is [2^-k t0, 2^(1-k) t0).
            k = max(1, math.ceil(math.log2(self.t0 / t)))
            k += (t < self.t0 * 2.0**-k) - (t >= self.t0 * 2.0 ** (1 - k))
            w = self._descend(cache, k, t, shape, device)
        self._work["seconds"] += time.perf_counter() - start
        values[t] = w
        while len(values) > self.cache_size:
            del values[next(iter(values))]
        return w

    def _descend(self, cache: dict, octave: int | None, t: float, shape, device) -> torch.Tensor:
        """W(t) from the tree of `octave` (None: the main tree on [t0, t1]), down from its two ends."""
        tree = cache["trees"].setdefault(octave, {"points": {}, "last": [], "leaves": {}})
        points, leaves = tree["points"], 2**self.depth
        (a, b), stream = self._span(octave), self._stream(octave)
        u = (math.log(t) - math.log(a)) / (math.log(b) - math.log(a)) * leaves  # t's position in leaf units
        lo, hi = 0, leaves
        if octave is None:
            w_lo = self._point(points, lo, lambda: math.sqrt(self.t0) * self._z(stream, leaves * 2 + 1, shape, device))
            w_hi = self._point(
                points, hi, lambda: w_lo + math.sqrt(self.t1 - self.t0) * self._z(stream, leaves * 2, shape, device)
            )
        else:
            w_hi = self._point(points, hi, lambda: self._octave_end(cache, octave - 1, shape, device))
            w_lo = self._point(points, lo, lambda: self._octave_end(cache, octave, shape, device))
        visited = [lo, hi]
        for level in range(self.depth):
            if u == lo or u == hi:
                break
            mid = (lo + hi) // 2
            node = 2**level + (lo >> (self.depth - level))
            w_mid = self._point(
                points,
                mid,
                lambda: self._bridge(w_lo, w_hi, octave, lo, hi, self._time(octave, mid), stream, node, shape, device),
            )
            visited.append(mid)
            if u < mid:
                hi, w_hi = mid, w_mid
            else:
                lo, w_lo = mid, w_mid
        # Forget what neither this descent nor the previous one visited.
        keep = set(visited) | set(tree["last"])
        for p in [p for p in points if p not in keep]:
            del points[p]
        tree["last"] = visited
        if u == lo or u == hi:
            return w_lo if u == lo else w_hi
        # Inside a leaf: the bridge across it at t, from the leaf's own draw.
        # Times equal but for rounding (a grid point computed two ways) are the same time.
        other = tree["leaves"].setdefault(lo, t)
        if abs(other - t) > 1e-12 * t:
            raise ValueError(
                f"times {other!r} and {t!r} fall in one leaf of the Brownian tree (width {1 / leaves:.3g} of "
                f"log(t1 / t0)); give BrownianNoise a larger depth (now {self.depth}, at most 29)"
            )
        return self._bridge(w_lo, w_hi, octave, lo, hi, t, stream, leaves + lo, shape, device)

    def _octave_end(self, cache: dict, k: int, shape, device) -> torch.Tensor:
        """W(2^-k t0): W(t0) at k = 0, else the bridge from W(0) = 0 to W(2^(1-k) t0) at its midpoint."""
        ends = cache["octaves"]
        if k not in ends:
            if k == 0:
                ends[0] = self._descend(cache, None, self.t0, shape, device)
            else:
                s = self.t0 * 2.0 ** (1 - k)
                above = self._octave_end(cache, k - 1, shape, device)
                ends[k] = 0.5 * above + 0.5 * math.sqrt(s) * self._z(self._stream(k), 0, shape, device)
        return ends[k]

    def _span(self, octave: int | None) -> tuple[float, float]:
        return (self.t0, self.t1) if octave is None else (self.t0 * 2.0**-octave, self.t0 * 2.0 ** (1 - octave))

    def _stream(self, octave: int | None) -> PerSampleNoise:
        """The draws of a tree: the main tree's stream, or octave k's own (its node 0 draws the octave's lower end)."""
        if octave is None:
            return self.tree
        tree = self.tree
        return PerSampleNoise(tree.seed, self.n, tree.offset, BROWNIAN, key=stream_seed(tree.seed, BROWNIAN, octave))

    def _time(self, octave: int | None, position: int) -> float:
        """The time at a tree position; the ends exactly the span's."""
        leaves = 2**self.depth
        a, b = self._span(octave)
        if position in (0, leaves):
            return a if position == 0 else b
        if octave is None:
            return math.exp(self._log0 + (self._log1 - self._log0) * position / leaves)
        return a * 2.0 ** (position / leaves)

    def _bridge(self, w_lo, w_hi, octave, lo: int, hi: int, t: float, stream, node: int, shape, device):
        """W(t) for t in [time(lo), time(hi)] from the Brownian bridge between the two ends, with draw `node`."""
        a, b = self._time(octave, lo), self._time(octave, hi)
        f = (t - a) / (b - a)
        sd = math.sqrt(max((t - a) * (b - t) / (b - a), 0.0))
        return w_lo + f * (w_hi - w_lo) + sd * self._z(stream, node, shape, device)

    def _point(self, points: dict, position: int, make):
        if position not in points:
            points[position] = make()
        return points[position]

    def _check(self, shape):
        if not shape or shape[0] != self.n:
            got = shape[0] if shape else "a scalar"
            raise ValueError(f"this noise source serves {self.n} samples, asked for a batch of {got}")
        return shape

    def _z(self, stream: PerSampleNoise, node: int, shape, device) -> torch.Tensor:
        return stream.randn(self._check(shape), dtype=torch.float64, device=device, draw=node, fast=True)

    def __repr__(self) -> str:
        return (
            f"BrownianNoise(seed={self.fresh.seed}, n={self.n}, offset={self.fresh.offset}, t0={self.t0}, "
            f"t1={self.t1}, depth={self.depth})"
        )
