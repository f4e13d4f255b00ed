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
"""

from __future__ import annotations

import copy
import math

import torch

from sdeflow.core.checks import integer
from sdeflow.noise.generators import BROWNIAN, NOISE, PerSampleNoise


def brownian_span(sde) -> tuple[float, float]:
    """The span (t0, t1) of a Brownian path for sampling `sde`: [eps, T], or [1e-6 T, T] where eps = 0 (W(0) = 0 is exact)."""
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
        t0, t1: the time span of the path, 0 < t0 < t1 (the SDE's [eps, T], `brownian_span(sde)`); every
            step must lie inside it, or end at t = 0 (W(0) = 0).
        depth: levels of the tree, at most 29 (each query draws at most depth + 1 normals).
        cache_size: how many queried values of the path to keep (a run that revisits a grid, such as a
            benchmark whose rows share grids, keeps one grid's worth).
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
    ):
        if not 0 < t0 < t1:
            raise ValueError(
                f"a Brownian path needs 0 < t0 < t1 (its tree splits in log t; use the SDE's [eps, T]), "
                f"got t0={t0}, t1={t1}"
            )
        integer("depth", depth, 1, 29, " (node ids are 32-bit counter words)")
        self.fresh = PerSampleNoise(seed, n, offset, purpose=NOISE)
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
        # Per (shape, device): W at tree positions (integers in [0, 2^depth]) along the last two descents,
        # so memory stays at 2 x depth states while a monotone grid's queries share most of their path;
        # the last queries' values; and each leaf's one queried time.
        self._cache: dict = {}

    def restarted(self) -> "BrownianNoise":
        """The same path, sharing what has been computed of it, with the fresh draws from their start: the
        numbers a new `BrownianNoise` of the same arguments gives, for a run that reuses the path."""
        other = copy.copy(self)
        other.fresh = PerSampleNoise(self.fresh.seed, self.n, self.fresh.offset, purpose=NOISE)
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
            # W(0) = 0: a grid may end at t = 0 (an SDE with eps = 0); times in (0, t0) are outside the tree.
            return torch.zeros(self._check(shape), dtype=torch.float64, device=device)
        if not self.t0 - slack <= t <= self.t1 + slack:
            raise ValueError(
                f"the Brownian path spans [{self.t0}, {self.t1}] (and t = 0), asked for t = {t}; "
                "give the path the SDE's [eps, T] (`brownian_span(sde)`)"
            )
        t = min(max(t, self.t0), self.t1)
        cache = self._cache.setdefault((shape, device), {"points": {}, "last": [], "values": {}, "leaves": {}})
        values = cache["values"]
        if t in values:
            # Most recently used last: a step asks for W at its start (the previous step's end) after W at its end.
            values[t] = values.pop(t)
            return values[t]
        points, leaves = cache["points"], 2**self.depth
        u = (math.log(t) - self._log0) / (self._log1 - self._log0) * leaves  # t's position in leaf units
        lo, hi = 0, leaves
        w_lo = self._point(points, lo, lambda: math.sqrt(self.t0) * self._z(leaves * 2 + 1, shape, device))
        w_hi = self._point(points, hi, lambda: w_lo + math.sqrt(self.t1 - self.t0) * self._z(leaves * 2, shape, device))
        visited = [lo, hi]
        for level in range(self.depth):
            if u == lo or u == hi:
                break
            mid = (lo + hi) // 2
            node = 2**level + (lo >> (self.depth - level))
            w_mid = self._point(
                points, mid, lambda: self._bridge(w_lo, w_hi, lo, hi, self._time(mid), node, shape, device)
            )
            visited.append(mid)
            if u < mid:
                hi, w_hi = mid, w_mid
            else:
                lo, w_lo = mid, w_mid
        # Forget what neither this descent nor the previous one visited.
        keep = set(visited) | set(cache["last"])
        for p in [p for p in points if p not in keep]:
            del points[p]
        cache["last"] = visited
        if u == lo or u == hi:
            w = w_lo if u == lo else w_hi
        else:
            # Inside a leaf: the bridge across it at t, from the leaf's own draw.
            # Times equal but for rounding (a grid point computed two ways) are the same time.
            other = cache["leaves"].setdefault(lo, t)
            if abs(other - t) > 1e-12 * t:
                raise ValueError(
                    f"times {other!r} and {t!r} fall in one leaf of the Brownian tree (width {1 / leaves:.3g} of "
                    f"log(t1 / t0)); give BrownianNoise a larger depth (now {self.depth}, at most 29)"
                )
            w = self._bridge(w_lo, w_hi, lo, hi, t, leaves + lo, shape, device)
        values[t] = w
        while len(values) > self.cache_size:
            del values[next(iter(values))]
        return w

    def _time(self, position: int) -> float:
        """The time at a tree position; the ends exactly t0 and t1."""
        leaves = 2**self.depth
        if position in (0, leaves):
            return self.t0 if position == 0 else self.t1
        return math.exp(self._log0 + (self._log1 - self._log0) * position / leaves)

    def _bridge(self, w_lo, w_hi, lo: int, hi: int, t: float, node: int, shape, device) -> torch.Tensor:
        """W(t) for t in [time(lo), time(hi)] from the Brownian bridge between the two ends, with draw `node`."""
        a, b = self._time(lo), self._time(hi)
        f = (t - a) / (b - a)
        return (
            w_lo + f * (w_hi - w_lo) + math.sqrt(max((t - a) * (b - t) / (b - a), 0.0)) * self._z(node, shape, device)
        )

    def _point(self, points: dict, position: int, make):
        if position not in points:
            points[position] = make()
        return points[position]

    def _check(self, shape):
        if not shape or shape[0] != self.n:
            got = shape[0] if shape else "a scalar"
            raise ValueError(f"this noise source serves {self.n} samples, asked for a batch of {got}")
        return shape

    def _z(self, node: int, shape, device) -> torch.Tensor:
        return self.tree.randn(self._check(shape), dtype=torch.float64, device=device, draw=node, fast=True)

    def __repr__(self) -> str:
        return (
            f"BrownianNoise(seed={self.fresh.seed}, n={self.n}, offset={self.fresh.offset}, t0={self.t0}, t1={self.t1}, "
            f"depth={self.depth})"
        )
