"""Data-parallel training throughput from 1 to N processes at a fixed global batch (issue: scale out).

The Trainer on the tiny NCSN++ of conf/model/ncsnpp_tiny.yaml and scikit-learn's digits, global
batch `--batch` split over the ranks (DistributedDataParallel over gloo on the CPU). Each
configuration is timed over `--steps` steps after a warm-up, `--rounds` times; medians reported.

    efficiency(W) = time per step(1 process) / (W x time per step(W processes))

    python benchmarks/ddp_training.py                       # this machine: 1 and 2 processes, 1 thread each
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from _spawn import spawn

import sdeflow as sf
from sdeflow.core import distributed
from sdeflow.core.io import write_json
from sdeflow.nets import NCSNpp
from sdeflow.training.data import digits
from sdeflow.training.losses import DSMLoss
from sdeflow.training.trainer import Trainer

RESULTS = Path(__file__).resolve().parent / "results"


def worker(args, out_file):
    torch.manual_seed(0)
    net = NCSNpp(
        in_channels=1, resolution=8, nf=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), dropout=0.0
    )
    trainer = Trainer(
        net,
        DSMLoss(sf.VPSDE(), prediction=sf.EpsPrediction()),
        digits(),
        steps=10**9,
        batch_size=args.batch,
        lr=2e-3,
        warmup=100,
        device=args.device,
    )
    sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
    times = []
    for r in range(args.rounds + 1):  # round 0 warms up
        distributed.barrier()
        sync()
        start = time.perf_counter()
        for _ in range(args.steps):
            trainer.train_step()
        sync()
        distributed.barrier()
        if r:
            times.append((time.perf_counter() - start) / args.steps)
    if distributed.is_main():
        torch.save({"seconds_per_step": times}, out_file)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--world", type=int, nargs="+", default=[1, 2])
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--batch", type=int, default=64, help="global batch size")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=RESULTS / "ddp_training_cpu.json")
    args = p.parse_args()
    if 1 not in args.world or any(args.batch % w for w in args.world):
        p.error("--world must include 1 and each world size must divide --batch")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for world in sorted(set(args.world)):
            out_file = Path(tmp) / f"w{world}.pt"
            spawn(worker, world, args, out_file, threads=args.threads)
            t = statistics.median(torch.load(out_file, weights_only=True)["seconds_per_step"])
            rows.append(
                {"processes": world, "threads_per_process": args.threads, "seconds_per_step": t, "steps_per_s": 1 / t}
            )
    for row in rows:
        row["efficiency"] = rows[0]["seconds_per_step"] / (row["processes"] * row["seconds_per_step"])
    result = {
        "rows": rows,
        "global_batch": args.batch,
        "steps": args.steps,
        "rounds": args.rounds,
        "device": args.device,
        "model": "NCSN++ tiny (conf/model/ncsnpp_tiny.yaml), digits 1x8x8",
        "cpu_count": os.cpu_count(),
        "machine": platform.platform(),
        "torch": torch.__version__,
        "command": " ".join(["python", *sys.argv]),
    }
    write_json(args.out, result)
    print(f"global batch {args.batch}, {args.device}; median of {args.rounds} rounds of {args.steps} steps")
    print("| processes | threads each | steps/s | efficiency |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['processes']} | {r['threads_per_process']} | {r['steps_per_s']:.2f} | {r['efficiency']:.3f} |")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
