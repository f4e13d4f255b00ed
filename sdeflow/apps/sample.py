"""`sdeflow-sample`: samples of a trained checkpoint with any solver; image grid, arrays and counted NFE.

sdeflow-sample checkpoint=outputs/.../checkpoint.pt solver=unipc_2_bh2 nfe=10
sdeflow-sample checkpoint=ddpm-cifar10-32 checkpoint_format=diffusers solver=dpmpp_2m nfe=10   # a diffusers folder
sdeflow-sample checkpoint=... solver=[ddim,dpmpp_2m,edm_heun] nfe=20 n=1000
sdeflow-sample checkpoint=... labels=[3,7] guidance.w=2   # a class-conditional model, classifier-free guided
sdeflow-sample checkpoint=... guidance=autoguidance guidance.checkpoint=weak/checkpoint.pt guidance.w=1
sdeflow-sample checkpoint=... inverse=replacement operator=inpainting_box n=16   # fill the right half of training data
sdeflow-sample checkpoint=... inverse=dps_normalised operator=inpainting operator.mask=mask.png \
    observation.images=x.png solver=ddim
torchrun --nproc_per_node=2 -m sdeflow.apps.sample checkpoint=... n=50000   # each rank its share; rank 0 writes them
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from sdeflow.apps.common import build, check_settings, console_app, job_name, run_dir, write_results
from sdeflow.apps.observe import inverse_task
from sdeflow.apps.solvers import build_solvers
from sdeflow.apps.tracking import Tracker
from sdeflow.apps.viz import save_samples_png
from sdeflow.core import distributed
from sdeflow.core.io import NonFiniteResult, atomic_write_bytes
from sdeflow.hub.trained import load_trained
from sdeflow.samplers.generate import generate
from sdeflow.score.compiled import compile_score
from sdeflow.tuning.autotune import describe, file_digest, for_model


def run(cfg: DictConfig) -> list[dict]:
    check_settings(cfg, n="count", nfe="count", batch_size="count", seed="index", use_ema="flag", progress="flag")
    out = run_dir()
    device = distributed.device(cfg.device)
    model = build(cfg.checkpoint_format, "checkpoint_format").load(cfg.checkpoint, cfg.use_ema, device)
    score, sde = compile_score(model.score, cfg.get("compile")), model.sde
    shape, centered = model.shape, model.centered
    grid = instantiate(cfg.timesteps)
    label_dim = model.label_dim
    labels = class_labels(cfg, label_dim)
    guide = build(cfg.guidance, "guidance")
    guide.prepare(model, lambda path, use_ema: load_trained(path, use_ema, device))  # autoguidance's weak model
    task = inverse_task(cfg, model)
    observed = None if task is None else task.observed(cfg.n)
    tracker = Tracker(dir=str(out), config=OmegaConf.to_container(cfg, resolve=True), name=job_name(), **cfg.logger)
    rows = []
    # Every solver is built before any samples are drawn, so a bad one is refused at the door.
    solvers = build_solvers(cfg)
    if observed is not None:
        for solver in solvers.values():  # the method must take each solver (RePaint takes one-step solvers only)
            observed.bind(score, sde, solver, 0, 1)
    # A tuned grid (timesteps=auto) follows what the samples follow, labels and guidance included, and is cached
    # under all of it.
    model_id = f"{file_digest(cfg.checkpoint)}:ema={bool(cfg.use_ema)}:labels={labels}:guidance={guide!r}"

    def pilot_condition(pilot_score, rows):  # pilot draw i has the label sample i would have
        if labels is None:
            return guide.bind(pilot_score, None)
        return guide.bind(
            pilot_score, torch.as_tensor(labels, dtype=torch.int64)[torch.arange(rows.start, rows.stop) % len(labels)]
        )

    for name, solver in solvers.items():
        solver, solver_grid, wrap, tuning = for_model(
            grid,
            score,
            sde,
            solver,
            cfg.nfe,
            shape,
            Path(cfg.checkpoint).parent / "tuned_grids",
            model_id,
            device=device,
            progress=cfg.progress,
            condition=pilot_condition,
        )
        if tuning is not None:
            print(describe(name, tuning))
        start = time.perf_counter()
        gen = generate(
            score,
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
            labels=labels,
            guidance=Wrapped(guide, wrap),
            inverse=observed,
        )
        x, nfe = distributed.gather_rows(gen.samples), gen.nfe
        seconds = time.perf_counter() - start
        if x is None:  # not rank 0: rank 0 writes the files
            continue
        if not bool(torch.isfinite(x).all()):
            raise NonFiniteResult(f"{name}: the samples hold NaN or infinity; nothing is written")
        arrays, row = (
            {"samples": x.numpy(), "nfe": nfe, "forwards": gen.forwards, "backwards": gen.backwards, "seed": cfg.seed},
            {},
        )
        if task is not None:
            observations, originals = task.whole_run(len(x))
            arrays.update(observations=observations.numpy(), originals=originals.numpy())
            row = {
                "inverse": repr(task.method),
                "operator": repr(task.operator),
                "noise_std": task.noise_std,
                **task.scores(x, centered),
            }
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        atomic_write_bytes(out / f"samples_{name}.npz", buf.getvalue())
        title = f"{name}, NFE {nfe}" + (f", {gen.backwards} backward passes" if gen.backwards else "")
        if task is None:
            png = save_samples_png(x[: min(len(x), 100)], out / f"samples_{name}.png", centered=centered, title=title)
        else:
            png = save_inverse_png(task, x, out / f"samples_{name}.png", centered, title)
        tracker.log_image(f"samples/{name}", png)
        rows.append(
            {
                "solver": name,
                "nfe": nfe,
                "forwards": gen.forwards,
                "backwards": gen.backwards,
                "n": cfg.n,
                "seconds": seconds,
                "png": str(png),
                "npz": str(out / f"samples_{name}.npz"),
                "labels": None if labels is None else list(labels),
                "guidance": repr(guide),
                "guidance_w": getattr(guide, "w", None),
                "grid": repr(solver_grid),
                "grid_tuning": tuning,
                **row,
            }
        )
        scores = f", residual RMS {row['residual_rms']:.3g}, PSNR {row['psnr']:.1f} dB" if row else ""
        print(
            f"{name}: {cfg.n} samples, NFE {nfe} ({gen.forwards} forwards, {gen.backwards} backwards){scores}, "
            f"{seconds:.1f} s -> {png}"
        )
    write_results(out, cfg, rows=rows, checkpoint=str(cfg.checkpoint), model=model.record())
    tracker.finish()
    return rows


@dataclass
class Wrapped:
    """The run's guidance method, each bound score then wrapped as a tuned grid asks (its learned evaluation times)."""

    guidance: object
    wrap: Callable

    def bind(self, score, labels):
        return self.wrap(self.guidance.bind(score, labels))


def save_inverse_png(task, x, path, centered: bool, title: str):
    """Three rows of up to 12 images: observed (shown as A^+ y), sampled, original."""
    k = min(len(x), 12)
    observations, originals = (v[:k].to(x.dtype) for v in task.whole_run(len(x)))
    shown = torch.cat([task.operator.pinv(observations), x[:k], originals])
    return save_samples_png(shown, path, centered=centered, title=f"rows: observed, sampled, original. {title}", cols=k)


def class_labels(cfg: DictConfig, label_dim: int) -> list[int] | None:
    """The labels cycled over the samples of a class-conditional model (None for an unconditional one); refused at the
    door when labels and model disagree."""
    wanted = cfg.get("labels")
    if not label_dim:
        if wanted is not None:
            raise ValueError(f"labels={wanted} given, but the checkpoint's model is unconditional (label_dim=0)")
        return None
    if wanted is None:
        raise ValueError(
            f"the checkpoint's model is class-conditional (label_dim={label_dim}): give labels=[...] (classes "
            f"0..{label_dim - 1}, cycled over the samples) or labels=all"
        )
    labels = list(range(label_dim)) if wanted == "all" else ([wanted] if isinstance(wanted, int) else list(wanted))
    if not labels or any(not isinstance(v, int) or not 0 <= v < label_dim for v in labels):
        raise ValueError(f"labels must be classes in 0..{label_dim - 1} (or all), got {wanted}")
    return labels


main = console_app("sample", "sdeflow-sample", run)


if __name__ == "__main__":
    main()
