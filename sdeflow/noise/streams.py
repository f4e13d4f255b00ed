"""A sampling run's two per-sample streams: the prior draw and the solver noise (fresh draws or a Brownian path)."""

from __future__ import annotations

from sdeflow.noise.brownian import BrownianNoise
from sdeflow.noise.generators import NOISE, PRIOR, PerSampleNoise


def streams(seed: int, n: int, offset: int = 0, brownian=None) -> tuple:
    """The per-sample streams of samples offset..offset+n-1 of a sampling run: (prior draws, solver noise).

    `brownian`: (t0, t1), the time span of a per-sample Brownian path for the solver noise
    (`sdeflow.BrownianNoise`), so that a sample's noise does not change with the grid; None: fresh
    draws at every step.
    """
    if brownian is None:
        noise = PerSampleNoise(seed, n, offset, purpose=NOISE)
    else:
        noise = BrownianNoise(seed, n, offset, *brownian)
    return PerSampleNoise(seed, n, offset, purpose=PRIOR), noise
