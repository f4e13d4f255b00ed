"""CUDA paths: every solver on the GPU against the CPU (training throughput: benchmarks/train_throughput.py).

Needs only torch, torchdiffeq, numpy and scipy (no Hydra, no wandb), so it runs on a bare GPU machine:

    PYTHONPATH=. python benchmarks/gpu_check.py --out benchmarks/results/gpu_check.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import torch

import sdeflow as sf
from sdeflow.eval.metrics import rms_error


def solver_agreement(device):
    """Each solver from the same prior draws and per-sample noise, float64, on the GPU and on the CPU."""
    sde = sf.VESDE(0.002, 80.0, eps=0.0)
    gm = sf.GaussianMixture.random(16, 8, seed=0)
    stats = sf.GaussianStats.from_distribution(gm)
    solvers = {
        "euler_maruyama": sf.PCSampler(sf.EulerMaruyama()),
        "pc_langevin": sf.PCSampler(sf.ReverseDiffusion(), sf.LangevinCorrector()),
        "ode_dopri5": sf.ProbabilityFlowODE("dopri5"),
        "ddim": sf.DDIM(),
        "dpm_solver_3": sf.DPMSolver(3),
        "dpm_solver_adaptive": sf.DPMSolverAdaptive(),
        "dpmpp_3m": sf.DPMSolverPP(3),
        "unipc_3_bh2": sf.UniPC(3),
        "edm_heun": sf.EDMHeun(),
        "ipndm": sf.IPNDM(),
        "lms": sf.LMS(),
        "edm_stochastic": sf.EDMStochastic(),
        "dpmpp_2m_sde": sf.DPMSolverPPSDE(),
        "gotta_go_fast": sf.GottaGoFast(reltol=0.05),
        "analytic_jump+unipc": sf.AnalyticJump(sf.UniPC(2), stats, sigma_jump=3.0),
    }
    rows = []
    for name, solver in solvers.items():
        res = {}
        for dev in ("cpu", device):
            for dtype in (torch.float32, torch.float64):
                score = sf.ScoreFunction(gm.score_fn(sde), sde)
                start = time.perf_counter()
                out = sf.sample(
                    score, sde, solver, (512, 16), nfe=20, grid=sf.KarrasGrid(), seed=0, dtype=dtype, device=dev
                )
                if dev != "cpu":
                    torch.cuda.synchronize()
                res[(dev, dtype)] = (out.samples.double().cpu(), out.nfe, time.perf_counter() - start)
        gpu64, cpu64 = res[(device, torch.float64)], res[("cpu", torch.float64)]
        rows.append(
            {
                "solver": name,
                "nfe_gpu": gpu64[1],
                "nfe_cpu": cpu64[1],
                "max_rms_gpu_vs_cpu_f64": float(rms_error(gpu64[0], cpu64[0]).max()),
                "finite_f32": bool(torch.isfinite(res[(device, torch.float32)][0]).all()),
                "seconds_gpu_f32": res[(device, torch.float32)][2],
                "seconds_cpu_f32": res[("cpu", torch.float32)][2],
            }
        )
        print(rows[-1])
    return rows


def noise_agreement(device):
    """Per-sample noise made on the GPU against the same draws made on the CPU: identical words, normals to rounding."""
    out = {}
    for shape in [(64, 3, 32, 32), (1000, 17)]:
        cpu, gpu = sf.PerSampleNoise(5, shape[0]), sf.PerSampleNoise(5, shape[0])
        words_equal = bool(torch.equal(cpu.words(shape), gpu.words(shape, device).cpu()))
        z_cpu, z_gpu = cpu.randn(shape), gpu.randn(shape, device=device).cpu()
        out[str(shape)] = {
            "words_identical": words_equal,
            "normals_identical_fraction": float((z_cpu == z_gpu).double().mean()),
            "normals_max_abs_diff": float((z_cpu - z_gpu).abs().max()),
        }
    print(out)
    return out


def deferred_nan(device):
    """On the GPU the finiteness flags are read after the loop: the error must still name the first bad step."""
    sde = sf.VPSDE()
    gm = sf.GaussianMixture.random(4, 3)
    calls = {"n": 0}

    def poisoned(x, t):
        calls["n"] += 1
        s = gm.score(x, t, sde)
        return s * float("nan") if calls["n"] > 3 else s

    try:
        sf.sample(sf.ScoreFunction(poisoned, sde), sde, sf.DDIM(), (8, 4), steps=10, seed=0, device=device)
    except sf.NonFiniteError as e:
        print("raised:", e)
        return {"raised": True, "message": str(e), "names_step_4": "at step 4 of 10" in str(e)}
    return {"raised": False}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="gpu_check.json")
    args = ap.parse_args()
    device = "cuda"
    result = {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "machine": platform.platform(),
        "command": " ".join(["python", *sys.argv]),
        "noise": noise_agreement(device),
        "deferred_nan": deferred_nan(device),
        "solvers": solver_agreement(device),
    }
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
