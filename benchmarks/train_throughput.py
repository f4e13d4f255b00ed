"""Training throughput: sdeflow's Trainer against a bare loop doing equal work (benchmarks/README.md, section 3).

Equal work: the bare loop trains the same network on the same data with the same batch, DSM loss,
Adam (fused on a GPU), linear learning-rate warm-up, gradient-norm clipping and EMA, under the
same precision and memory format. What it leaves out is what the Trainer adds: per-sample noise
streams keyed by (seed, step, slot), seeded dropout, and the bookkeeping of a resumable run.

Both loops are warmed up, then timed in `--rounds` rounds whose order alternates (so a drift in the
machine's speed hits both alike). The figure is the median over rounds of the ratio of steps per
second (Trainer / bare loop), with its minimum and maximum; images per second are the Trainer's
median. Results are printed; `--out FILE` also writes them as JSON.

    python benchmarks/train_throughput.py                                  # tiny NCSN++ on digits, CPU
    python benchmarks/train_throughput.py --device cuda --model cifar --precision fp32 bf16 --channels-last --compile
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

import sdeflow as sf
from sdeflow.core.io import write_json
from sdeflow.nets import NCSNpp, SinusoidalEmbedding
from sdeflow.training.data import Dataset, digits
from sdeflow.training.losses import DSMLoss
from sdeflow.training.trainer import Trainer

MODELS = {
    # conf/model/ncsnpp_tiny.yaml on digits (8 x 8)
    "tiny": (
        lambda: NCSNpp(
            in_channels=1, resolution=8, nf=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), dropout=0.0
        ),
        lambda: digits(),
    ),
    # conf/model/ncsnpp_cifar10.yaml (Song et al.'s NCSN++), on random images of CIFAR-10's shape: nothing is downloaded
    "cifar": (lambda: NCSNpp(in_channels=3, resolution=32, dropout=0.1), lambda: _random_images()),
    # conf/model/ddpmpp_cifar10.yaml (DDPM++: no FIR resampling, sinusoidal time embedding)
    "ddpmpp": (
        lambda: NCSNpp(in_channels=3, resolution=32, dropout=0.1, fir=False, embedding=SinusoidalEmbedding(128)),
        lambda: _random_images(),
    ),
}


def _random_images():
    return Dataset(torch.rand(4096, 3, 32, 32, generator=torch.Generator().manual_seed(0)), name="random 3x32x32")


SETTINGS = dict(lr=2e-4, warmup=5000, grad_clip=1.0, ema_decay=0.9999)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


class BareLoop:
    """The same step as the Trainer's, written out: batch, times, noise, loss, backward, warm-up, clip, Adam, EMA."""

    def __init__(self, net, data, batch, sde, device, precision, seed=0, compile=False):
        self.net, self.data, self.batch, self.sde, self.device = net, data, batch, sde, device
        self.forward = torch.compile(net) if compile else net  # as the Trainer compiles it
        self.opt = torch.optim.Adam(net.parameters(), lr=SETTINGS["lr"], fused=device.type == "cuda")
        self.ema = [p.detach().clone() for p in net.parameters()]
        self.gen = torch.Generator().manual_seed(seed)
        self.autocast = (
            (lambda: torch.autocast(device.type, dtype=torch.bfloat16))
            if precision == "bf16"
            else contextlib.nullcontext
        )
        self.step = 0

    def train_step(self):
        x0 = self.data.batch(self.batch, self.gen).to(self.device, non_blocking=True)
        t = (torch.rand(self.batch, generator=self.gen, dtype=torch.float64) * (1 - 1e-3) + 1e-3).to(
            self.device, torch.float32
        )
        z = torch.randn(x0.shape, generator=self.gen).to(self.device, non_blocking=True)
        alpha, sigma = self.sde.alpha(t)[:, None, None, None], self.sde.sigma(t)[:, None, None, None]
        with self.autocast():
            loss = (self.forward(alpha * x0 + sigma * z, t).float() - z).pow(2).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        for group in self.opt.param_groups:
            group["lr"] = SETTINGS["lr"] * min(1.0, (self.step + 1) / SETTINGS["warmup"])
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), SETTINGS["grad_clip"])
        self.opt.step()
        d = min(SETTINGS["ema_decay"], (1 + self.step) / (10 + self.step))
        with torch.no_grad():
            torch._foreach_lerp_(self.ema, [p.detach() for p in self.net.parameters()], 1 - d)
        self.step += 1
        return loss.detach()


def steps_per_second(loop, steps, device) -> float:
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        loop.train_step()
    sync(device)
    return steps / (time.perf_counter() - start)


def compare(
    model: str,
    precision: str,
    channels_last: bool,
    batch: int,
    steps: int,
    rounds: int,
    warmup: int,
    device,
    compile: bool = False,
) -> dict:
    make_net, make_data = MODELS[model]
    data, sde = make_data(), sf.VPSDE()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    torch.manual_seed(0)
    ours = Trainer(
        make_net().to(memory_format=fmt),
        DSMLoss(sde, prediction=sf.EpsPrediction()),
        data,
        steps=10**9,
        batch_size=batch,
        precision=precision,
        device=str(device),
        compile=compile,
        **SETTINGS,
    )
    torch.manual_seed(0)
    bare = BareLoop(make_net().to(device, memory_format=fmt), data, batch, sde, device, precision, compile=compile)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for loop in (ours, bare):
        steps_per_second(loop, warmup, device)
    ratios, ours_sps, bare_sps = [], [], []
    for r in range(rounds):
        first, second = (ours, bare) if r % 2 == 0 else (bare, ours)
        a = steps_per_second(first, steps, device)
        b = steps_per_second(second, steps, device)
        o, h = (a, b) if first is ours else (b, a)
        ours_sps.append(o)
        bare_sps.append(h)
        ratios.append(o / h)
    return {
        "model": model,
        "precision": precision,
        "channels_last": channels_last,
        "compile": compile,
        "batch": batch,
        "steps": steps,
        "rounds": rounds,
        "ratio_median": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "sdeflow_images_per_s": batch * statistics.median(ours_sps),
        "bare_images_per_s": batch * statistics.median(bare_sps),
        "peak_cuda_mib": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None,
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", nargs="+", default=["tiny"], choices=list(MODELS))
    ap.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "bf16"])
    ap.add_argument(
        "--channels-last", action="store_true", help="also measure each setting in channels-last memory format"
    )
    ap.add_argument(
        "--compile", action="store_true", help="also measure each setting with torch.compile (both loops compiled)"
    )
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=None, help="also write the results as JSON here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = []
    for model in args.model:
        for precision in args.precision:
            for cl, comp in itertools.product(
                [False, True] if args.channels_last else [False], [False, True] if args.compile else [False]
            ):
                start = time.perf_counter()
                row = compare(model, precision, cl, args.batch, args.steps, args.rounds, args.warmup, device, comp)
                row["seconds"] = time.perf_counter() - start  # compilation included
                rows.append(row)
                if args.out is not None:  # after every row, so a run cut short keeps what it measured
                    write_json(args.out, result(rows, args))
                print(
                    f"{model:5s} {precision} {'channels-last' if cl else 'contiguous':13s} "
                    f"{'compiled' if comp else 'eager':8s} batch {args.batch}: sdeflow "
                    f"{row['sdeflow_images_per_s']:.0f} img/s, bare loop {row['bare_images_per_s']:.0f} img/s, ratio "
                    f"{row['ratio_median']:.3f} [{row['ratio_min']:.3f}, {row['ratio_max']:.3f}]",
                    flush=True,
                )
    if args.out is not None:
        print(f"wrote {args.out}")
    return result(rows, args)


def result(rows, args) -> dict:
    device = torch.device(args.device)
    return {
        "rows": rows,
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "machine": platform.platform(),
        "torch": torch.__version__,
        "command": " ".join(["python", *sys.argv]),
    }


if __name__ == "__main__":
    main()
