"""`sdeflow-sample`: samples of a trained checkpoint with any solver; image grid, arrays and counted NFE.

    sdeflow-sample checkpoint=outputs/.../checkpoint.pt solver=unipc_2_bh2 nfe=10
    sdeflow-sample checkpoint=... solver=[ddim,dpmpp_2m,edm_heun] nfe=20 n=1000
"""

from __future__ import annotations

import io
import time

import hydra
import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from sdeflow.apps.common import exit_on_bad_input, job_name, load_trained, run_dir, versions
from sdeflow.io import atomic_write_bytes, write_json
from sdeflow.random import PerSampleNoise
from sdeflow.tracking import Tracker
from sdeflow.viz import save_samples_png


def generate(score, sde, solver, grid, n: int, shape, nfe: int | None, seed: int, batch_size: int, device="cpu", progress=True):
    """n samples in batches; sample i depends only on (seed, i). Returns (samples, total NFE per sample)."""
    steps = None if solver.nfe_per_step is None else solver.steps_for_nfe(nfe)
    ts = torch.tensor([sde.T, sde.eps], dtype=torch.float64) if steps is None else solver.timesteps(grid, sde, steps)
    chunks, nfe_counted = [], 0
    for start in tqdm(range(0, n, batch_size), desc=type(solver).__name__, disable=not progress, dynamic_ncols=True):
        b = min(batch_size, n - start)
        with torch.no_grad():
            x = sde.prior_sampling((b, *shape), PerSampleNoise(seed, b, start), device=device)
            out = solver.sample(score, sde, x, ts, generator=PerSampleNoise(seed + 1, b, start))
        chunks.append(out.samples.cpu())
        nfe_counted = max(nfe_counted, out.nfe)
    return torch.cat(chunks), nfe_counted


@hydra.main(version_base="1.3", config_path="pkg://sdeflow.conf", config_name="sample")
def main(cfg: DictConfig) -> None:
    exit_on_bad_input("sdeflow-sample", run, cfg)


def run(cfg: DictConfig) -> list[dict]:
    out = run_dir()
    score, sde, train_cfg = load_trained(cfg.checkpoint, cfg.use_ema, cfg.device)
    shape = tuple(train_cfg.data.shape)
    centered = bool(train_cfg.data.dataset.get("centered", True))
    grid = instantiate(cfg.timesteps)
    tracker = Tracker(dir=str(out), config=OmegaConf.to_container(cfg, resolve=True), name=job_name(), **cfg.logger)
    rows = []
    for name, node in cfg.solver.items():
        solver = instantiate(node)
        start = time.perf_counter()
        x, nfe = generate(score, sde, solver, grid, cfg.n, shape, cfg.nfe, cfg.seed, cfg.batch_size, cfg.device, cfg.progress)
        seconds = time.perf_counter() - start
        buf = io.BytesIO()
        np.savez_compressed(buf, samples=x.numpy(), nfe=nfe, seed=cfg.seed)
        atomic_write_bytes(out / f"samples_{name}.npz", buf.getvalue())
        png = save_samples_png(x[: min(len(x), 100)], out / f"samples_{name}.png", centered=centered, title=f"{name}, NFE {nfe}")
        tracker.log_image(f"samples/{name}", png)
        rows.append({"solver": name, "nfe": nfe, "n": cfg.n, "seconds": seconds, "png": str(png), "npz": str(out / f"samples_{name}.npz")})
        print(f"{name}: {cfg.n} samples, NFE {nfe}, {seconds:.1f} s -> {png}")
    write_json(out / "results.json", {"rows": rows, "checkpoint": str(cfg.checkpoint), "config": OmegaConf.to_container(cfg, resolve=True),
                                      "versions": versions()})
    tracker.finish()
    return rows


if __name__ == "__main__":
    main()
