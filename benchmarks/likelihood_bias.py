"""Likelihood on Gaussian data, where the exact value is known (benchmarks/README.md, section 5).

Correlated Gaussian data in d = 64 (eigenvalues from 0.05 to 2), exact score, 256 samples of p_eps.
Reports the bias of the bits-per-dimension estimate (mean of estimate - exact over samples), its
per-sample standard deviation, NFE and wall time, against the number of probes and the tolerance.

    python benchmarks/likelihood_bias.py
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import torch

import sdeflow as sf
from sdeflow.core.io import write_csv
from sdeflow.eval import log_likelihood

RESULTS = Path(__file__).resolve().parent / "results"


def main():
    d, n = 64, 256
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64, generator=g))
    eig = torch.logspace(math.log10(0.05), math.log10(2.0), d, dtype=torch.float64)
    cov = q @ torch.diag(eig) @ q.T
    mean = torch.randn(d, dtype=torch.float64, generator=g) * 0.3
    rows = []
    for sde in (sf.VPSDE(), sf.SubVPSDE(), sf.VESDE()):

        def score(x, t, sde=sde):
            a, s = sde.alpha(t)[:, None], sde.sigma(t)[:, None]
            dev = (x - a * mean) @ q
            return -(dev / (eig[None] * a**2 + s**2)) @ q.T

        te = torch.tensor(sde.eps, dtype=torch.float64)
        a, s = sde.alpha(te), sde.sigma(te)
        marg = torch.distributions.MultivariateNormal(a * mean, a**2 * cov + s**2 * torch.eye(d, dtype=torch.float64))
        x = marg.sample((n,))
        exact = marg.log_prob(x)
        for tol in (1e-3, 1e-5):
            for probes in (1, 4, 16):
                for noise in ("rademacher", "gaussian"):
                    start = time.perf_counter()
                    lp, nfe = log_likelihood(
                        score,
                        sde,
                        x,
                        probes=probes,
                        noise=noise,
                        rtol=tol,
                        atol=tol,
                        generator=torch.Generator().manual_seed(1),
                    )
                    err_bpd = -(lp - exact) / (d * math.log(2))
                    rows.append(
                        {
                            "sde": type(sde).__name__,
                            "rtol=atol": tol,
                            "probes": probes,
                            "noise": noise,
                            "nfe": nfe,
                            "bias_bpd": float(err_bpd.mean()),
                            "std_bpd": float(err_bpd.std()),
                            "stderr_of_bias": float(err_bpd.std() / math.sqrt(n)),
                            "seconds": time.perf_counter() - start,
                        }
                    )
                    print(rows[-1])
    write_csv(RESULTS / "likelihood_bias.csv", rows)
    lines = [
        "# Likelihood bias on Gaussian data (d=64, 256 samples, exact score)",
        "",
        f"command: `python benchmarks/{Path(__file__).name} {' '.join(sys.argv[1:])}`",
        "",
        "| SDE | rtol=atol | probes | noise | NFE | bias (bpd) | per-sample std (bpd) | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['sde']} | {r['rtol=atol']:g} | {r['probes']} | {r['noise']} | {r['nfe']} | "
        f"{r['bias_bpd']:+.2e} ± {r['stderr_of_bias']:.1e} | "
        f"{r['std_bpd']:.2e} | {r['seconds']:.2f} |"
        for r in rows
    ]
    (RESULTS / "likelihood_bias.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
