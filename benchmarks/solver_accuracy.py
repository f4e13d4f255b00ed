"""Solver accuracy on an exact score, against diffusers in the same run (benchmarks/README.md, section 1).

Problem: Gaussian mixture, d = 16, 8 components, stds in [0.05, 0.2]; VE with sigma in [0.002, 80];
256 prior draws; metric: per-sample RMS error against the exact probability-flow solution at
sigma = 0.002 (dopri8, rtol = atol = 1e-10, checked against a 1e-8 solve). NFE counted.

    pip install -e ".[bench]" && python benchmarks/solver_accuracy.py
    python benchmarks/solver_accuracy.py --stochastic

Writes solver_accuracy.{csv,json,md,png} and the optimised grids under benchmarks/results/. With
--stochastic it instead runs the stochastic samplers against their diffusers peers (equal NFE, the
same Karras grid), scored by sliced W2 and Frechet distance to exact samples, beside the floor of two
exact sets, and writes solver_accuracy_stochastic.{csv,md}.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
import warnings
from pathlib import Path

import torch
from tqdm.auto import tqdm

import sdeflow as sf
from sdeflow.apps.bench.report import plot
from sdeflow.core.io import write_csv, write_json
from sdeflow.eval.metrics import rms_error
from sdeflow.noise.brownian import brownian_span

RESULTS = Path(__file__).resolve().parent / "results"


def peers():
    """diffusers schedulers sharing an algorithm with ours, on our Karras grid (rho = 7):
    name -> (ours, make, runner)."""
    from diffusers import (
        DEISMultistepScheduler,
        EDMDPMSolverMultistepScheduler,
        EDMEulerScheduler,
        HeunDiscreteScheduler,
        LMSDiscreteScheduler,
        SASolverScheduler,
        UniPCMultistepScheduler,
    )

    common = dict(sigma_min=0.002, sigma_max=80.0, sigma_data=0.5, final_sigmas_type="zero")
    return {
        "diffusers EDMEuler (= DDIM)": ("ddim", lambda: EDMEulerScheduler(**common), run_edm_peer),
        "diffusers EDM DPM++2M": (
            "dpmpp_2m",
            lambda: EDMDPMSolverMultistepScheduler(solver_order=2, **common),
            run_edm_peer,
        ),
        # diffusers' 3M is second order (its D2 is half the Taylor term's): our reference_3m is its algorithm.
        "diffusers EDM DPM++3M": (
            "dpmpp_3m_reference",
            lambda: EDMDPMSolverMultistepScheduler(solver_order=3, **common),
            run_edm_peer,
        ),
        "diffusers UniPC-2 bh2": (
            "unipc_2_bh2",
            lambda: UniPCMultistepScheduler(solver_order=2, solver_type="bh2", final_sigmas_type="zero"),
            run_vp_scaled_peer,
        ),
        "diffusers LMS (order 4)": ("lms", LMSDiscreteScheduler, run_ve_scaled_peer),
        "diffusers Heun": ("edm_heun", HeunDiscreteScheduler, run_heun_peer),
        # diffusers' DEIS is the log-rho variant (a polynomial in lambda); ours is tAB (a polynomial in t).
        "diffusers DEIS-3 (log-rho)": ("deis_3", lambda: DEISMultistepScheduler(solver_order=3), run_vp_scaled_peer),
        "diffusers SA-Solver 3/3, tau = 0": (
            "sa_solver_3_3_ode",
            lambda: SASolverScheduler(predictor_order=3, corrector_order=3, tau_func=lambda t: 0),
            run_vp_scaled_peer,
        ),
    }


def stochastic_peers():
    """diffusers' stochastic schedulers and ours: name -> (ours, make(seed), runner)."""
    from diffusers import DPMSolverSDEScheduler, EulerAncestralDiscreteScheduler, SASolverScheduler

    return {
        "diffusers EulerAncestral": (
            "euler_ancestral",
            lambda seed: EulerAncestralDiscreteScheduler(),
            run_ve_scaled_stochastic_peer,
        ),
        "diffusers DPMSolverSDE (BrownianTree)": (
            "dpmpp_sde",
            lambda seed: DPMSolverSDEScheduler(noise_sampler_seed=seed),
            run_dpmsolver_sde_peer,
        ),
        "diffusers SA-Solver 3/3, tau = 1": (
            "sa_solver",
            lambda seed: SASolverScheduler(predictor_order=3, corrector_order=3, tau_func=lambda t: 1),
            run_vp_scaled_stochastic_peer,
        ),
    }


def run_ve_scaled_stochastic_peer(make, nfe, score, sde, x_T, seed):
    """A k-diffusion-style stochastic scheduler (samples in sigma space) on our sigmas, its noise from a seeded
    generator."""
    sched, g = make(seed), torch.Generator().manual_seed(seed)
    sched.set_timesteps(nfe + 1)
    s = _override_sigmas(sched, _karras_sigmas(sde, nfe))
    x = x_T.clone()
    for i, t in enumerate(sched.timesteps[:nfe]):
        x = sched.step(score.eps(x, _t(sde, s[i])), t, x, generator=g).prev_sample.to(torch.float64)
    return x


def run_vp_scaled_stochastic_peer(make, nfe, score, sde, x_T, seed):
    """A stochastic multistep scheduler in VP scaling x / sqrt(1 + sigma^2), on our sigmas."""
    sched, g = make(seed), torch.Generator().manual_seed(seed)
    sched.set_timesteps(nfe + 1)
    s = _override_sigmas(sched, _karras_sigmas(sde, nfe))
    x = x_T / torch.sqrt(1 + s[0] ** 2)
    for i, t in enumerate(sched.timesteps[:nfe]):
        eps = score.eps(x * torch.sqrt(1 + s[i] ** 2), _t(sde, s[i]))
        x = sched.step(eps, t, x, generator=g).prev_sample.to(torch.float64)
    return x * torch.sqrt(1 + s[nfe] ** 2)


def run_dpmsolver_sde_peer(make, nfe, score, sde, x_T, seed):
    """k-diffusion's DPM++ SDE as diffusers runs it: two stages a step, sigmas interleaved like Heun's, torchsde
    noise."""
    steps = nfe // 2
    sched = make(seed)
    sched.set_timesteps(steps + 1)
    sig = _karras_sigmas(sde, steps)
    sched.sigmas = torch.cat([sig[:1], sig[1:].repeat_interleave(2), torch.zeros(1, dtype=sig.dtype)]).to(
        sched.sigmas.dtype
    )
    x = x_T.clone()
    for t in sched.timesteps[: 2 * steps]:
        first = sched.sample is None  # the scheduler's own flag: the next call is a step's first stage
        s = sched.sigmas[sched.step_index if sched.step_index is not None else 0] if first else sched.mid_point_sigma
        x = sched.step(score.eps(x, _t(sde, s.to(torch.float64))), t, x).prev_sample.to(torch.float64)
    return x


def _t(sde, sig):
    return sde.t_from_lambda(-torch.log(torch.as_tensor(sig, dtype=torch.float64))).clamp(0, sde.T)


def _karras_sigmas(sde, steps):
    return torch.exp(-sde.lambda_(sf.KarrasGrid(7.0)(sde, steps)))


def run_edm_peer(make, nfe, score, sde, x_T):
    """`nfe` steps of an EDM-space scheduler from sigma_max to sigma_min, stopping before its final step to 0.

    Asked for nfe + 1 steps, the scheduler's first nfe steps span [0.002, 80] on the Karras grid and its
    last one jumps to sigma = 0; stopping before it compares like with like at sigma = 0.002.
    """
    sched = make()
    sched.set_timesteps(nfe + 1)
    sd = sched.config.sigma_data
    x = x_T.clone()
    for i, t in enumerate(sched.timesteps[:nfe]):
        sig = sched.sigmas[i].to(torch.float64)
        x0 = score.x0(x, _t(sde, sig))
        # The scheduler forms D(x) = c_skip x + c_out F; hand it the F that makes D our exact x0.
        c_skip, c_out = sd**2 / (sig**2 + sd**2), sig * sd / (sig**2 + sd**2).sqrt()
        x = sched.step((x0 - c_skip * x) / c_out, t, x).prev_sample.to(torch.float64)
    return x


def _override_sigmas(sched, sigmas):
    # diffusers derives sigmas from a discrete VP schedule; put ours (VE, [0.002, 80]) in their place.
    new = sched.sigmas.clone().to(torch.float64)
    new[: len(sigmas)] = sigmas
    sched.sigmas = new.to(sched.sigmas.dtype)
    return new


def run_vp_scaled_peer(make, nfe, score, sde, x_T):
    """A multistep scheduler that keeps samples in VP scaling x / sqrt(1 + sigma^2), on our sigmas."""
    sched = make()
    sched.set_timesteps(nfe + 1)
    s = _override_sigmas(sched, _karras_sigmas(sde, nfe))
    x = x_T / torch.sqrt(1 + s[0] ** 2)
    for i, t in enumerate(sched.timesteps[:nfe]):
        eps = score.eps(x * torch.sqrt(1 + s[i] ** 2), _t(sde, s[i]))
        x = sched.step(eps, t, x).prev_sample.to(torch.float64)
    return x * torch.sqrt(1 + s[nfe] ** 2)


def run_ve_scaled_peer(make, nfe, score, sde, x_T):
    """A k-diffusion-style scheduler (samples in sigma space) on our sigmas."""
    sched = make()
    sched.set_timesteps(nfe + 1)
    s = _override_sigmas(sched, _karras_sigmas(sde, nfe))
    x = x_T.clone()
    for i, t in enumerate(sched.timesteps[:nfe]):
        x = sched.step(score.eps(x, _t(sde, s[i])), t, x, order=4).prev_sample.to(torch.float64)
    return x


def run_heun_peer(make, nfe, score, sde, x_T):
    """Heun: two evaluations a step over nfe // 2 steps; its sigmas come interleaved (s0, s1, s1, s2, s2, ..., 0)."""
    steps = nfe // 2
    sched = make()
    sched.set_timesteps(steps + 1)
    sig = _karras_sigmas(sde, steps)
    sched.sigmas = torch.cat([sig[:1], sig[1:].repeat_interleave(2), torch.zeros(1, dtype=sig.dtype)]).to(
        sched.sigmas.dtype
    )
    x = x_T.clone()
    for t in sched.timesteps[: 2 * steps]:
        s = sched.sigmas[sched.step_index if sched.step_index is not None else 0].to(torch.float64)
        x = sched.step(score.eps(x, _t(sde, s)), t, x).prev_sample.to(torch.float64)
    return x


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nfe", type=int, nargs="+", default=[5, 6, 8, 10, 15, 20, 50, 100])
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--optimize-up-to", type=int, default=20, help="optimise grids for budgets up to this NFE")
    ap.add_argument("--maxiter", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument(
        "--peers-only",
        action="store_true",
        help="reuse the sdeflow rows of an earlier run's CSV (running only solvers it lacks); rerun the peers",
    )
    ap.add_argument(
        "--frontier",
        action="store_true",
        help="reuse every row of an earlier run's CSV and run only the frontier rows (the default solver=auto out of "
        "the box, with timesteps=auto, and with timesteps=learned_multistep)",
    )
    ap.add_argument(
        "--frontier-nfe",
        type=int,
        nargs="*",
        default=[5, 10, 20, 50],
        help="budgets of the frontier rows to run (none: rewrite the results from the CSV's rows)",
    )
    ap.add_argument(
        "--frontier-settings",
        nargs="+",
        default=list(FRONTIER),
        choices=list(FRONTIER),
        help="which frontier rows to run (the others are kept from the CSV)",
    )
    ap.add_argument(
        "--learned-pilot", type=int, default=256, help="pilot draws of the learned multistep fit (as many held out)"
    )
    ap.add_argument("--learned-maxiter", type=int, default=12000, help="L-BFGS iterations of the learned multistep fit")
    ap.add_argument(
        "--learned-history", type=int, default=20, help="data predictions each learned step weighs (at most)"
    )
    ap.add_argument(
        "--stochastic", action="store_true", help="run the stochastic samplers against their diffusers peers instead"
    )
    ap.add_argument("--n-stochastic", type=int, default=10_000, help="samples per stochastic row")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore", message=".*scale_model_input.*")
    if args.stochastic:
        return stochastic_main(args)
    start = time.perf_counter()

    sde = sf.VESDE(sigma_min=0.002, sigma_max=80.0, eps=0.0)
    gm = sf.GaussianMixture.random(dim=16, components=8, std_range=(0.05, 0.2), seed=0)
    score = sf.ScoreFunction(gm.score_fn(sde), sde)
    x_T = sde.prior_sampling((args.n, 16), torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = gm.ode_reference(sde, x_T)
    ref_check = float(rms_error(gm.ode_reference(sde, x_T, rtol=1e-8, atol=1e-8), ref).max())
    pilot = sde.prior_sampling((128, 16), torch.Generator().manual_seed(1), dtype=torch.float64)
    pilot_ref = gm.ode_reference(sde, pilot)
    stats = sf.GaussianStats.from_distribution(gm)

    solvers = {
        "ddim": sf.DDIM(),
        "dpm_solver_2": sf.DPMSolver(2),
        "dpm_solver_3": sf.DPMSolver(3),
        "dpmpp_2m": sf.DPMSolverPP(2),
        "dpmpp_3m": sf.DPMSolverPP(3),
        "dpmpp_3m_reference": sf.DPMSolverPP(3, reference_3m=True),
        "unipc_2_bh1": sf.UniPC(2, "bh1"),
        "unipc_2_bh2": sf.UniPC(2, "bh2"),
        "unipc_3_bh2": sf.UniPC(3, "bh2"),
        "edm_heun": sf.EDMHeun(),
        "ipndm": sf.IPNDM(4),
        "lms": sf.LMS(4),
        "deis_3": sf.DEIS(3),
        "sa_solver_3_3_ode": sf.SASolver(3, 3, tau=0.0),
        "er_sde_3_ode": sf.ERSDE(3, sf.ODEScaler()),
        "dpmpp_3m_sde_eta0": sf.DPMSolverPP3MSDE(eta=0.0),
        "dpmpp_2s": sf.DPMSolverPPSDESinglestep(eta=0.0),
    }
    grids = {"karras": sf.KarrasGrid(7.0), "logsnr": sf.LogSNRGrid()}
    jumps = {
        "unipc_2_bh2+jump": sf.AnalyticJump(sf.UniPC(2, "bh2"), stats, sigma_jump=3.0),
        "unipc_3_bh2+jump": sf.AnalyticJump(sf.UniPC(3, "bh2"), stats, sigma_jump=5.0),
    }
    optimised = {
        "unipc_2_bh2": solvers["unipc_2_bh2"],
        "unipc_2_bh2+jump": jumps["unipc_2_bh2+jump"],
        "unipc_3_bh2+jump": jumps["unipc_3_bh2+jump"],
    }

    rows = []

    def record(name, grid_name, nfe_budget, out_nfe, x, kind="sdeflow"):
        err = rms_error(x, ref)
        rows.append(
            {
                "solver": name,
                "grid": grid_name,
                "budget": nfe_budget,
                "nfe": out_nfe,
                "rms_median": float(err.median()),
                "rms_p90": float(torch.quantile(err, 0.9)),
                "source": kind,
            }
        )

    jobs = [(n, s, g) for n in args.nfe for s in {**solvers, **jumps} for g in grids]
    if args.peers_only or args.frontier:
        from sdeflow.core.io import read_csv

        # A frontier run keeps every earlier row but its own; a peers-only run keeps the sdeflow rows and reruns the
        # peers.
        rows = [
            {
                **r,
                "budget": int(r["budget"]),
                "nfe": int(r["nfe"]),
                "rms_median": float(r["rms_median"]),
                "rms_p90": float(r["rms_p90"]),
            }
            for r in read_csv(args.out / "solver_accuracy.csv")
            if r["source"] == "sdeflow"
            or (r["source"] == "diffusers" and args.frontier)
            or (
                r["source"] == "frontier"
                and not (
                    args.frontier and int(r["budget"]) in args.frontier_nfe and r["grid"] in args.frontier_settings
                )
            )
        ]
        rows = [{**r, **{k: float(r[k]) for k in ("tuning_pilot_nfe", "tuning_seconds") if r.get(k)}} for r in rows]
        rows = [
            {**r, "solver": f"auto, timesteps={FRONTIER[r['grid']]}"} if r["source"] == "frontier" else r for r in rows
        ]
        have = {r["solver"] for r in rows}
        jobs = [job for job in jobs if job[1] not in have]
    for nfe, name, gname in tqdm(jobs, desc="sdeflow solvers"):
        solver = {**solvers, **jumps}[name]
        try:
            out = solver.sample(score, sde, x_T, solver.plan(sde, grids[gname], nfe=nfe))
        except sf.BudgetError:
            continue
        record(name, gname, nfe, out.nfe, out.samples)
    for nfe in tqdm([] if args.frontier else args.nfe, desc="diffusers peers"):
        for name, (ours, make, runner) in peers().items():
            used = 2 * (nfe // 2) if runner is run_heun_peer else nfe
            record(name, "karras", nfe, used, runner(make, nfe, score, sde, x_T), kind="diffusers")
    grid_dir = args.out / "grids"
    for nfe in tqdm(
        [n for n in args.nfe if n <= args.optimize_up_to and not (args.peers_only or args.frontier)],
        desc="grid optimisation",
    ):
        for name, solver in optimised.items():
            init = solver.plan(sde, grids["logsnr"], nfe=nfe)
            grid, report = sf.optimize_grid(
                solver, score, sde, pilot, pilot_ref, init, maxiter=args.maxiter, progress=False
            )
            sf.save_grid(grid_dir / f"{name.replace('+', '_')}_nfe{nfe}.json", grid, report)
            out = solver.sample(score, sde, x_T, grid)
            record(name, "optimised", nfe, out.nfe, out.samples)

    if args.frontier:
        rows += frontier_rows(args, score, sde, x_T, ref)

    # Same-algorithm pairs: ours at equal NFE on the same (Karras) grid against diffusers.
    pairs = []
    for peer, (ours, _, _) in peers().items():
        for nfe in args.nfe:
            p = next(r for r in rows if r["solver"] == peer and r["budget"] == nfe)
            o = next((r for r in rows if r["solver"] == ours and r["grid"] == "karras" and r["budget"] == nfe), None)
            if o is not None:
                pairs.append(
                    {
                        "peer": peer,
                        "ours": ours,
                        "nfe": nfe,
                        "peer_rms": p["rms_median"],
                        "ours_rms": o["rms_median"],
                        "ratio": o["rms_median"] / p["rms_median"],
                    }
                )

    def best(pred, nfe):
        cand = [r for r in rows if r["budget"] == nfe and r["nfe"] <= nfe and pred(r)]
        return min(cand, key=lambda r: r["rms_median"]) if cand else None

    shares = []
    for nfe in [n for n in (10, 20) if n in args.nfe]:
        steps = [
            ("best diffusers peer (Karras)", best(lambda r: r["source"] == "diffusers", nfe)),
            (
                "+ solver: best sdeflow solver on the Karras grid",
                best(lambda r: r["source"] == "sdeflow" and r["grid"] == "karras" and "jump" not in r["solver"], nfe),
            ),
            (
                "+ grid: best fixed grid",
                best(
                    lambda r: r["source"] == "sdeflow" and r["grid"] != "optimised" and "jump" not in r["solver"], nfe
                ),
            ),
            (
                "+ analytic phase (jump), fixed grid",
                best(lambda r: r["source"] == "sdeflow" and r["grid"] != "optimised", nfe),
            ),
            ("+ optimised grid, no jump", best(lambda r: r["grid"] == "optimised" and "jump" not in r["solver"], nfe)),
            ("+ optimised grid and jump (best overall)", best(lambda r: r["source"] == "sdeflow", nfe)),
        ]
        for label, r in steps:
            if r is not None:
                shares.append(
                    {
                        "nfe": nfe,
                        "ingredient": label,
                        "solver": r["solver"],
                        "grid": r["grid"],
                        "rms_median": r["rms_median"],
                    }
                )

    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(args.out / "solver_accuracy.csv", rows)
    write_csv(args.out / "solver_accuracy_pairs.csv", pairs)
    lines = [
        f"# Solver accuracy, VE sigma in [0.002, 80], GMM d=16 K=8, n={args.n}",
        "",
        f"command: `python benchmarks/{Path(__file__).name} {' '.join(sys.argv[1:])}`"
        + (
            " (sdeflow rows and optimised grids from the earlier full run in the same CSV; solvers it lacked were run"
            " now)"
            if args.peers_only
            else ""
        )
        + (
            " (the other rows, the diffusers peers' included, from the earlier runs in the same CSV)"
            if args.frontier
            else ""
        ),
        "",
        f"reference check (1e-10 vs 1e-8 solve, max RMS): {ref_check:.2e}",
        "",
        "## Ingredients of the gain",
        "",
        "| NFE | step | solver | grid | median RMS |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {s['nfe']} | {s['ingredient']} | {s['solver']} | {s['grid']} | {s['rms_median']:.2e} |" for s in shares
    ]
    lines += frontier_table(rows, args)
    lines += [
        "",
        "## Same algorithm as a diffusers scheduler, equal NFE, same grid",
        "",
        "| NFE | sdeflow | diffusers | sdeflow RMS | diffusers RMS | ratio |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {p['nfe']} | {p['ours']} | {p['peer']} | {p['ours_rms']:.3e} | {p['peer_rms']:.3e} | {p['ratio']:.3f} |"
        for p in pairs
    ]
    lines += [
        "",
        "## Best per NFE",
        "",
        "| NFE | solver | grid | nfe | median RMS | p90 RMS |",
        "|---|---|---|---|---|---|",
    ]
    for nfe in args.nfe:
        for r in sorted([r for r in rows if r["budget"] == nfe], key=lambda r: r["rms_median"])[:5]:
            lines.append(
                f"| {nfe} | {r['solver']} | {r['grid']} | {r['nfe']} | {r['rms_median']:.2e} | {r['rms_p90']:.2e} |"
            )
    (args.out / "solver_accuracy.md").write_text("\n".join(lines) + "\n")
    write_json(
        args.out / "solver_accuracy.json",
        {
            "command": " ".join(sys.argv),
            "rows": rows,
            "pairs": pairs,
            "ingredients": shares,
            "reference_check": ref_check,
            "seconds": time.perf_counter() - start,
            "machine": platform.platform(),
            "torch": torch.__version__,
        },
    )
    # One line per solver: its best grid at each NFE (peers dashed).
    best_rows = []
    for name in dict.fromkeys(r["solver"] for r in rows):
        for nfe in args.nfe:
            r = best(lambda r, name=name: r["solver"] == name, nfe)
            if r is not None:
                best_rows.append(
                    {
                        **r,
                        "kind": "deterministic",
                        "solver": f"diffusers:{name[10:]}" if r["source"] == "diffusers" else name,
                    }
                )
    plot(
        best_rows,
        args.out / "solver_accuracy.png",
        title="median RMS error vs exact PF-ODE (VE, GMM d=16); best grid per solver",
    )
    print("\n".join(lines))


# The frontier's settings: their row's grid name -> the `timesteps` option they run.
FRONTIER = {
    "logsnr": "logsnr",
    "auto": "auto",
    "learned_defaults": "learned_multistep",
    "learned": "learned_multistep (long fit)",
}

# The targets of the low-NFE issue: median RMS error out of the box (with the one-off tuning) and tuned.
TARGETS = {5: (2e-2, 3e-3), 10: (3e-3, 2e-4), 20: (3e-4, 5e-5)}


def frontier_rows(args, score, sde, x_T, ref) -> list[dict]:
    """What a user gets at each budget, through the apps' own configs: the default `solver=auto` on the default grid,
    with
    `timesteps=auto`, and with `timesteps=learned_multistep` (each fit on its own pilot stream)."""
    from hydra import compose, initialize_config_module
    from hydra.utils import instantiate

    from sdeflow.tuning.autotune import for_model

    with initialize_config_module("sdeflow.conf", version_base="1.3"):
        cfg = compose("sample", overrides=["checkpoint=none"])
        tuned_cfg = compose("sample", overrides=["checkpoint=none", "timesteps=auto"])
        learned_cfg = compose(
            "sample",
            overrides=[
                "checkpoint=none",
                "timesteps=learned_multistep",
                f"timesteps.pilot={args.learned_pilot}",
                f"timesteps.maxiter={args.learned_maxiter}",
            ],
        )
        default_cfg = compose("sample", overrides=["checkpoint=none", "timesteps=learned_multistep"])
    auto = instantiate(cfg.solver["auto"])  # the apps' default solver

    def learned(node, nfe):
        # The long fit weighs every prediction made so far up to --learned-history (at 50 NFE all would be 2,550
        # weights); the defaults row runs the shipped config as it is (history: null).
        return instantiate(node, history=min(nfe, args.learned_history))

    settings = {
        "logsnr": lambda nfe: instantiate(cfg.timesteps),  # the default grid (timesteps=default: log-SNR)
        "auto": lambda nfe: instantiate(tuned_cfg.timesteps),
        "learned_defaults": lambda nfe: instantiate(default_cfg.timesteps),
        "learned": lambda nfe: learned(learned_cfg.timesteps, nfe),
    }
    out = []
    for nfe in tqdm(args.frontier_nfe, desc="frontier"):
        for grid_name in args.frontier_settings:
            name = f"auto, timesteps={FRONTIER[grid_name]}"
            run, run_grid, wrap, tuning = for_model(
                settings[grid_name](nfe),
                score,
                sde,
                auto,
                nfe,
                (16,),
                None,
                "gmm16",
                dtype=torch.float64,
                progress=False,
            )
            result = run.sample(wrap(score), sde, x_T, run.plan(sde, run_grid, nfe=nfe))
            err = rms_error(result.samples, ref)
            out.append(
                {
                    "solver": name,
                    "grid": grid_name,
                    "budget": nfe,
                    "nfe": result.nfe,
                    "rms_median": float(err.median()),
                    "rms_p90": float(torch.quantile(err, 0.9)),
                    "source": "frontier",
                    "tuning_pilot_nfe": 0 if tuning is None else tuning["pilot_nfe"],
                    "tuning_seconds": 0.0 if tuning is None else tuning["seconds"],
                    "tuning_converged": None if tuning is None else bool(tuning.get("converged")),
                    "tuning_kept": None if tuning is None else bool(tuning["kept_tuned"]),
                    "command": f"python benchmarks/{Path(__file__).name} {' '.join(sys.argv[1:])}",
                }
            )
    return out


def frontier_table(rows, args) -> list[str]:
    """The frontier rows beside the best diffusers peer and the issue's targets (empty when no frontier row was run)."""
    frontier = [r for r in rows if r["source"] == "frontier"]
    if not frontier:
        return []

    def cell(grid, nfe):
        r = next((r for r in frontier if r["grid"] == grid and r["budget"] == nfe), None)
        if r is None:
            return "-"
        if grid == "logsnr":
            return f"{r['rms_median']:.2e}"
        fate = ("converged" if r.get("tuning_converged") else "at its cap") + (
            "" if r.get("tuning_kept", True) else "; rejected, the default kept"
        )
        return f"{r['rms_median']:.2e} ({r['tuning_pilot_nfe']:.0f} pilot NFE, {r['tuning_seconds']:.0f} s, {fate})"

    lines = [
        "",
        "## Out of the box, auto-tuned, learned",
        "",
        "What a user gets from the configs with the default `solver=auto`: on the default log-SNR grid (out of the "
        "box); with `timesteps=auto` as shipped (the grid tuned once per model on 32 pilot draws, 32 held out); with "
        "`timesteps=learned_multistep` as shipped (64 pilot draws and 64 held out, a grid search, then the L-BFGS fit, "
        "each step weighing every prediction made so far); and with a long fit "
        f"({args.learned_pilot} pilot draws and as many held out, at most {args.learned_maxiter} iterations, each step "
        f"weighing up to {args.learned_history} data predictions). A fit is kept only if it lowers both the median and "
        "the mean of its held-out errors; each cell says whether it converged or stopped at its cap, and whether it "
        "was rejected. The fits draw their pilots from their own stream; every row is scored on the benchmark's 256 "
        "draws. Pilot NFE counts evaluations of the pilot batch. Targets: out of the box with the one-off tuning, and "
        "tuned.",
        "",
        "Commands: " + "; ".join(f"`{c}`" for c in dict.fromkeys(r["command"] for r in frontier)) + ".",
        "",
        "| NFE | best diffusers peer | out of the box | `timesteps=auto` | `learned_multistep`, defaults | target | "
        "`learned_multistep`, long fit | target |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for nfe in sorted({r["budget"] for r in frontier}):
        peers = [r for r in rows if r["source"] == "diffusers" and r["budget"] == nfe and r["nfe"] <= nfe]
        peer = min(peers, key=lambda r: r["rms_median"]) if peers else None
        peer_cell = f"{peer['rms_median']:.2e} ({peer['solver'][10:]})" if peer else "-"
        box, tuned = (f"<= {t:.0e}" for t in TARGETS[nfe]) if nfe in TARGETS else ("-", "-")
        lines.append(
            f"| {nfe} | {peer_cell} | {cell('logsnr', nfe)} | {cell('auto', nfe)} "
            f"| {cell('learned_defaults', nfe)} | {box} "
            f"| {cell('learned', nfe)} | {tuned} |"
        )
    return lines


def stochastic_main(args):
    """Stochastic samplers against diffusers' on the same VE problem, equal NFE, the same Karras grid."""
    from sdeflow.eval.metrics import SlicedWasserstein, frechet_distance, gaussian_stats

    start = time.perf_counter()
    sde = sf.VESDE(sigma_min=0.002, sigma_max=80.0, eps=0.0)
    gm = sf.GaussianMixture.random(dim=16, components=8, std_range=(0.05, 0.2), seed=0)
    score = sf.ScoreFunction(gm.score_fn(sde), sde)
    n = args.n_stochastic
    x_T = sde.prior_sampling((n, 16), torch.Generator().manual_seed(0), dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    exact, other = gm.sample(n, g, t=0.0, sde=sde), gm.sample(n, g, t=0.0, sde=sde)
    sw2 = SlicedWasserstein(exact, 256, torch.Generator().manual_seed(2))
    exact_stats = gaussian_stats(exact)
    floor = {"sw2": sw2(other), "frechet": frechet_distance(*gaussian_stats(other), *exact_stats)}
    ours = {
        "euler_ancestral": sf.EulerAncestral(),
        "dpmpp_sde": sf.DPMSolverPPSDESinglestep(),
        "sa_solver": sf.SASolver(3, 3, tau=1.0),
        "er_sde_3": sf.ERSDE(3),
        "dpmpp_3m_sde": sf.DPMSolverPP3MSDE(),
        "dpmpp_2m_sde": sf.DPMSolverPPSDE(),
        "ddim_eta1": sf.StochasticDDIM(1.0),
        "restart": sf.Restart(),
        "edm_stochastic": sf.EDMStochastic(),
    }
    rows = []

    def record(name, nfe_budget, out_nfe, x, source):
        rows.append(
            {
                "solver": name,
                "budget": nfe_budget,
                "nfe": out_nfe,
                "sw2": sw2(x),
                "frechet": frechet_distance(*gaussian_stats(x), *exact_stats),
                "source": source,
            }
        )

    for nfe in tqdm(args.nfe, desc="stochastic samplers"):
        for name, solver in ours.items():
            try:
                grid = solver.plan(sde, sf.KarrasGrid(7.0), nfe=nfe)
            except sf.BudgetError:
                continue
            # One Brownian path per sample, shared by every row (common random numbers).
            noise = sf.BrownianNoise(3, n, 0, *brownian_span(sde))
            out = solver.sample(score, sde, x_T, grid, generator=noise)
            record(name, nfe, out.nfe, out.samples, "sdeflow")
        for name, (_, make, runner) in stochastic_peers().items():
            used = 2 * (nfe // 2) if runner is run_dpmsolver_sde_peer else nfe
            record(name, nfe, used, runner(make, nfe, score, sde, x_T, 3), "diffusers")
    pairs = []
    for peer, (mine, _, _) in stochastic_peers().items():
        for nfe in args.nfe:
            p = next(r for r in rows if r["solver"] == peer and r["budget"] == nfe)
            o = next((r for r in rows if r["solver"] == mine and r["budget"] == nfe), None)
            if o is not None:
                pairs.append(
                    {
                        "nfe": nfe,
                        "ours": mine,
                        "peer": peer,
                        "ours_sw2": o["sw2"],
                        "peer_sw2": p["sw2"],
                        "ours_frechet": o["frechet"],
                        "peer_frechet": p["frechet"],
                    }
                )
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(args.out / "solver_accuracy_stochastic.csv", rows)
    lines = [
        f"# Stochastic samplers, VE sigma in [0.002, 80], GMM d=16 K=8, n={n}, Karras grid (rho = 7)",
        "",
        f"command: `python benchmarks/{Path(__file__).name} {' '.join(sys.argv[1:])}`",
        "",
        f"floor (two exact sets of n={n}): sliced W2 {floor['sw2']:.3e}, Frechet {floor['frechet']:.3e}. "
        "sdeflow rows share one "
        "Brownian path per sample (`BrownianNoise`); the peers draw their own noise.",
        "",
        "## Same algorithm as a diffusers scheduler, equal NFE, same grid",
        "",
        "| NFE | sdeflow | diffusers | sdeflow SW2 | diffusers SW2 | sdeflow Frechet | diffusers Frechet |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {p['nfe']} | {p['ours']} | {p['peer']} | {p['ours_sw2']:.3e} | {p['peer_sw2']:.3e} "
        f"| {p['ours_frechet']:.3e} | "
        f"{p['peer_frechet']:.3e} |"
        for p in pairs
    ]
    lines += [
        "",
        "## Every stochastic row, by NFE (Frechet, then sliced W2)",
        "",
        "| NFE | solver | nfe | sliced W2 | Frechet |",
        "|---|---|---|---|---|",
    ]
    for nfe in args.nfe:
        for r in sorted([r for r in rows if r["budget"] == nfe], key=lambda r: r["frechet"]):
            lines.append(f"| {nfe} | {r['solver']} | {r['nfe']} | {r['sw2']:.3e} | {r['frechet']:.3e} |")
    lines += ["", f"wall time {time.perf_counter() - start:.0f} s on {platform.platform()}, torch {torch.__version__}"]
    (args.out / "solver_accuracy_stochastic.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
