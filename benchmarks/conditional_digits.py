"""Class-conditional digits: the share of samples that a trained digits classifier assigns to the requested class.

Trains (or loads, with --checkpoint) a class-conditional tiny NCSN++ on scikit-learn's digits,
exactly as `sdeflow-train data=digits model=ncsnpp_tiny model.label_dim=10 loss.label_dropout=0.1`
does, then samples n per class with classifier-free guidance at each weight w and a solver at a
budget, and classifies the samples with `TrainedClassifier` (a small CNN trained on the training
split). Its accuracy on the held-out split is the ceiling; chance is 0.1.

    python benchmarks/conditional_digits.py                      # train 3000 steps (about 4 minutes on 2 cores)
    python benchmarks/conditional_digits.py --checkpoint PATH    # a checkpoint of sdeflow-train

Writes conditional_digits.{json,md} and conditional_digits_w<w>.png under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

import sdeflow as sf
from sdeflow.apps.viz import save_samples_png
from sdeflow.core.io import write_json
from sdeflow.eval.features import TrainedClassifier
from sdeflow.hub.trained import load_trained
from sdeflow.nets import NCSNpp
from sdeflow.noise.generators import INIT_WEIGHTS, stream_seed
from sdeflow.training.data import digits
from sdeflow.training.losses import DSMLoss
from sdeflow.training.trainer import Trainer

RESULTS = Path(__file__).resolve().parent / "results"


def train_model(steps: int, seed: int = 0):
    """A conditional tiny NCSN++ (the ncsnpp_tiny config with label_dim = 10) trained on the digits' training split."""
    sde = sf.VPSDE()
    train_set, _ = digits().split(0.8, seed=seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stream_seed(seed, INIT_WEIGHTS))
        net = NCSNpp(
            in_channels=1,
            resolution=8,
            nf=32,
            ch_mult=(1, 2),
            num_res_blocks=1,
            attn_resolutions=(4,),
            dropout=0.0,
            label_dim=10,
        )
    loss = DSMLoss(sde, sf.EpsPrediction(), label_dropout=0.1)
    trainer = Trainer(net, loss, train_set, steps=steps, batch_size=128, lr=2e-3, warmup=100, seed=seed)
    trainer.fit(progress=True)
    return sf.ScoreFunction(trainer.ema.model.eval(), sde, sf.EpsPrediction()), sde


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, default=None)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--w", type=float, nargs="+", default=[0.0, 1.0, 3.0])
    ap.add_argument("--nfe", type=int, default=20)
    ap.add_argument("--n", type=int, default=200, help="samples per class")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    start = time.perf_counter()
    loaded = load_trained(args.checkpoint) if args.checkpoint else None
    score, sde = (loaded.score, loaded.sde) if loaded else train_model(args.steps)
    train_set, held_out = digits().split(0.8, seed=0)
    classifier = TrainedClassifier().fit(train_set, held_out)
    rows, pictures = [], []
    labels = torch.arange(10).repeat_interleave(args.n)
    solver = sf.DPMSolverPP(2)
    for w in args.w:
        guided = sf.ClassifierFreeGuidance(w=w).bind(score, labels)
        out = sf.sample(guided, sde, solver, (len(labels), 1, 8, 8), nfe=args.nfe, grid=sf.LogSNRGrid(), seed=1)
        with torch.no_grad():
            pred = classifier.net(out.samples.clamp(-1, 1)).argmax(1)
        per_class = [(pred[labels == c] == c).double().mean().item() for c in range(10)]
        rows.append(
            {
                "w": w,
                "nfe": out.nfe,
                "forwards": out.forwards,
                "accuracy": float((pred == labels).double().mean()),
                "per_class": [round(a, 3) for a in per_class],
            }
        )
        # Ten samples of each class, class-major: on the 10 x 10 grid, row c shows class c.
        pictures.append((w, out.samples.reshape(10, args.n, 1, 8, 8)[:, :10].reshape(-1, 1, 8, 8)))
        print(rows[-1])
    args.out.mkdir(parents=True, exist_ok=True)
    for w, picture in pictures:
        save_samples_png(
            picture, args.out / f"conditional_digits_w{w:g}.png", centered=True, title=f"w = {w:g}: row c is class c"
        )
    result = {
        "command": " ".join(sys.argv),
        "trained_steps": None if args.checkpoint else args.steps,
        "solver": "DPMSolverPP(2)",
        "nfe": args.nfe,
        "n_per_class": args.n,
        "classifier_held_out_accuracy": classifier.accuracy,
        "chance": 0.1,
        "rows": rows,
        "seconds": time.perf_counter() - start,
    }
    write_json(args.out / "conditional_digits.json", result)
    lines = [
        "# Class-conditional digits: share of samples classified as the requested class",
        "",
        f"command: `python benchmarks/{Path(__file__).name} {' '.join(sys.argv[1:])}`",
        "",
        f"classifier (SmallCNN on the training split): held-out accuracy {classifier.accuracy:.3f} (the ceiling); "
        "chance 0.1. "
        f"DPM-Solver++(2M), {args.nfe} NFE, log-SNR grid, {args.n} samples per class; classifier-free guidance batched "
        "(one forward per evaluation).",
        "",
        "| w | accuracy | per class (0-9) |",
        "|---|---|---|",
    ]
    lines += [f"| {r['w']:g} | {r['accuracy']:.3f} | {r['per_class']} |" for r in rows]
    lines += ["", f"wall time {result['seconds']:.0f} s, torch {torch.__version__}"]
    (args.out / "conditional_digits.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
