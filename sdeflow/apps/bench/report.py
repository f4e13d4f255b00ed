"""Tables and plots of benchmark rows."""

from __future__ import annotations

import math
from pathlib import Path

COLUMNS = [
    "solver",
    "kind",
    "steps",
    "nfe",
    "backwards",
    "rms_median",
    "rms_p90",
    "sw2",
    "frechet",
    "fd",
    "kid",
    "precision",
    "recall",
    "seconds",
]


def _fmt(v) -> str:
    if v is None or v == "" or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.3e}" if v != 0 and (abs(v) < 1e-2 or abs(v) >= 1e4) else f"{v:.4f}"
    return str(v)


def markdown_table(rows: list[dict], columns=COLUMNS) -> str:
    """A markdown table of the rows that ran (skipped rows are left out), without columns no row fills."""
    rows = [r for r in rows if not r.get("skipped")]
    columns = [c for c in columns if any(r.get(c) not in (None, "") for r in rows)]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def plot(rows: list[dict], path, floor_sw2: float | None = None, title: str = "") -> Path:
    """Error against NFE on log-log axes: trajectory error (left), distribution error (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Panels by metric, not by kind: on an inverse problem deterministic rows are scored by distance too.
    panels = [
        ("rms_median", "median RMS error vs exact ODE solution"),
        ("sw2", "sliced W2 to exact samples"),
        ("fd", "Frechet distance in feature space"),
    ]
    panels = [p for p in panels if any(r.get(p[0]) not in (None, "") and not r.get("skipped") for r in rows)] or panels[
        :1
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(7.5 * len(panels), 5.5), squeeze=False)
    # Many solvers: distinct colours (tab20) and markers, so no two lines look alike.
    names = list(dict.fromkeys(r["solver"] for r in rows))
    style = {n: (plt.cm.tab20(i % 20), "osD^v<>ph*"[i % 10]) for i, n in enumerate(names)}
    for ax, (metric, label) in zip(axes[0], panels):
        ran = [r for r in rows if not r.get("skipped") and r.get(metric) not in (None, "")]
        floors = [r for r in ran if str(r["solver"]).startswith("floor")]
        ran = [r for r in ran if not str(r["solver"]).startswith("floor")]
        if floors:
            ax.axhline(
                sum(float(r[metric]) for r in floors) / len(floors),
                color="gray",
                linestyle=":",
                label=floors[0]["solver"],
            )
        for name in dict.fromkeys(r["solver"] for r in ran):
            pts = sorted((float(r["nfe"]), float(r[metric])) for r in ran if r["solver"] == name)
            color, marker = style[name]
            ax.plot(
                [p[0] for p in pts],
                [p[1] for p in pts],
                marker=marker,
                color=color,
                label=name,
                markersize=5,
                linestyle=r_style(name) if len(pts) > 1 else "none",
            )
        if metric == "sw2" and floor_sw2 is not None:
            ax.axhline(floor_sw2, color="gray", linestyle=":", label="floor (exact vs exact)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("NFE (counted)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        if ran:
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def r_style(name: str) -> str:
    """Peers (names starting with 'diffusers' or 'peer') are dashed."""
    return "--" if name.startswith(("diffusers", "peer")) else "-"
