"""Streaming feature statistics, the Frechet distance between them, KID and precision/recall.

Means and covariances come from float64 running sums and outer products, so any number of samples
is reduced without holding their features in memory (and ranks can be all-reduced as plain sums).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import torch

from sdeflow.core import distributed
from sdeflow.core.io import atomic_write_bytes
from sdeflow.eval.metrics import frechet_distance


class StatsFileError(ValueError):
    """A reference-statistics file is missing or malformed."""


class FeatureStats:
    """Running sum and sum of outer products of d-dimensional features, in float64."""

    def __init__(self, dim: int, device=None):
        if dim < 1:
            raise ValueError(f"feature dim must be positive, got {dim}")
        self.dim = int(dim)
        self.n = 0
        self.sum = torch.zeros(dim, dtype=torch.float64, device=device)
        self.outer = torch.zeros(dim, dim, dtype=torch.float64, device=device)

    def update(self, features: torch.Tensor) -> "FeatureStats":
        """Add a batch of features (n, d)."""
        f = features.reshape(len(features), -1).to(torch.float64)
        if f.shape[1] != self.dim:
            raise ValueError(f"features have {f.shape[1]} dimensions, these statistics {self.dim}")
        self.n += len(f)
        self.sum += f.sum(0).to(self.sum.device)
        self.outer += (f.T @ f).to(self.outer.device)
        return self

    def merge(self, other: "FeatureStats") -> "FeatureStats":
        """Combine with statistics of other samples (as an all-reduce of the sums would)."""
        if other.dim != self.dim:
            raise ValueError(f"cannot merge statistics of dimensions {self.dim} and {other.dim}")
        self.n += other.n
        self.sum += other.sum.to(self.sum.device)
        self.outer += other.outer.to(self.outer.device)
        return self

    def all_reduce(self) -> "FeatureStats":
        """Sum the count, sums and outer products over data-parallel ranks, in place (identity for one process)."""
        count = distributed.all_reduce(torch.tensor([float(self.n)], dtype=torch.float64, device=self.sum.device))
        distributed.all_reduce(self.sum)
        distributed.all_reduce(self.outer)
        self.n = int(count.item())
        return self

    @property
    def mu(self) -> torch.Tensor:
        return self.sum / self.n

    @property
    def sigma(self) -> torch.Tensor:
        """Unbiased covariance, (sum x x^T - n mu mu^T) / (n - 1)."""
        if self.n < 2:
            raise ValueError("a covariance needs at least two samples")
        mu = self.mu
        return (self.outer - self.n * torch.outer(mu, mu)) / (self.n - 1)

    def frechet(self, other) -> float:
        """Squared Frechet distance to `other` (FeatureStats or a (mu, sigma) pair): the FID of these features."""
        mu2, sigma2 = (other.mu, other.sigma) if isinstance(other, FeatureStats) else other
        return frechet_distance(self.mu.cpu(), self.sigma.cpu(), torch.as_tensor(mu2), torch.as_tensor(sigma2))


def save_stats(path, stats: FeatureStats, extractor: str, weights: str = "") -> Path:
    """Write mu and sigma as npz (the EDM / pytorch-fid format) with the extractor and weights that produced them."""
    buf = io.BytesIO()
    meta = json.dumps({"extractor": extractor, "weights": weights, "n": stats.n})
    np.savez(buf, mu=stats.mu.cpu().numpy(), sigma=stats.sigma.cpu().numpy(), meta=np.array(meta))
    return atomic_write_bytes(path, buf.getvalue())


def load_stats(path) -> tuple[np.ndarray, np.ndarray, dict]:
    """(mu, sigma, metadata) from an npz holding `mu` and `sigma`, or raw `pool_3` activations (score_sde's format)."""
    path = Path(path)
    if not path.is_file():
        raise StatsFileError(f"no reference statistics at {path}")
    if path.stat().st_size == 0:
        raise StatsFileError(f"{path} is empty: expected an npz with 'mu' and 'sigma', or 'pool_3'")
    try:
        with np.load(path, allow_pickle=False) as f:
            keys = set(f.files)
            if {"mu", "sigma"} <= keys:
                mu, sigma = f["mu"].astype(np.float64), f["sigma"].astype(np.float64)
                meta = json.loads(str(f["meta"])) if "meta" in keys else {}
            elif "pool_3" in keys:
                acts = f["pool_3"].astype(np.float64)
                if acts.ndim != 2 or len(acts) < 2:
                    raise StatsFileError(f"{path}: pool_3 must be (n >= 2, d) activations, got shape {acts.shape}")
                mu, sigma, meta = acts.mean(0), np.cov(acts, rowvar=False), {"n": len(acts), "from": "pool_3"}
            else:
                raise StatsFileError(f"{path} holds {sorted(keys)}; expected 'mu' and 'sigma', or 'pool_3'")
    except (OSError, ValueError, EOFError, KeyError) as e:
        if isinstance(e, StatsFileError):
            raise
        raise StatsFileError(f"{path} is not a readable npz file: {e}") from e
    if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)):
        raise StatsFileError(f"{path}: mu must be (d,) and sigma (d, d); got {mu.shape} and {sigma.shape}")
    check_gaussian(mu, sigma, str(path))
    return mu, sigma, meta


def check_gaussian(mu: np.ndarray, sigma: np.ndarray, name: str) -> None:
    """Refuse statistics that no data could have: non-finite values, or a covariance that is not symmetric PSD."""
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise StatsFileError(f"{name}: mu or sigma holds NaN or infinity")
    scale = max(float(np.abs(sigma).max()), 1e-300)
    if not np.allclose(sigma, sigma.T, rtol=0, atol=1e-6 * scale):
        raise StatsFileError(f"{name}: sigma is not symmetric, so it is not a covariance matrix")
    lowest = float(np.linalg.eigvalsh((sigma + sigma.T) / 2).min())
    # Float32 statistics of 2048-d features have eigenvalues down to about -1e-6 of the largest: rounding, not data.
    if lowest < -1e-5 * scale:
        raise StatsFileError(
            f"{name}: sigma is not positive semi-definite (smallest eigenvalue {lowest:.3g}), "
            "so it is not a covariance matrix"
        )


def kid(
    x: torch.Tensor, y: torch.Tensor, subsets: int = 100, subset_size: int = 1000, generator=None
) -> tuple[float, float]:
    """Kernel Inception Distance (Binkowski et al. 2018): unbiased MMD^2, cubic polynomial kernel, mean and std over
    subsets."""
    x, y = x.flatten(1).to(torch.float64), y.flatten(1).to(torch.float64)
    d = x.shape[1]
    m = min(subset_size, len(x), len(y))
    if m < 2:
        raise ValueError("KID needs at least two samples on each side")
    values = []
    for _ in range(subsets):
        a = x[torch.randperm(len(x), generator=generator)[:m]]
        b = y[torch.randperm(len(y), generator=generator)[:m]]
        kxx, kyy, kxy = ((a @ a.T) / d + 1) ** 3, ((b @ b.T) / d + 1) ** 3, ((a @ b.T) / d + 1) ** 3
        mmd = (kxx.sum() - kxx.diagonal().sum() + kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1)) - 2 * kxy.mean()
        values.append(float(mmd))
    t = torch.tensor(values, dtype=torch.float64)
    return float(t.mean()), float(t.std()) if len(t) > 1 else 0.0


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019): k-NN balls around each set's features."""
    real, fake = real.flatten(1).to(torch.float64), fake.flatten(1).to(torch.float64)
    if min(len(real), len(fake)) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} samples on each side")

    def radii(f):
        d = torch.cdist(f, f)
        return d.kthvalue(k + 1, dim=1).values  # the k-th neighbour, not counting the point itself

    def coverage(ref, r, query):
        return float((torch.cdist(query, ref) <= r[None, :]).any(dim=1).double().mean())

    return coverage(real, radii(real), fake), coverage(fake, radii(fake), real)
