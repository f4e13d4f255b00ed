"""Sampling an imported diffusers UNet2DModel with sdeflow's solvers, against diffusers' own DDIM loop
(speed and agreement).

The network is a randomly initialised CIFAR-size UNet2DModel (the layout of DDPM's CIFAR-10 model,
35.7M parameters) saved as a diffusers folder and read back through `sdeflow.hub.load_diffusers`:
random weights measure speed, and nothing is downloaded. Every row runs 10 NFE on one batch; the
peer is diffusers' DDIMScheduler loop on the same network and the same starting noise, and the
table gives how far sdeflow's DDIM on the same timesteps ends from it.

    python benchmarks/hub_speed.py --device cuda --batch 256 --out benchmarks/results/hub_speed_cuda.json
    python benchmarks/hub_speed.py --tiny            # seconds on a CPU: a check that it runs
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import sdeflow as sf
from sdeflow.core.io import write_json
from sdeflow.hub import load_diffusers

# DDPM's CIFAR-10 UNet (Ho et al. 2020) in diffusers' terms; --tiny shrinks it.
CIFAR = dict(
    sample_size=32,
    in_channels=3,
    out_channels=3,
    block_out_channels=(128, 256, 256, 256),
    layers_per_block=2,
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    dropout=0.1,
    flip_sin_to_cos=False,
    freq_shift=1,
)
TINY = dict(CIFAR, sample_size=8, block_out_channels=(32, 32, 32, 32), norm_num_groups=8)

SOLVERS = {
    "ddim (training timesteps)": (lambda: sf.DDIM(), lambda: sf.LeadingTimesteps(offset=1)),
    "ddim (log-SNR)": (lambda: sf.DDIM(), lambda: sf.LogSNRGrid()),
    "dpmpp_2m (log-SNR)": (lambda: sf.DPMSolverPP(2), lambda: sf.LogSNRGrid()),
    "unipc_2_bh2 (log-SNR)": (lambda: sf.UniPC(2), lambda: sf.LogSNRGrid()),
    "edm_heun (Karras)": (lambda: sf.EDMHeun(), lambda: sf.KarrasGrid()),
    "euler_maruyama (uniform)": (lambda: sf.PCSampler(sf.EulerMaruyama()), lambda: sf.UniformGrid()),
}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, rounds):
    fn()  # warm-up
    walls = []
    for _ in range(rounds):
        sync(device)
        start = time.perf_counter()
        out = fn()
        sync(device)
        walls.append(time.perf_counter() - start)
    return out, statistics.median(walls), min(walls), max(walls)


def main(argv=None):
    import diffusers

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--nfe", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(**(TINY if args.tiny else CIFAR)).eval()
    with tempfile.TemporaryDirectory() as folder:
        unet.save_pretrained(folder, safe_serialization=True)
        diffusers.DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear").save_pretrained(folder)
        loaded = load_diffusers(folder, device=device)
    score, sde = loaded.score, loaded.sde
    unet = unet.to(device).requires_grad_(False)
    shape = (args.batch, *loaded.shape)
    x_T = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(device)
    params = sum(p.numel() for p in unet.parameters())

    @torch.no_grad()
    def peer():
        sched = diffusers.DDIMScheduler(
            num_train_timesteps=1000, beta_schedule="linear", steps_offset=1, set_alpha_to_one=False, clip_sample=False
        )
        sched.set_timesteps(args.nfe)
        x = x_T.clone()
        for t in sched.timesteps:
            x = sched.step(unet(x, t).sample, t, x).prev_sample
        return x

    reference, wall, lo, hi = timed(peer, device, args.rounds)
    rows = [
        {
            "sampler": "diffusers DDIMScheduler loop",
            "nfe": args.nfe,
            "wall_s": wall,
            "min_s": lo,
            "max_s": hi,
            "images_per_s": args.batch / wall,
        }
    ]
    for name, (solver, grid) in SOLVERS.items():
        s, g = solver(), grid()
        ts = s.plan(sde, g, nfe=args.nfe)
        noise = sf.PerSampleNoise(0, args.batch)
        out, wall, lo, hi = timed(lambda: s.sample(score, sde, x_T.clone(), ts, generator=noise), device, args.rounds)
        row = {
            "sampler": name,
            "nfe": out.nfe,
            "wall_s": wall,
            "min_s": lo,
            "max_s": hi,
            "images_per_s": args.batch / wall,
        }
        if name.startswith("ddim (training"):
            row["max_abs_diff_to_diffusers"] = (out.samples - reference).abs().max().item()
            row["reference_max_abs"] = reference.abs().max().item()
        rows.append(row)
    for r in rows:
        extra = (
            f"  |ours - diffusers| <= {r['max_abs_diff_to_diffusers']:.2e} "
            f"(max |diffusers| {r['reference_max_abs']:.3g})"
            if "max_abs_diff_to_diffusers" in r
            else ""
        )
        print(
            f"{r['sampler']:30s} NFE {r['nfe']:3d}  {r['wall_s'] * 1e3:8.1f} ms "
            f"[{r['min_s'] * 1e3:.1f}, {r['max_s'] * 1e3:.1f}]  "
            f"{r['images_per_s']:8.1f} img/s{extra}",
            flush=True,
        )
    result = {
        "rows": rows,
        "batch": args.batch,
        "parameters": params,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "command": " ".join(["python", *sys.argv]),
    }
    if args.out is not None:
        write_json(args.out, result)
        print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
