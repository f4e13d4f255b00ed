"""`sdeflow-bench`: every sampler on an exact-score problem, error against NFE, as table, CSV, JSON and PNG.

sdeflow-bench                                   # the default: VP, all samplers, NFE 5..100
sdeflow-bench sde=ve_edm timesteps=karras solver=[ode_euler,ode_rk4]
sdeflow-bench -m solver=ode_euler,ode_rk4 nfe=10,20
sdeflow-bench -m problem=guided_gmm problem.w=0,1,3,7 solver=[ddim,dpmpp_2m,unipc_2_bh2]   # guided solvers by w x NFE
sdeflow-bench problem=inpainting_gmm inverse=dps solver=[euler_maruyama,ddim]              # inverse methods by NFE
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from sdeflow.apps.bench import report, runner
from sdeflow.apps.common import build, check_settings, console_app, job_name, run_dir, versions
from sdeflow.apps.solvers import build_solvers
from sdeflow.apps.tracking import Tracker
from sdeflow.core import distributed
from sdeflow.core.io import write_csv, write_json

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _nfe_list(value) -> list[int]:
    items = list(value) if isinstance(value, (list, tuple, ListConfig)) else [value]
    if not items or any(not isinstance(n, int) or n < 1 for n in items):
        raise ValueError(f"nfe must be a positive integer or a list of them, got {value!r}")
    return items


def _check(cfg: DictConfig) -> None:
    check_settings(cfg, seed="index", progress="flag")
    if cfg.dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {cfg.dtype!r}")
    if not cfg.solver:
        raise ValueError("no solver selected: pick one or more from conf/solver, e.g. solver=ode_euler or solver=all")
    depth = cfg.get("brownian_depth", 16)
    if not isinstance(depth, int) or not 1 <= depth <= 29:
        raise ValueError(f"brownian_depth must be an integer in [1, 29], got {depth!r}")
    for key in ("n_trajectory", "n_distribution", "n_directions"):
        if not isinstance(cfg[key], int) or cfg[key] < 2:
            raise ValueError(f"{key} must be an integer >= 2, got {cfg[key]!r}")


def run_bench(cfg: DictConfig, out_dir: Path) -> list[dict]:
    """Run the benchmark that `cfg` describes and write results.csv, results.json, results.md, error_vs_nfe.png."""
    _check(cfg)
    nfe_list = _nfe_list(cfg.nfe)
    device = distributed.device(cfg.device)
    sde = instantiate(cfg.sde)
    problem = instantiate(cfg.problem)
    grid = instantiate(cfg.timesteps)
    solvers = build_solvers(cfg)
    inverse = build(cfg.inverse, "inverse") if cfg.get("inverse") is not None else None
    tracker = Tracker(dir=str(out_dir), config=OmegaConf.to_container(cfg, resolve=True), name=job_name(), **cfg.logger)
    start = time.perf_counter()
    rows, bench = runner.run(
        problem,
        sde,
        solvers,
        grid,
        nfe_list,
        cfg.n_trajectory,
        cfg.n_distribution,
        cfg.n_directions,
        cfg.seed,
        DTYPES[cfg.dtype],
        OmegaConf.to_container(cfg.reference),
        cfg.progress,
        on_row=lambda row: _on_row(row, out_dir, tracker),
        device=device,
        brownian_depth=cfg.get("brownian_depth", 16),
        inverse=inverse,
        grid_cache=out_dir / "tuned_grids",
    )
    wall = time.perf_counter() - start
    if all(row.get("skipped") for row in rows):
        tracker.finish()
        reasons = sorted({row["skipped"] for row in rows})
        raise ValueError(f"no solver ran at any budget, so there is no table: {'; '.join(reasons[:3])}")
    table = report.markdown_table(rows)
    floors = (
        f"floor (exact vs exact, n={cfg.n_distribution}): sliced W2 {bench.floor_sw2:.3e}, Frechet {bench.floor_fd:.3e}"
        if bench.exact is not None
        else "no exact samples: stochastic rows are not scored"
    )
    skipped = sorted({f"{r['solver']}: {r['skipped']}" for r in rows if r.get("skipped")})
    if skipped:
        floors += "\nskipped: " + "; ".join(skipped)
    method = f" | inverse {inverse!r}" if inverse is not None else ""
    print(f"\n{type(sde).__name__} | {problem!r}{method} | grid {grid!r}\n{table}\n{floors}\nwall time {wall:.1f} s")
    write_csv(out_dir / "results.csv", rows)
    (out_dir / "results.md").write_text(f"{table}\n\n{floors}\n")
    write_json(
        out_dir / "results.json",
        {
            "command": " ".join(sys.argv),
            "config": OmegaConf.to_container(cfg, resolve=True),
            "rows": rows,
            "floor": {"sw2": bench.floor_sw2, "frechet": bench.floor_fd} if bench.exact is not None else None,
            "wall_seconds": wall,
            "versions": versions(),
        },
    )
    png = report.plot(
        rows,
        out_dir / "error_vs_nfe.png",
        bench.floor_sw2 if bench.exact is not None else None,
        title=f"{type(sde).__name__}, {problem!r}, {grid!r}",
    )
    tracker.log_image("error_vs_nfe", png)
    tracker.finish()
    print(f"results in {out_dir}")
    return rows


def _on_row(row: dict, out_dir: Path, tracker: Tracker) -> None:
    # Rows are appended to a partial file as they come, so a killed run keeps what it measured.
    with open(out_dir / "results.partial.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    if not row.get("skipped"):
        tracker.log({f"{row['solver']}/{k}": v for k, v in row.items() if isinstance(v, (int, float))})


def bench(cfg: DictConfig) -> float | None:
    """One benchmark job: the table and files, and the objective a sweeper minimises (if one is set)."""
    return objective(run_bench(cfg, run_dir()), cfg.objective)


main = console_app("bench", "sdeflow-bench", bench)


def objective(rows: list[dict], column: str | None) -> float | None:
    """The mean of `column` over the rows that have it: what a sweeper such as Optuna minimises."""
    if column is None:
        return None
    values = [float(r[column]) for r in rows if r.get(column) not in (None, "")]
    if not values:
        raise SystemExit(
            f"sdeflow-bench: objective column {column!r} is in no result row; "
            f"columns are {sorted({k for r in rows for k in r})}"
        )
    return sum(values) / len(values)


if __name__ == "__main__":
    main()
