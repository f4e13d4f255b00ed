"""A sampling run's two per-sample streams: the prior draw and the solver noise (fresh draws or a Brownian path)."""

from __future__ import annotations

from sdeflow.noise.brownian import BrownianNoise, brownian_span
from sdeflow.noise.generators import NOISE, PRIOR, PerSampleNoise


def streams(seed: int, n: int, offset: int = 0, brownian=None, steps: int | None = None) -> tuple:
    """The per-sample streams of samples offset..offset+n-1 of a sampling run: (prior draws, solver noise).

    `brownian`: (t0, t1), the time span of a per-sample Brownian path for the solver noise
    (`sdeflow.BrownianNoise`), so that a sample's noise does not change with the grid; None: fresh
    draws at every step. `steps`: the steps of a stochastic solver's run, where known: its fresh draws are then made
    in as few blocks as memory allows (`PerSampleNoise`), the first of them with the prior draw; the same numbers as
    one at a time.
    """
    prior = PerSampleNoise(seed, n, offset, purpose=PRIOR)
    if brownian is not None:
        return prior, BrownianNoise(seed, n, offset, *brownian, steps=steps)
    noise = PerSampleNoise(seed, n, offset, purpose=NOISE, steps=steps)
    # A run of known steps: the prior draw and the first block of step noise in one Philox call (the same numbers).
    return (prior if steps is None else prior.draw_with(noise)), noise


def sampling_streams(
    sde,
    n: int,
    seed: int | None = 0,
    generator=None,
    offset: int = 0,
    brownian: bool = False,
    steps: int | None = None,
) -> tuple:
    """The (prior, noise) sources of samples offset..offset+n-1 of a sampling run: the one preamble of `sample`,
    `generate` and `sdedit`.

    With `generator` (a torch.Generator or a noise source), both draws come from it as it is; else from the
    per-sample streams of `seed`, the solver noise being a Brownian path over [0, T] when `brownian` is set.
    `steps`: the run's planned steps, where known (see `streams`).
    """
    if generator is not None:
        return generator, generator
    if seed is None:
        raise ValueError("give a seed or a generator")
    return streams(seed, n, offset, brownian=brownian_span(sde) if brownian else None, steps=steps)
