"""`sdeflow-eval`: sample a checkpoint with any solver and score the samples: Frechet distance, KID, precision/recall.

    sdeflow-eval checkpoint=outputs/.../checkpoint.pt solver=unipc_2_bh2 nfe=10
    sdeflow-eval -m checkpoint=... solver=ddim,dpmpp_2m,unipc_2_bh2 nfe=5,10,20   # then sdeflow-report <sweep dir>
    sdeflow-eval checkpoint=... eval=inception eval.weights=/path/pt_inception-2015-12-05-6726825d.pth \
        reference=cifar10.npz n=50000
    torchrun --nproc_per_node=8 -m sdeflow.apps.evaluate checkpoint=... device=cuda eval.device=cuda n=50000   # sharded

The reference is the training split's features (or `reference`); the floor row scores held-out
real data against it. Frechet statistics are streamed in float64; KID and precision/recall keep
the (n, d) features. Under torchrun or SLURM each rank generates and embeds its share of the
samples; the float64 sums are all-reduced and rank 0 computes the scores, so 1, 2 or N processes
give the same samples and the same Frechet distance.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from sdeflow.apps.bench.report import markdown_table
from sdeflow.apps.common import build, check_settings, console_app, job_name, run_dir, write_results
from sdeflow.apps.solvers import build_solvers
from sdeflow.apps.tracking import Tracker
from sdeflow.core import distributed
from sdeflow.core.io import write_csv
from sdeflow.eval.likelihood import bits_per_dim, log_likelihood
from sdeflow.eval.stats import FeatureStats, kid, load_stats, precision_recall
from sdeflow.hub.safe_config import rebuild
from sdeflow.noise.generators import DEQUANTIZE, EXACT, HELD_OUT, SUBSETS, seeded_generator, stream_seed
from sdeflow.samplers.generate import generate
from sdeflow.score.compiled import compile_score
from sdeflow.score.function import ScoreFunction
from sdeflow.training.data import Dataset
from sdeflow.tuning.autotune import describe, file_digest, for_model

METRICS = ("fd", "kid", "pr", "bpd")


def score_features(
    feats: torch.Tensor,
    ref_stats,
    ref_feats: torch.Tensor | None,
    metrics,
    seed: int = 0,
    stats: FeatureStats | None = None,
    n: int | None = None,
    intervals: int = 0,
) -> dict:
    """The chosen metrics of sample features against the reference (`stats`: their statistics, if already reduced).

    The Frechet distance is biased upwards by a small sample, so rows compared with each other must be
    scored on the same number of samples: with `n`, a larger set is scored on a seeded subset of n
    (its full-size distance is kept as `fd_full`). `intervals` > 0 adds a 90% interval from that many
    bootstrap resamples (`fd_lo`, `fd_hi`); KID, unbiased, comes with its standard deviation over subsets.
    """
    out = {"n": len(feats)}
    if n is not None and len(feats) > n:
        if "fd" in metrics:
            out["fd_full"] = (stats or FeatureStats(feats.shape[1]).update(feats)).frechet(ref_stats)
        feats, stats = feats[torch.randperm(len(feats), generator=seeded_generator(seed, SUBSETS))[:n]], None
        out["n"] = n
    if "fd" in metrics:
        out["fd"] = (stats or FeatureStats(feats.shape[1]).update(feats)).frechet(ref_stats)
        if intervals > 0:
            g = seeded_generator(seed, SUBSETS, 1)
            boot = torch.tensor(
                [
                    FeatureStats(feats.shape[1])
                    .update(feats[torch.randint(len(feats), (len(feats),), generator=g)])
                    .frechet(ref_stats)
                    for _ in range(intervals)
                ],
                dtype=torch.float64,
            )
            # Resampling with replacement repeats points, which inflates the distance itself: the interval is the
            # resamples' 5-95% spread, moved by their mean offset so that it is centred on this estimate.
            shift = float(boot.mean()) - out["fd"]
            out["fd_lo"], out["fd_hi"] = (
                float(torch.quantile(boot, 0.05)) - shift,
                float(torch.quantile(boot, 0.95)) - shift,
            )
    if ref_feats is not None:
        g = seeded_generator(seed, SUBSETS)
        if "kid" in metrics:
            out["kid"], out["kid_std"] = kid(
                feats, ref_feats, subsets=50, subset_size=min(1000, len(feats), len(ref_feats)), generator=g
            )
        if "pr" in metrics:
            out["precision"], out["recall"] = precision_recall(ref_feats[:5000], feats[:5000], k=3)
    return out


def held_out_bpd(score, sde, held, cfg) -> dict:
    """Bits per dimension of held-out data (dequantised images; continuous data as they are)."""
    g = seeded_generator(cfg.seed, DEQUANTIZE)
    x = held.all()[: cfg.bpd.samples]
    if held.image:
        # Uniform dequantisation of the stored levels, in the data's own scaling.
        levels = 2**held.bits
        raw = (x + 1) / 2 if held.centered else x
        raw = (torch.round(raw * (levels - 1)) + torch.rand(raw.shape, generator=g)) / levels
        x = raw * 2 - 1 if held.centered else raw
    x = x.to(cfg.device).double() if cfg.device == "cpu" else x.to(cfg.device)
    logp, nfe = log_likelihood(
        score, sde, x, probes=cfg.bpd.probes, noise=cfg.bpd.noise, rtol=cfg.bpd.rtol, atol=cfg.bpd.atol, generator=g
    )
    d = x[0].numel()
    bpd = bits_per_dim(logp, d, held.bits, held.centered) if held.image else -logp / (d * math.log(2))
    return {"bpd": float(bpd.mean()), "bpd_std": float(bpd.std()), "bpd_nfe": nfe}


def run(cfg: DictConfig) -> list[dict]:
    check_settings(
        cfg,
        n="count",
        nfe="count",
        batch_size="count",
        seed="index",
        use_ema="flag",
        progress="flag",
        held_out="fraction",
        intervals="index",
    )
    unknown = set(cfg.metrics) - set(METRICS)
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}; choose from {list(METRICS)}")
    out = run_dir()
    if (cfg.checkpoint is None) == (cfg.get("problem") is None):
        raise ValueError(
            "give exactly one of checkpoint=<path> (a trained model) or problem=<name> (an exact problem, e.g. gmm16)"
        )
    device, main = distributed.device(cfg.device), distributed.is_main()
    if cfg.checkpoint is not None:
        model = build(cfg.checkpoint_format, "checkpoint_format").load(cfg.checkpoint, cfg.use_ema, device)
        score, sde = compile_score(model.score, cfg.get("compile")), model.sde
        shape = model.shape
        if cfg.get("data") is not None:  # the user's own data config, from this command line
            data = instantiate(cfg.data.dataset)
        elif model.dataset is not None:
            # The training data as the stored config names it: rebuilt from the allow-list, never instantiated.
            data = rebuild(model.dataset, "config.data.dataset")
        else:
            raise ValueError(
                f"{cfg.checkpoint} records no training data to score against: give data=<conf/data entry>, "
                "e.g. data=cifar10 data.dataset.root=<folder>"
            )
        if tuple(data.shape) != shape:
            raise ValueError(f"data={data.name} holds samples of shape {tuple(data.shape)}; the model's are {shape}")
    else:
        # An exact problem: its exact score, and exact samples of p_0 as the data.
        problem, sde = instantiate(cfg.problem), instantiate(cfg.sde)
        score = ScoreFunction(problem.score_fn(sde), sde)
        data, shape = (
            Dataset(
                problem.sample(max(5 * cfg.n, 1000), seeded_generator(cfg.seed, EXACT)).float(), name=repr(problem)
            ),
            (problem.dim,),
        )
    train, held = data.split(1 - cfg.held_out, seed=stream_seed(cfg.seed, HELD_OUT))
    extractor = instantiate(cfg.eval).fit(train, held)
    train_feats = extractor(train.all())
    if cfg.reference is not None:
        mu, sigma, _ = load_stats(cfg.reference)
        ref_stats, ref_feats = (torch.as_tensor(mu), torch.as_tensor(sigma)), None
    else:
        ref_stats, ref_feats = FeatureStats(train_feats.shape[1]).update(train_feats), train_feats
    tracker = Tracker(dir=str(out), config=OmegaConf.to_container(cfg, resolve=True), name=job_name(), **cfg.logger)
    # Every row, the floor included, is scored on the same number of samples: the held-out set's size
    # bounds it (a reference file brings no held-out features to subsample, so its rows keep their n).
    common = min(cfg.n, len(held)) if ref_feats is not None else None
    rows = []
    grid = instantiate(cfg.timesteps)
    # Every solver is built before any samples are drawn, so a bad one is refused at the door.
    solvers = build_solvers(cfg)
    # What a tuned grid (timesteps=auto) is cached under: the checkpoint (beside it), or the exact problem (in the run).
    if cfg.checkpoint is not None:
        model_id, cache = (
            f"{file_digest(cfg.checkpoint)}:ema={bool(cfg.use_ema)}",
            Path(cfg.checkpoint).parent / "tuned_grids",
        )
    else:
        model_id, cache = f"{problem!r}:{sde!r}", out / "tuned_grids"
    for name, solver in solvers.items():
        solver, solver_grid, wrap, tuning = for_model(
            grid, score, sde, solver, cfg.nfe, shape, cache, model_id, device=device, progress=cfg.progress
        )
        if tuning is not None and main:
            print(describe(name, tuning))
        start = time.perf_counter()
        gen = generate(
            wrap(score),  # the score queried at a tuned grid's learned evaluation times (or the score itself)
            sde,
            solver,
            cfg.n,
            shape,
            nfe=cfg.nfe,
            grid=solver_grid,
            seed=cfg.seed,
            batch_size=cfg.batch_size,
            device=device,
            progress=cfg.progress,
            brownian=bool(cfg.get("brownian", False)),
        )
        feats = torch.cat(
            [torch.empty(0, train_feats.shape[1]), *[extractor(chunk) for chunk in gen.samples.split(cfg.batch_size)]]
        )
        stats = FeatureStats(train_feats.shape[1]).update(feats).all_reduce()
        # KID and precision/recall need the features themselves: rank 0 gathers them (n x d, small next to the images).
        feats = distributed.gather_rows(feats) if ref_feats is not None and {"kid", "pr"} & set(cfg.metrics) else feats
        if not main:
            continue
        row = {
            "solver": name,
            "kind": "eval",
            "nfe": gen.nfe,
            **({"tuning_pilot_nfe": tuning["pilot_nfe"]} if tuning else {}),
            **score_features(
                feats, ref_stats, ref_feats, cfg.metrics, cfg.seed, stats=stats, n=common, intervals=cfg.intervals
            ),
            "seconds": time.perf_counter() - start,
        }
        rows.append(row)
        tracker.log({f"{name}/{k}": v for k, v in row.items() if isinstance(v, (int, float))})
    if not main:
        return rows
    # The floor and the likelihood are rank 0's work, done last so that no rank waits for it at a collective.
    floor = {
        "solver": "floor (held-out real data)",
        "kind": "eval",
        "nfe": 0,
        **score_features(
            extractor(held.all()), ref_stats, ref_feats, cfg.metrics, cfg.seed, n=common, intervals=cfg.intervals
        ),
    }
    if "bpd" in cfg.metrics:
        floor.update(held_out_bpd(score, sde, held, cfg))
    rows.insert(0, floor)
    columns = [
        "solver",
        "nfe",
        "n",
        *[
            c
            for c in ("fd", "fd_lo", "fd_hi", "fd_full", "kid", "kid_std", "precision", "recall", "bpd", "bpd_std")
            if any(c in r for r in rows)
        ],
    ]
    print(
        f"features: {extractor.name}"
        + (f" (held-out accuracy {extractor.accuracy:.3f})" if getattr(extractor, "accuracy", None) else "")
    )
    print(markdown_table(rows, columns))
    write_csv(out / "results.csv", rows)
    write_results(
        out,
        cfg,
        rows=rows,
        features=extractor.name,
        classifier_accuracy=getattr(extractor, "accuracy", None),
        model=model.record() if cfg.checkpoint is not None else None,  # an exact problem's facts are its config
    )
    tracker.finish()
    return rows


main = console_app("evaluate", "sdeflow-eval", run)


if __name__ == "__main__":
    main()
