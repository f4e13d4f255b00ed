"""Training throughput: sdeflow's Trainer against a minimal hand-written loop, same run (benchmarks/README.md, section 3).

Same network (the tiny NCSN++ of conf/model/ncsnpp_tiny.yaml on digits), batch, Adam and DSM loss;
the two loops alternate in rounds so that machine noise hits both; the ratio is of medians.

    python benchmarks/train_throughput.py [--rounds 5 --steps 30 --device cpu]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

import sdeflow as sf
from sdeflow.data import digits
from sdeflow.io import write_json
from sdeflow.losses import DSMLoss
from sdeflow.nets import NCSNpp
from sdeflow.trainer import Trainer

RESULTS = Path(__file__).resolve().parent / "results"


def make_net():
    return NCSNpp(in_channels=1, resolution=8, nf=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), dropout=0.0)


def hand_loop(net, data, batch, steps, device, sde, gen):
    """The minimal loop: batch, noise, eps-loss, backward, Adam step. No EMA, no clipping, no schedule."""
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        x0 = data.batch(batch, gen).to(device)
        t = (torch.rand(batch, generator=gen) * (1 - 1e-3) + 1e-3).to(device)
        z = torch.randn(x0.shape, generator=gen).to(device)
        alpha, sigma = sde.alpha(t)[:, None, None, None], sde.sigma(t)[:, None, None, None]
        loss = (net(alpha * x0 + sigma * z, t) - z).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sync()
    return steps / (time.perf_counter() - start)


def ours(trainer, steps, device):
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    sync()
    return steps / (time.perf_counter() - start)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=RESULTS / "train_throughput.json")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    sde, data = sf.VPSDE(), digits()
    torch.manual_seed(0)
    net_a, net_b = make_net().to(device), make_net().to(device)
    trainer = Trainer(net_a, DSMLoss(sde, prediction=sf.EpsPrediction()), data, steps=10**9, batch_size=args.batch, lr=2e-3,
                      warmup=100, grad_clip=1.0, ema_decay=0.999, device=args.device)
    gen = torch.Generator().manual_seed(0)
    hand_loop(net_b, data, args.batch, 5, device, sde, gen)  # warm-up both
    ours(trainer, 5, device)
    ratios, ours_sps, hand_sps = [], [], []
    for _ in range(args.rounds):
        h = hand_loop(net_b, data, args.batch, args.steps, device, sde, gen)
        o = ours(trainer, args.steps, device)
        hand_sps.append(h)
        ours_sps.append(o)
        ratios.append(o / h)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    result = {"ratio_median": statistics.median(ratios), "ratios": ratios, "sdeflow_steps_per_s": statistics.median(ours_sps),
              "hand_steps_per_s": statistics.median(hand_sps), "batch": args.batch, "device": str(device), "peak_cuda_mib": peak,
              "machine": platform.platform(), "torch": torch.__version__, "command": " ".join(["python", *sys.argv])}
    write_json(args.out, result)
    print(f"sdeflow {result['sdeflow_steps_per_s']:.2f} steps/s, hand loop {result['hand_steps_per_s']:.2f} steps/s, "
          f"ratio {result['ratio_median']:.3f} (median of {args.rounds} rounds: {', '.join(f'{r:.3f}' for r in ratios)})")


if __name__ == "__main__":
    main()
