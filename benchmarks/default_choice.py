"""The default solver per budget (`solver=auto`), chosen from measurements on three problems.

Columns, each a committed measurement:
- the VE benchmark mixture (gmm16, sigma in [0.002, 80]), median RMS error against the exact PF-ODE,
  on the log-SNR grid and with `timesteps=auto` (`results/auto_grid/report.csv`);
- the VP benchmark mixture (`sdeflow-bench`'s default problem), log-SNR grid (`results/default_bench/results.csv`);
- the trained digits model (the default `sdeflow-train` checkpoint), Frechet distance in the digits
  classifier's features at n = 359, log-SNR grid and `timesteps=auto` (`results/default_choice/digits_*.json`,
  the `results.json` of these runs):

    sdeflow-eval checkpoint=CKPT solver=[deis_3,unipc_2_bh2,unipc_3_bh2,dpmpp_2m] timesteps=logsnr nfe=5    # and 10, 20
    sdeflow-eval checkpoint=CKPT solver=[deis_3,unipc_2_bh2,unipc_3_bh2] timesteps=auto nfe=5               # and 10

A solver's score at a budget is the geometric mean, over the columns, of its figure over the column's
best: 1 is best everywhere. The choice is the lowest score among the solvers measured in every column;
a budget between two measured ones takes the lower one's choice (`conf/solver/auto.yaml`, checked by
`tests/test_by_budget.py`).

    python benchmarks/default_choice.py      # writes results/default_choice.md
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from hydra import compose, initialize_config_module
from hydra.utils import instantiate

from sdeflow.core.io import read_csv

RESULTS = Path(__file__).resolve().parent / "results"
BUDGETS = (5, 10, 20, 50)


def columns() -> dict[str, dict[tuple[str, int], float]]:
    """column name -> {(solver, NFE): figure}, lower is better."""
    out = {
        "VE mixture, log-SNR": {},
        "VE mixture, auto": {},
        "VP mixture, log-SNR": {},
        "digits FD, log-SNR": {},
        "digits FD, auto": {},
    }
    for r in read_csv(RESULTS / "auto_grid" / "report.csv"):
        grid = {"timesteps=logsnr": "log-SNR", "timesteps=auto": "auto"}.get(r["label"])
        if grid and r["rms_median"]:
            out[f"VE mixture, {grid}"][r["solver"], int(r["budget"])] = float(r["rms_median"])
    for r in read_csv(RESULTS / "default_bench" / "results.csv"):
        if r["kind"] == "deterministic" and r["rms_median"] and r["budget"]:
            out["VP mixture, log-SNR"][r["solver"], int(float(r["budget"]))] = float(r["rms_median"])
    for path in sorted((RESULTS / "default_choice").glob("digits_*.json")):
        data = json.loads(path.read_text())
        grid = "auto" if data["config"]["timesteps"]["_target_"].endswith("AutoGrid") else "log-SNR"
        for r in data["rows"]:
            if r["kind"] == "eval":
                out[f"digits FD, {grid}"][r["solver"], int(r["nfe"])] = float(r["fd"])
    return out


def scores(cols, nfe: int) -> tuple[dict, dict, dict]:
    """(the columns measured at this budget, their best figures, solver -> (score, measured in every column))."""
    present = {name: col for name, col in cols.items() if any(n == nfe for _, n in col)}
    solvers = sorted({s for col in present.values() for s, n in col if n == nfe and "jump" not in s})
    best = {name: min(v for (s, n), v in col.items() if n == nfe and "jump" not in s) for name, col in present.items()}
    out = {}
    for s in solvers:
        ratios = [col[s, nfe] / best[name] for name, col in present.items() if (s, nfe) in col]
        out[s] = (math.exp(sum(math.log(r) for r in ratios) / len(ratios)), len(ratios) == len(present))
    return present, best, out


def pick(score: dict) -> str | None:
    """The solver with the lowest score among those measured in every column (None if none is)."""
    complete = [s for s, (_, full) in score.items() if full]
    return min(complete, key=lambda s: score[s][0]) if complete else None


def choices() -> dict[int, str]:
    """NFE -> the chosen solver (a `conf/solver` name), at every budget where one was measured in every column."""
    cols = columns()
    picked = {nfe: pick(scores(cols, nfe)[2]) for nfe in BUDGETS}
    return {nfe: s for nfe, s in picked.items() if s is not None}


def main() -> None:
    cols = columns()
    with initialize_config_module("sdeflow.conf", version_base="1.3"):
        auto = instantiate(compose("sample", overrides=["checkpoint=none"]).solver["auto"])
    lines = [
        "# The default solver per budget (`solver=auto`)",
        "",
        f"command: `python benchmarks/{Path(__file__).name}`",
        "",
        (__doc__ or "").split("\n\n")[1].strip(),
        "",
        "Score: the geometric mean over the columns of the figure over the column's best (1: best everywhere); "
        "solvers missing from a column are scored on the others and marked *.",
        "",
    ]
    for nfe in BUDGETS:
        present, best, score = scores(cols, nfe)
        lines += [
            f"## {nfe} NFE",
            "",
            "| solver | " + " | ".join(present) + " | score |",
            "|---" * (len(present) + 2) + "|",
        ]
        for s in sorted(score, key=lambda s: score[s][0]):
            cells = [
                (
                    "-"
                    if (s, nfe) not in col
                    else f"{col[s, nfe]:.3g}" + (" **best**" if col[s, nfe] == best[name] else "")
                )
                for name, col in present.items()
            ]
            lines.append(f"| {s} | " + " | ".join(cells) + f" | {score[s][0]:.2f}{'' if score[s][1] else ' *'} |")
        lines += ["", f"Chosen: **{pick(score)}**; `conf/solver/auto.yaml` runs {auto.choose(nfe)!r}.", ""]
    (RESULTS / "default_choice.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
