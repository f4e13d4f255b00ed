"""Many samples in batches, sharded over data-parallel ranks: sample i depends only on (seed, i).

The run's samples are cut into batches of `batch_size` consecutive indices; each rank generates a
contiguous block of whole batches, with per-sample noise keyed by the global index. So 1, 2 or N
processes compute every batch exactly as one process would (bit for bit, even through a network
whose kernels depend on the batch size), and `gather_rows` reassembles the one-process tensor on
rank 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from sdeflow.core import distributed
from sdeflow.noise.streams import sampling_streams


@dataclass
class Generated:
    """This rank's samples (indices `indices` of the run) and the NFE per sample (the maximum over ranks), with the
    network's forward and backward passes behind it (guidance and inverse methods may make more than one per NFE)."""

    samples: torch.Tensor
    indices: range
    nfe: int
    forwards: int | None = None
    backwards: int | None = None


def generate(
    score,
    sde,
    solver,
    n: int,
    shape,
    *,
    nfe: int | None = None,
    grid=None,
    seed: int = 0,
    batch_size: int = 256,
    device=None,
    progress: bool = True,
    indices: range | None = None,
    brownian: bool = False,
    labels=None,
    guidance=None,
    inverse=None,
) -> Generated:
    """Draw samples `indices` (default: this rank's share of 0..n-1) of a run of n samples.

    Args:
        score: a `sdeflow.ScoreFunction`.
        sde, solver: the SDE and any sdeflow sampler.
        n: total number of samples of the run (over all ranks).
        shape: the shape of one sample.
        nfe: the NFE budget of a grid-stepping solver (None for adaptive solvers, which choose their own).
        grid: the time grid (the solver's default when None, as in `sample`).
        seed: sample i's prior draw and its solver noise come from the streams (seed, PRIOR, i) and (seed, NOISE, i).
        batch_size: samples per solver call; also the unit of sharding.
        device: where to sample (default: the score model's device is not guessed: CPU).
        progress: show a progress bar (rank 0 only).
        indices: the sample indices to draw, for manual sharding (default `shard(n, unit=batch_size)`).
        brownian: the solver noise of sample i is one Brownian path, the same for any grid or NFE (`BrownianNoise`).
        labels: class labels of a class-conditional model, cycled over the run: sample i gets
            labels[i % len(labels)], whatever the batch or rank.
        guidance: a guidance method (`sdeflow.ClassifierFreeGuidance(w=...)`, ...): each batch samples with
            `guidance.bind(score, batch_labels)` (batch_labels None without labels); default: the labels bound as `y`.
        inverse: an inverse problem (`sdeflow.inverse.Observed(method, operator, y, ...)`): each batch of samples
            start .. start + b - 1 runs with the (score, sampler, hook) of `inverse.bind(score, sde, solver, start, b)`,
            its method bound to those samples' observations.
    """
    if n < 1 or batch_size < 1:
        raise ValueError(f"need n >= 1 and batch_size >= 1, got n={n}, batch_size={batch_size}")
    ts = solver.plan(sde, grid, nfe=nfe)
    indices = distributed.shard(n, unit=batch_size) if indices is None else indices
    chunks, counted = [torch.empty((0, *shape))], [0, 0, 0]  # NFE, forwards, backwards: the maxima over batches
    starts = range(indices.start, indices.stop, batch_size)
    for start in tqdm(
        starts, desc=type(solver).__name__, disable=not (progress and distributed.is_main()), dynamic_ncols=True
    ):
        b = min(batch_size, indices.stop - start)
        with torch.no_grad():
            prior, noise = sampling_streams(sde, b, seed, offset=start, brownian=brownian)
            x = sde.prior_sampling((b, *shape), prior, device=device)
            batch_score, batch_labels = score, None
            if labels is not None:
                index = torch.arange(start, start + b) % len(labels)
                batch_labels = torch.as_tensor(labels, dtype=torch.int64)[index]
            if guidance is not None:
                batch_score = guidance.bind(score, batch_labels)
            elif batch_labels is not None:
                batch_score = score.condition(y=batch_labels)
            batch_solver, batch_ts, hook = solver, ts, None
            if inverse is not None:
                bound = inverse.bind(batch_score, sde, solver, start, b)
                batch_score, batch_solver, hook = bound.score, bound.sampler, bound.hook
                if batch_solver is not solver:  # a wrapper plans its own grid (RePaint's cost per step is its own)
                    batch_ts = batch_solver.plan(sde, grid, nfe=nfe)
            out = batch_solver.sample(batch_score, sde, x, batch_ts, generator=noise, hook=hook)
        chunks.append(out.samples.cpu())
        passes = (out.nfe, out.forwards or 0, out.backwards or 0)
        counted = [max(c, p) for c, p in zip(counted, passes)]
    # Every rank reports the same counts, even one whose shard is empty.
    nfe, forwards, backwards = (
        int(v) for v in distributed.all_reduce(torch.tensor(counted, dtype=torch.float64), "max").tolist()
    )
    return Generated(torch.cat(chunks), indices, nfe, forwards, backwards)
