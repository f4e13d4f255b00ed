"""Guided-solver error against guidance weight x NFE, on the exact classifier-free-guided probability-flow ODE.

Problem: a labelled Gaussian mixture (d = 16, 8 components, 4 classes of two components each), VP,
log-SNR grid; 256 prior draws, labels cycling over the classes; the truth is the guided ODE's
dopri8 solution (rtol = atol = 1e-10) with the exact guided score (1 + w) s(x | y) - w s(x).
Metric: median per-sample RMS error at eps. NFE counted (network forwards: one per evaluation, the
two branches batched).

    python benchmarks/guided_solvers.py

Writes guided_solvers.{csv,md} under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

import sdeflow as sf
from sdeflow.core.io import write_csv
from sdeflow.eval.metrics import rms_error
from sdeflow.problems import LabelledMixture

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--w", type=float, nargs="+", default=[0.0, 1.0, 3.0, 7.0])
    ap.add_argument("--nfe", type=int, nargs="+", default=[5, 10, 20, 50])
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    start = time.perf_counter()
    sde = sf.VPSDE()
    problem = LabelledMixture(sf.GaussianMixture.random(dim=16, components=8, seed=0), [0, 0, 1, 1, 2, 2, 3, 3])
    labels = torch.arange(args.n) % problem.classes
    x_T = sde.prior_sampling((args.n, 16), torch.Generator().manual_seed(0), dtype=torch.float64)
    base = sf.ScoreFunction(problem.model(sde), sde)
    solvers = {
        "ddim": sf.DDIM(),
        "dpmpp_2m": sf.DPMSolverPP(2),
        "dpmpp_3m": sf.DPMSolverPP(3),
        "unipc_2_bh2": sf.UniPC(2),
        "deis_3": sf.DEIS(3),
        "ipndm": sf.IPNDM(4),
        "edm_heun": sf.EDMHeun(),
    }
    rows = []
    for w in tqdm(args.w, desc="guidance weights"):
        ref = problem.guided_ode_reference(sde, x_T, labels, w)
        for name, solver in solvers.items():
            for nfe in args.nfe:
                score = sf.ClassifierFreeGuidance(w=w).bind(base, labels)
                try:
                    out = solver.sample(score, sde, x_T, solver.plan(sde, sf.LogSNRGrid(), nfe=nfe))
                except sf.BudgetError:
                    continue
                err = rms_error(out.samples, ref)
                rows.append(
                    {
                        "solver": name,
                        "w": w,
                        "budget": nfe,
                        "nfe": out.nfe,
                        "forwards": out.forwards,
                        "rms_median": float(err.median()),
                        "rms_p90": float(torch.quantile(err, 0.9)),
                    }
                )
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(args.out / "guided_solvers.csv", rows)
    lines = [
        "# Guided solvers: median RMS error against the exact guided PF-ODE (VP, labelled GMM d=16, 4 classes, n=256)",
        "",
        f"command: `python benchmarks/{Path(__file__).name} {' '.join(sys.argv[1:])}`",
        "",
        "Rows: solver; columns: guidance weight w (Ho & Salimans: (1 + w) s(x|y) - w s(x)) x NFE.",
        "",
    ]
    header = [f"w={w:g}, {n}" for w in args.w for n in args.nfe]
    lines += ["| solver | " + " | ".join(header) + " |", "|---|" + "---|" * len(header)]
    for name in solvers:
        cells = []
        for w in args.w:
            for n in args.nfe:
                r = next((r for r in rows if r["solver"] == name and r["w"] == w and r["budget"] == n), None)
                cells.append("-" if r is None else f"{r['rms_median']:.1e}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", f"wall time {time.perf_counter() - start:.0f} s, torch {torch.__version__}"]
    (args.out / "guided_solvers.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
