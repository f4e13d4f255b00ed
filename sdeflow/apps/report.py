"""`sdeflow-report <sweep dir>`: every job's results of a Hydra sweep as one table and one plot.

    sdeflow-bench -m solver=ddim,unipc_2_bh2 nfe=5,10,20 hydra.sweep.dir=sweeps/demo
    sdeflow-report sweeps/demo          # -> sweeps/demo/report.{csv,md,png}

Jobs that failed (no results file) are listed, and the others are kept.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from sdeflow.apps.bench.report import COLUMNS, markdown_table, plot
from sdeflow.core.io import atomic_write_bytes, read_csv, write_csv


def _number(v):
    try:
        f = float(v)
    except (TypeError, ValueError):
        return v
    return int(f) if f.is_integer() and "." not in str(v) and "e" not in str(v).lower() else f


def job_rows(job: Path) -> list[dict] | None:
    """A job's result rows: its results.csv, else its results.json (its "rows", or its plain top-level values,
    as sdeflow-train writes them); None when it left neither."""
    if (job / "results.csv").exists():
        return [{k: _number(v) for k, v in row.items()} for row in read_csv(job / "results.csv")]
    if not (job / "results.json").exists():
        return None
    try:
        data = json.loads((job / "results.json").read_text())
    except json.JSONDecodeError:
        return None
    if isinstance(data, dict) and isinstance(data.get("rows"), list):
        return [r for r in data["rows"] if isinstance(r, dict)]
    return (
        [{k: v for k, v in data.items() if isinstance(v, (int, float, str, bool)) or v is None}]
        if isinstance(data, dict)
        else None
    )


def job_floor(job: Path) -> list[dict]:
    """The benchmark's floor of two exact sample sets, as a row beside the job's solvers (none if it has none)."""
    try:
        floor = json.loads((job / "results.json").read_text()).get("floor")
    except (OSError, json.JSONDecodeError, AttributeError):
        return []
    if not isinstance(floor, dict) or not isinstance(floor.get("sw2"), (int, float)):
        return []
    return [{"solver": "floor (exact vs exact)", "sw2": floor["sw2"], "frechet": floor.get("frechet")}]


def collect(sweep: Path) -> tuple[list[dict], list[str]]:
    """(rows of every job's results with the job's overrides, job folders without results)."""
    rows, failed, found_jobs = [], [], {}
    for job in sorted(p.parent for p in sweep.rglob(".hydra/overrides.yaml")):
        job = job.parent
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text()) or []
        found = job_rows(job)
        if found is None:
            failed.append(str(job.relative_to(sweep)))
            continue
        found_jobs[job] = (overrides, found + job_floor(job))
    # What tells the jobs apart (the swept overrides), to label each job's curves.
    common = set.intersection(*(set(o) for o, _ in found_jobs.values())) if found_jobs else set()
    for job, (overrides, found) in found_jobs.items():
        label = " ".join(o for o in overrides if o not in common)
        rows += [
            {"job": str(job.relative_to(sweep)), "overrides": ",".join(overrides), "label": label, **row}
            for row in found
        ]
    return rows, failed


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="sdeflow-report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("sweep", type=Path, help="a Hydra sweep (or run) directory")
    args = ap.parse_args(argv)
    if not args.sweep.is_dir():
        sys.exit(f"sdeflow-report: {args.sweep} is not a directory")
    rows, failed = collect(args.sweep)
    if not rows:
        sys.exit(
            f"sdeflow-report: no job under {args.sweep} wrote results.csv or results.json"
            + (f" ({len(failed)} failed)" if failed else "")
        )
    write_csv(args.sweep / "report.csv", rows)
    solver_rows = any("solver" in r for r in rows)
    # Sampler results have the benchmark's columns; other jobs (training) show their own plain values.
    columns = ["job", *COLUMNS] if solver_rows else list(dict.fromkeys(k for r in rows for k in r if k != "overrides"))
    table = markdown_table(rows, columns)
    jobs = dict((r["job"], r["overrides"]) for r in rows)
    note = "\n\n" + "\n".join(f"- job {job}: {overrides or '(defaults)'}" for job, overrides in jobs.items()) + "\n"
    note += f"\nfailed jobs (no results): {', '.join(failed)}\n" if failed else ""
    atomic_write_bytes(args.sweep / "report.md", (table + note).encode())
    written = "report.md"
    if solver_rows:
        # One curve per solver and job: the swept settings name it (floors stay one line).
        def curve(r):
            return (
                f"{r['solver']} {r['label']}"
                if r["label"] and not str(r["solver"]).startswith("floor")
                else r["solver"]
            )

        curves = [{**r, "solver": curve(r)} for r in rows if "solver" in r]
        plot(
            curves,
            args.sweep / "report.png",
            title=f"sweep {args.sweep.name}: {len(rows)} rows from {len({r['job'] for r in rows})} jobs",
        )
        written += ", report.png"
    print(table + note + f"written {args.sweep / 'report.csv'}, {written}")
    return 0


if __name__ == "__main__":
    main()
