"""`sdeflow-sample`: samples of a trained checkpoint with any solver; image grid, arrays and counted NFE.

    sdeflow-sample checkpoint=outputs/.../checkpoint.pt solver=unipc_2_bh2 nfe=10
    sdeflow-sample checkpoint=... solver=[ddim,dpmpp_2m,edm_heun] nfe=20 n=1000
    torchrun --nproc_per_node=2 -m sdeflow.apps.sample checkpoint=... n=50000   # each rank its share; rank 0 writes them
"""

from __future__ import annotations

import io
import time

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from sdeflow import distributed
from sdeflow.apps.common import build, check_settings, console_app, job_name, run_dir, write_results
from sdeflow.checkpoint import load_trained
from sdeflow.generation import generate
from sdeflow.io import NonFiniteResult, atomic_write_bytes
from sdeflow.tracking import Tracker
from sdeflow.viz import save_samples_png


def run(cfg: DictConfig) -> list[dict]:
    check_settings(cfg, n="count", nfe="count", batch_size="count", seed="index", use_ema="flag", progress="flag")
    out = run_dir()
    device = distributed.device(cfg.device)
    score, sde, train_cfg = load_trained(cfg.checkpoint, cfg.use_ema, device)
    shape = tuple(train_cfg["data"]["shape"])
    centered = bool(train_cfg["data"].get("dataset", {}).get("centered", True))
    grid = instantiate(cfg.timesteps)
    tracker = Tracker(dir=str(out), config=OmegaConf.to_container(cfg, resolve=True), name=job_name(), **cfg.logger)
    rows = []
    # Every solver is built before any samples are drawn, so a bad one is refused at the door.
    solvers = {name: build(node, f"solver.{name}") for name, node in cfg.solver.items()}
    for name, solver in solvers.items():
        start = time.perf_counter()
        gen = generate(score, sde, solver, grid, cfg.n, shape, cfg.nfe, cfg.seed, cfg.batch_size, device, cfg.progress,
                       brownian=bool(cfg.get("brownian", False)))
        x, nfe = distributed.gather_rows(gen.samples), gen.nfe
        seconds = time.perf_counter() - start
        if x is None:  # not rank 0: rank 0 writes the files
            continue
        if not bool(torch.isfinite(x).all()):
            raise NonFiniteResult(f"{name}: the samples hold NaN or infinity; nothing is written")
        buf = io.BytesIO()
        np.savez_compressed(buf, samples=x.numpy(), nfe=nfe, seed=cfg.seed)
        atomic_write_bytes(out / f"samples_{name}.npz", buf.getvalue())
        png = save_samples_png(x[: min(len(x), 100)], out / f"samples_{name}.png", centered=centered, title=f"{name}, NFE {nfe}")
        tracker.log_image(f"samples/{name}", png)
        rows.append({"solver": name, "nfe": nfe, "n": cfg.n, "seconds": seconds, "png": str(png), "npz": str(out / f"samples_{name}.npz")})
        print(f"{name}: {cfg.n} samples, NFE {nfe}, {seconds:.1f} s -> {png}")
    write_results(out, cfg, rows=rows, checkpoint=str(cfg.checkpoint))
    tracker.finish()
    return rows


main = console_app("sample", "sdeflow-sample", run)


if __name__ == "__main__":
    main()
