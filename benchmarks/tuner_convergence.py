"""The tuners' shipped settings: do their fits converge, what do they minimise, and do they pass the no-harm test?

Problem: the benchmark protocol's mixture (VE, sigma in [0.002, 80], d = 16, 8 components, exact
score, float64), drawn with seeds other than the benchmark's (1 and 2 by default), and the default
solver (`solver=auto`). For each shipped setting of conf/timesteps (`auto`, `learned`,
`learned_multistep`), built from its config as the apps build it, and each budget, the tuner fits on
its own pilot draws and checks the fit on as many held-out ones (`AutoGrid.tuned`). The table gives
the search's cost (solver runs, or L-BFGS iterations), whether it converged or stopped at its cap,
the acceptance test's verdict, and the fit's median and mean RMS error on 256 fresh draws against the
default grid's. `--runs-per-parameter` and `--lbfgs-maxiter` raise the caps, to see where fits
converge when no cap stops them (how the shipped caps were set).

A second table compares the search's objective: the mean of the per-sample errors (what the tuner
minimised before) against their mean log (what it minimises now), at 50 NFE, each with the old cap
of 400 solver runs: the mean lets a few hard draws decide, and the median can get worse.

    python benchmarks/tuner_convergence.py                      # the shipped settings
    python benchmarks/tuner_convergence.py --settings auto --nfe 10 --seeds 1

Writes tuner_convergence.{json,md} under benchmarks/results/ (or --out).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate

import sdeflow as sf
import sdeflow.tuning.grid_search as grid_search
from sdeflow.core.io import atomic_write_bytes, write_json
from sdeflow.eval.metrics import rms_error
from sdeflow.samplers.grids import default_grid

RESULTS = Path(__file__).resolve().parent / "results"
SETTINGS = ("auto", "learned", "learned_multistep")


def configured(setting: str, overrides=()):
    """The tuner and the default solver as the apps build them from conf/."""
    with initialize_config_module("sdeflow.conf", version_base="1.3"):
        cfg = compose("sample", overrides=["checkpoint=none", f"timesteps={setting}", *overrides])
    return instantiate(cfg.timesteps), instantiate(cfg.solver["auto"])


@contextlib.contextmanager
def objective_is_the_mean():
    """The search's objective as it was: the mean of the per-sample errors (`exp(mean_log)` is then the mean)."""
    shipped = grid_search.mean_log
    grid_search.mean_log = lambda errors: errors.mean().log()
    try:
        yield
    finally:
        grid_search.mean_log = shipped


def problem(seed: int):
    sde = sf.VESDE(0.002, 80.0, eps=0.0)
    gm = sf.GaussianMixture.random(dim=16, components=8, std_range=(0.05, 0.2), seed=seed)
    score = sf.ScoreFunction(gm.score_fn(sde), sde)
    x = sde.prior_sampling((256, 16), torch.Generator().manual_seed(1000 + seed), dtype=torch.float64)
    return sde, score, x, gm.ode_reference(sde, x)


def fresh_errors(solver, fit, score, sde, x, ref, nfe):
    """Per-sample RMS errors on the fresh draws: the default grid's, and the tuner's result's (whatever it kept)."""
    base = rms_error(solver.sample(score, sde, x, solver.plan(sde, default_grid(), nfe=nfe)).samples, ref)
    run = fit.sampler(solver)
    tuned = rms_error(run.sample(fit.wrap(score), sde, x, run.plan(sde, fit.grid, nfe=nfe)).samples, ref)
    return base, tuned


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=SETTINGS)
    ap.add_argument("--nfe", type=int, nargs="+", default=[5, 10, 20, 50])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2], help="mixture seeds (the benchmark's is 0)")
    ap.add_argument("--runs-per-parameter", type=int, default=None, help="raise the searches' cap (default: shipped)")
    ap.add_argument("--lbfgs-maxiter", type=int, default=None, help="raise the table fit's cap (default: shipped)")
    ap.add_argument("--objectives", action="store_true", help="also compare the mean and mean-log objectives")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (more only slow a shared CPU down)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--name", default="tuner_convergence")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.runs_per_parameter is not None:
        grid_search.RUNS_PER_PARAMETER = args.runs_per_parameter
    command = " ".join(["python benchmarks/tuner_convergence.py", *(sys.argv[1:] if argv is None else argv)])
    rows, objective_rows = [], []
    for seed in args.seeds:
        sde, score, x, ref = problem(seed)
        for setting in args.settings:
            overrides = [] if args.lbfgs_maxiter is None else [f"timesteps.maxiter={args.lbfgs_maxiter}"]
            tuner, solver = configured(setting, overrides if setting == "learned_multistep" else ())
            for nfe in args.nfe:
                start = time.perf_counter()
                fit, report = tuner.tuned(
                    score, sde, solver, nfe, (16,), None, f"gmm16:{seed}", dtype=torch.float64, progress=False
                )
                base, tuned = fresh_errors(solver, fit, score, sde, x, ref, nfe)
                row = {
                    "setting": setting,
                    "seed": seed,
                    "nfe": nfe,
                    "seconds": time.perf_counter() - start,
                    "runs": report.get("grid_search_evaluations", report["evaluations"]),
                    "iterations": report.get("iterations"),
                    "cap": report["cap"],
                    "converged": report["converged"],
                    "stopped": report["stopped"],
                    "verdict": report["verdict"],
                    "objective": report["objective"],
                    "held_out_median": [report["held_out_median_before"], report["held_out_median_after"]],
                    "held_out_mean": [report["held_out_mean_before"], report["held_out_mean_after"]],
                    "fresh_median": [float(base.median()), float(tuned.median())],
                    "fresh_mean": [float(base.mean()), float(tuned.mean())],
                }
                rows.append(row)
                print(
                    f"seed {seed} {setting:18s} nfe {nfe:2d} {row['seconds']:6.0f} s  runs {row['runs']:6d} "
                    f"it {row['iterations']}  {row['stopped']}  {row['verdict']}  fresh median "
                    f"{row['fresh_median'][0]:.2e} -> {row['fresh_median'][1]:.2e}, mean {row['fresh_mean'][0]:.2e} "
                    f"-> {row['fresh_mean'][1]:.2e}",
                    flush=True,
                )
                write(rows, objective_rows, args, command)
        if args.objectives:
            tuner, solver = configured("auto", ["timesteps.maxiter=400"])
            for name, context in (("mean", objective_is_the_mean), ("mean log", contextlib.nullcontext)):
                with context():
                    fit, report = tuner.tuned(
                        score, sde, solver, 50, (16,), None, f"gmm16:{seed}", dtype=torch.float64, progress=False
                    )
                base, tuned = fresh_errors(solver, fit, score, sde, x, ref, 50)
                objective_rows.append(
                    {
                        "seed": seed,
                        "objective": name,
                        "verdict": report["verdict"],
                        "held_out_median": [report["held_out_median_before"], report["held_out_median_after"]],
                        "held_out_mean": [report["held_out_mean_before"], report["held_out_mean_after"]],
                        "fresh_median": [float(base.median()), float(tuned.median())],
                        "fresh_mean": [float(base.mean()), float(tuned.mean())],
                    }
                )
                print(objective_rows[-1], flush=True)
                write(rows, objective_rows, args, command)
    return rows, objective_rows


def arrow(pair) -> str:
    return f"{pair[0]:.2e} -> {pair[1]:.2e}"


def write(rows, objective_rows, args, command):
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / f"{args.name}.json", {"command": command, "rows": rows, "objectives": objective_rows})
    lines = [
        f"Command: `{command}`. Mixture seeds {args.seeds} (the benchmark's is 0), VE over [0.002, 80], d = 16, the "
        "default solver (`solver=auto`); each tuner built from its conf/timesteps file. Fresh: 256 draws not used by "
        "the fit, median and mean RMS error against the exact solution, the default grid -> what the tuner returned.",
        "",
        "| setting | seed | NFE | solver runs | L-BFGS iterations | cap | stopped | acceptance | held-out median "
        "| held-out mean | fresh median | fresh mean | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['setting']} | {r['seed']} | {r['nfe']} | {r['runs']} | {r['iterations'] or '-'} | {r['cap']} | "
            f"{r['stopped']} | {r['verdict']} | {arrow(r['held_out_median'])} | {arrow(r['held_out_mean'])} | "
            f"{arrow(r['fresh_median'])} | {arrow(r['fresh_mean'])} | {r['seconds']:.0f} |"
        )
    if objective_rows:
        lines += [
            "",
            "The search's objective at 50 NFE (`timesteps=auto`, cap 400 solver runs):",
            "",
            "| seed | objective | acceptance | held-out median | held-out mean | fresh median | fresh mean |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in objective_rows:
            lines.append(
                f"| {r['seed']} | {r['objective']} | {r['verdict']} | {arrow(r['held_out_median'])} | "
                f"{arrow(r['held_out_mean'])} | {arrow(r['fresh_median'])} | {arrow(r['fresh_mean'])} |"
            )
    atomic_write_bytes(args.out / f"{args.name}.md", ("\n".join(lines) + "\n").encode())


if __name__ == "__main__":
    main()
