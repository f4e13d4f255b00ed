"""Scaling of sharded sample generation from 1 to N processes (issue: scale out).

Each configuration starts `world` processes that join one process group through
`sdeflow.core.distributed.launch()` (gloo on the CPU; on a GPU machine the samples are gathered over gloo
too), draw their share of n samples with `sdeflow.samplers.generate.generate`, and gather them on rank 0.
The clock runs from a barrier before generation to the end of the gather, so process start-up and
imports are left out; each configuration is timed `--rounds` times and the median is reported.
Rank 0 also checks that the gathered samples equal the one-process samples bit for bit.

    efficiency(W) = time(1 process) / (W x time(W processes))

with the same threads per process. The one-process run with W threads is printed alongside: the
speed-up sharding gives over letting torch use the same cores inside one process.

    python benchmarks/sharded_sampling.py  # this machine: 1 and 2 processes, 1 thread each
    python benchmarks/sharded_sampling.py --device cuda --world 1 2 --n 8192 --batch 1024 \\
        --out benchmarks/results/sharded_sampling_gpu.json
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
from sdeflow.samplers.generate import generate

RESULTS = Path(__file__).resolve().parent / "results"


def make_score(device):
    """The tiny NCSN++ of conf/model/ncsnpp_tiny.yaml on 8x8 digits, random weights (timing does not depend on them)."""
    torch.manual_seed(0)
    net = NCSNpp(
        in_channels=1, resolution=8, nf=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), dropout=0.0
    )
    sde = sf.VPSDE()
    return sf.ScoreFunction(net.to(device).eval().requires_grad_(False), sde, sf.EpsPrediction()), sde


def worker(args, out_file):
    device = distributed.device(args.device)
    score, sde = make_score(device)
    times, samples = [], None
    for r in range(args.rounds + 1):  # round 0 warms up (allocator, kernels)
        distributed.barrier()
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        gen = generate(
            score,
            sde,
            sf.DPMSolverPP(order=2),
            args.n,
            (1, 8, 8),
            nfe=args.nfe,
            grid=sf.LogSNRGrid(),
            seed=0,
            batch_size=args.batch,
            device=device,
            progress=False,
        )
        samples = distributed.gather_rows(gen.samples)
        distributed.barrier()
        if r:
            times.append(time.perf_counter() - start)
    if distributed.is_main():
        torch.save({"times": times, "samples": samples}, out_file)


def run(world, args, tmp) -> dict:
    out_file = Path(tmp) / f"w{world}_t{args.threads}.pt"
    spawn(worker, world, args, out_file, threads=args.threads)
    return torch.load(out_file, weights_only=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--world", type=int, nargs="+", default=[1, 2], help="numbers of processes to time")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--n", type=int, default=1024, help="samples per run")
    p.add_argument("--batch", type=int, default=128, help="batch size (also the unit of sharding)")
    p.add_argument("--nfe", type=int, default=20)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=RESULTS / "sharded_sampling_cpu.json")
    args = p.parse_args()
    if 1 not in args.world:
        p.error("--world must include 1: efficiencies are relative to one process")
    rows, reference = [], None
    with tempfile.TemporaryDirectory() as tmp:
        for world in sorted(set(args.world)):
            got = run(world, args, tmp)
            if reference is None:
                reference = got
            t = statistics.median(got["times"])
            rows.append(
                {
                    "processes": world,
                    "threads_per_process": args.threads,
                    "seconds_median": t,
                    "seconds": got["times"],
                    "samples_per_s": args.n / t,
                    "identical_to_one_process": bool(torch.equal(got["samples"], reference["samples"])),
                }
            )
        t1 = rows[0]["seconds_median"]
        for row in rows:
            row["efficiency"] = t1 / (row["processes"] * row["seconds_median"])
        # One process using as many threads as the largest world has processes: the alternative to sharding.
        widest = max(args.world)
        if widest > 1 and args.device == "cpu":
            one = argparse.Namespace(**{**vars(args), "threads": widest * args.threads})
            t_threads = statistics.median(run(1, one, tmp)["times"])
            baseline = {
                "processes": 1,
                "threads_per_process": widest * args.threads,
                "seconds_median": t_threads,
                "samples_per_s": args.n / t_threads,
            }
        else:
            baseline = None
    result = {
        "rows": rows,
        "one_process_all_threads": baseline,
        "n": args.n,
        "batch": args.batch,
        "nfe": args.nfe,
        "solver": "DPMSolverPP(order=2)",
        "model": "NCSN++ tiny (conf/model/ncsnpp_tiny.yaml), 1x8x8",
        "device": args.device,
        "rounds": args.rounds,
        "cpu_count": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "machine": platform.platform(),
        "torch": torch.__version__,
        "command": " ".join(["python", *sys.argv]),
    }
    write_json(args.out, result)
    print(f"{args.n} samples, NFE {args.nfe}, batch {args.batch}, {args.device}; median of {args.rounds} rounds")
    print("| processes | threads each | seconds | samples/s | efficiency | same samples as 1 process |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['processes']} | {r['threads_per_process']} | {r['seconds_median']:.2f} | {r['samples_per_s']:.1f} | "
            f"{r['efficiency']:.3f} | {r['identical_to_one_process']} |"
        )
    if baseline:
        best = rows[-1]
        print(
            f"one process with {baseline['threads_per_process']} threads: {baseline['seconds_median']:.2f} s; "
            f"{best['processes']} processes are {baseline['seconds_median'] / best['seconds_median']:.2f}x faster"
        )
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
