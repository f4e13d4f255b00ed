"""Sampler overhead: what a sampler adds on top of the network's own forward passes (benchmarks/README.md, section 2).

overhead = time of the whole call / the time of the bare network on the exact inputs it was given.

The baseline replays, through the bare network, every (x, t) the sampler gave it (recorded in a
first run): random-weight networks on a CPU slow down on some inputs (denormals), so a baseline
on other inputs would be unfair in either direction. The call is timed as a user makes it:
`sf.sample` with its defaults (per-sample noise, a prior draw, the grid's coefficients), or the
sampler with one shared `torch.Generator`; for stochastic solvers also with per-sample noise drawn
as `sf.sample` drew it before it passed its plan's step count on ("blocks doubling"). Peers run in
the same rounds on the same network: diffusers' scheduler loops where diffusers is installed
(`pip install -e ".[bench]"`; `PEERS` names our solver of the same method), and a hand-written DDIM
loop with its coefficients precomputed, the floor a Python loop can reach. Every row alternates
with its baseline in `--rounds` rounds after a warm-up; the figure is the median of the per-round
ratios, with their quartiles, minimum and maximum. On a CPU shared with other work, `--clock cpu`
times each round by the thread's CPU time, which the other processes do not inflate.

    python benchmarks/sampler_overhead.py                      # CPU, one thread: MLP and tiny NCSN++
    python benchmarks/sampler_overhead.py --networks mlp --nfe 10 50 --rounds 30 --clock cpu   # a shared CPU
    python benchmarks/sampler_overhead.py --tiny --out /tmp/o  # seconds: what the tests run
    python benchmarks/sampler_overhead.py --device cuda --networks cifar --batches 1 256
    python benchmarks/sampler_overhead.py --device cuda --networks cifar --batches 1 256 --compile none reduce-overhead
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

import sdeflow as sf
from sdeflow.core.io import atomic_write_bytes, write_json
from sdeflow.nets import NCSNpp, ScoreMLP
from sdeflow.noise.generators import NOISE, PRIOR
from sdeflow.score.compiled import MODES

RESULTS = Path(__file__).resolve().parent / "results" / "sampler_overhead"

# Our fixed-grid solvers as their configs name them (conf/solver), one of each family.
SOLVERS = {
    "ddim": lambda: sf.DDIM(),
    "dpmpp_2m": lambda: sf.DPMSolverPP(2),
    "dpmpp_3m": lambda: sf.DPMSolverPP(3),
    "unipc_2_bh2": lambda: sf.UniPC(2),
    "dpm_solver_2": lambda: sf.DPMSolver(2),
    "ipndm": lambda: sf.IPNDM(),
    "edm_heun": lambda: sf.EDMHeun(),
    "ode_rk4": lambda: sf.ProbabilityFlowODE("rk4"),
    "euler_maruyama": lambda: sf.PCSampler(sf.EulerMaruyama()),
    "ancestral": lambda: sf.PCSampler(sf.Ancestral()),
    "pc_langevin": lambda: sf.PCSampler(sf.ReverseDiffusion(), sf.LangevinCorrector()),
    "dpmpp_2m_sde": lambda: sf.DPMSolverPPSDE(),
    "edm_stochastic": lambda: sf.EDMStochastic(S_churn=10.0),
    "euler_ancestral": lambda: sf.EulerAncestral(),
    "ddim_eta1": lambda: sf.StochasticDDIM(),
}
STOCHASTIC = {
    "euler_maruyama",
    "ancestral",
    "pc_langevin",
    "dpmpp_2m_sde",
    "edm_stochastic",
    "euler_ancestral",
    "ddim_eta1",
}
# diffusers' scheduler loops and, where there is one, our solver of the same method.
PEERS = {
    "diffusers_ddim": "ddim",
    "diffusers_dpmpp_2m": "dpmpp_2m",
    "diffusers_unipc": "unipc_2_bh2",
    "diffusers_euler_ancestral": "euler_ancestral",
    "diffusers_ddpm": "ddim_eta1",
    "diffusers_dpmpp_2m_sde": "dpmpp_2m_sde",
}


def networks(names, device, tiny: bool):
    """(name, network, data shape, batch sizes) for each network asked for; random weights, eval mode."""
    made = {
        "mlp": lambda: (ScoreMLP(dim=16, hidden=32 if tiny else 128), (16,)),
        "ncsnpp_tiny": lambda: (
            NCSNpp(
                in_channels=1,
                resolution=8,
                nf=8 if tiny else 32,
                ch_mult=(1, 2),
                num_res_blocks=1,
                attn_resolutions=(4,),
                dropout=0.0,
            ),
            (1, 8, 8),
        ),
        "cifar": lambda: (
            NCSNpp(in_channels=3, resolution=32, dropout=0.0),
            (3, 32, 32),
        ),  # conf/model/ncsnpp_cifar10.yaml
    }
    for name in names:
        if name not in made:
            raise SystemExit(f"unknown network {name!r}; choose from {sorted(made)}")
        torch.manual_seed(0)
        net, shape = made[name]()
        yield name, net.to(device).eval(), shape


class Recorder(torch.nn.Module):
    """The network, keeping a copy of every input it is given."""

    def __init__(self, net):
        super().__init__()
        self.net, self.inputs = net, []

    def forward(self, x, t):
        self.inputs.append((x.detach().clone(), t.detach().clone()))
        return self.net(x, t)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


# What a round is timed by: wall-clock time, or (`--clock cpu`) the CPU time of the calling thread, which other
# processes on a shared machine do not inflate (CPU only, with one torch thread, whose work runs on that thread).
CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}
CLOCK_NAMES = {"wall": "wall-clock time", "cpu": "the thread's CPU time"}
clock = CLOCKS["wall"]


def timed(fn, device) -> float:
    sync(device)
    start = clock()
    fn()
    sync(device)
    return clock() - start


@torch.no_grad()
def replay(net, inputs):
    for x, t in inputs:
        net(x, t)


# --- The runs: each is a callable that samples once, given the network -------------------------------------
def ours(solver_name, sde, shape, nfe, device, shared: bool):
    solver = SOLVERS[solver_name]()

    def run(net):
        score = sf.ScoreFunction(net, sde, sf.EpsPrediction())
        gen = torch.Generator(device=device).manual_seed(0) if shared else None
        return sf.sample(score, sde, solver, shape, nfe=nfe, seed=0, generator=gen, device=device).nfe

    return run


def ours_doubling(solver_name, sde, shape, nfe, device):
    """Per-sample noise as `sf.sample` drew it before it passed its plan's step count on: a prior draw, then the step
    noise in blocks doubling 1, 2, 4, 8 (the same numbers, in five Philox calls instead of one at 10 steps)."""
    solver = SOLVERS[solver_name]()

    def run(net):
        score = sf.ScoreFunction(net, sde, sf.EpsPrediction())
        timesteps = solver.plan(sde, nfe=nfe)
        prior, noise = (sf.PerSampleNoise(0, shape[0], purpose=k) for k in (PRIOR, NOISE))
        x = sde.prior_sampling(shape, prior, device=device)
        return solver.sample(score, sde, x, timesteps, generator=noise).nfe

    return run


def hand_ddim(sde, shape, nfe, device):
    """The floor: DDIM with every coefficient a precomputed Python number, noise from one generator."""
    t = sf.UniformGrid()(sde, nfe).double()
    alpha, sigma = sde.alpha(t).tolist(), sde.sigma(t).tolist()
    times = [torch.full((shape[0],), float(s), device=device) for s in t]

    @torch.no_grad()
    def run(net):
        x = torch.randn(shape, generator=torch.Generator(device=device).manual_seed(0), device=device)
        for i in range(nfe):
            eps = net(x, times[i])
            x0 = (x - sigma[i] * eps) / alpha[i]
            x = alpha[i + 1] * x0 + sigma[i + 1] * eps
        return nfe

    return run


def diffusers_loop(kind, shape, nfe, device):
    """A diffusers scheduler driven as its pipelines drive it (eps prediction, DDPM's linear betas)."""
    import diffusers

    make = {
        "diffusers_ddim": diffusers.DDIMScheduler,
        "diffusers_dpmpp_2m": diffusers.DPMSolverMultistepScheduler,
        "diffusers_unipc": diffusers.UniPCMultistepScheduler,
        "diffusers_euler_ancestral": diffusers.EulerAncestralDiscreteScheduler,
        "diffusers_ddpm": diffusers.DDPMScheduler,
        "diffusers_dpmpp_2m_sde": lambda **kw: diffusers.DPMSolverMultistepScheduler(
            algorithm_type="sde-dpmsolver++", **kw
        ),
    }[kind]
    stochastic = PEERS[kind] in STOCHASTIC

    @torch.no_grad()
    def run(net):
        sched = make(num_train_timesteps=1000, beta_schedule="linear")
        sched.set_timesteps(nfe, device=device)
        gen = torch.Generator(device=device).manual_seed(0)
        x = torch.randn(shape, generator=gen, device=device) * sched.init_noise_sigma
        for t in sched.timesteps:
            inp = sched.scale_model_input(x, t)
            eps = net(inp, (t.float() / 1000).expand(shape[0]).to(device))
            x = sched.step(eps, t, x, generator=gen).prev_sample if stochastic else sched.step(eps, t, x).prev_sample
        return len(sched.timesteps)

    return run


def measure(run, net, device, rounds: int) -> dict:
    run(net)  # warm-up (a GPU's kernels and clocks, a CPU's caches)
    recorder = Recorder(net)
    nfe = run(recorder)  # the inputs the baseline replays
    if nfe != len(recorder.inputs):
        raise RuntimeError(f"counted {nfe} NFE but the network saw {len(recorder.inputs)} calls")
    inputs = recorder.inputs
    replay(net, inputs)
    ratios, walls, bases = [], [], []
    for r in range(rounds):
        # Alternate which goes first, so drifts in the machine's speed hit both alike.
        if r % 2 == 0:
            wall, base = timed(lambda: run(net), device), timed(lambda: replay(net, inputs), device)
        else:
            base, wall = timed(lambda: replay(net, inputs), device), timed(lambda: run(net), device)
        ratios.append(wall / base)
        walls.append(wall)
        bases.append(base)
    return {
        "nfe": nfe,
        "overhead": statistics.median(ratios),
        "q25": quartile(ratios, 1),
        "q75": quartile(ratios, 3),
        "min": min(ratios),
        "max": max(ratios),
        "forward_ms": 1e3 * statistics.median(bases) / nfe,
        "wall_ms": 1e3 * statistics.median(walls),
    }


def quartile(values, k: int) -> float:
    """The k-th quartile of `values` (the spread of the rounds' ratios, which a min-max a noisy machine inflates)."""
    return statistics.quantiles(values, n=4, method="inclusive")[k - 1] if len(values) > 1 else values[0]


def rows_for(net_name, net, shape, batch, nfe, args, device, compiled: str):
    sde = sf.VPSDE()
    full = (batch, *shape)
    runs = {}
    for name in args.solvers:
        runs[name, "sf.sample"] = ours(name, sde, full, nfe, device, shared=False)
        runs[name, "shared generator"] = ours(name, sde, full, nfe, device, shared=True)
        if name in STOCHASTIC:
            runs[name, "blocks doubling"] = ours_doubling(name, sde, full, nfe, device)
    runs["hand-written DDIM", "floor"] = hand_ddim(sde, full, nfe, device)
    try:
        import diffusers  # noqa: F401

        for kind, ours_of_it in PEERS.items():
            if ours_of_it in args.solvers:
                runs[kind, "peer"] = diffusers_loop(kind, full, nfe, device)
    except ImportError:
        print("diffusers is not installed: peers skipped (pip install -e '.[bench]')", file=sys.stderr)
    for (solver, mode), run in runs.items():
        try:
            res = measure(run, net, device, args.rounds)
        except sf.BudgetError:
            continue
        row = {
            "network": net_name,
            "compile": compiled,
            "batch": batch,
            "nfe_asked": nfe,
            "solver": solver,
            "mode": mode,
            **res,
        }
        print(
            f"{net_name:12s} {compiled:15s} b={batch:<4d} {solver:26s} {mode:16s} NFE {res['nfe']:3d}  "
            f"overhead {res['overhead']:.3f} quartiles [{res['q25']:.3f}, {res['q75']:.3f}] "
            f"[{res['min']:.3f}, {res['max']:.3f}]  forward {res['forward_ms']:.3f} ms",
            flush=True,
        )
        yield row


def table(rows) -> str:
    lines = [
        "| network | compile | batch | NFE | solver | call | overhead (median) | quartiles | min-max | forward (ms) "
        "| wall (ms) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        quartiles = f"{r['q25']:.3f}-{r['q75']:.3f}" if "q25" in r else "-"
        lines.append(
            f"| {r['network']} | {r.get('compile', 'none')} | {r['batch']} | {r['nfe']} | {r['solver']} | {r['mode']} "
            f"| {r['overhead']:.3f} | {quartiles} | {r['min']:.3f}-{r['max']:.3f} | {r['forward_ms']:.3f} "
            f"| {r['wall_ms']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--networks", nargs="+", default=["mlp", "ncsnpp_tiny"])
    p.add_argument(
        "--batches", nargs="+", type=int, default=None, help="batch sizes (default: 256 for the MLP, 64 otherwise)"
    )
    p.add_argument("--nfe", nargs="+", type=int, default=[10, 50])
    p.add_argument("--solvers", nargs="+", default=list(SOLVERS), choices=list(SOLVERS))
    p.add_argument(
        "--compile",
        nargs="+",
        default=["none"],
        choices=["none", *MODES],
        help="network compilations to measure (sdeflow.Compiled; reduce-overhead records CUDA graphs on a GPU)",
    )
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument(
        "--clock",
        choices=list(CLOCKS),
        default="wall",
        help="wall: wall-clock time; cpu: the thread's CPU time (a CPU run with --threads 1 on a shared machine)",
    )
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--tiny", action="store_true", help="small networks, one NFE, two rounds: a check that it runs")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--name", default=None, help="file name stem (default: overhead_<device type>)")
    args = p.parse_args(argv)
    if args.tiny:
        args.nfe, args.rounds = [4], 2
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.clock == "cpu" and (device.type != "cpu" or args.threads != 1):
        raise SystemExit("--clock cpu times the calling thread: use it on the CPU with --threads 1")
    global clock
    clock = CLOCKS[args.clock]
    rows = []
    for net_name, eager, shape in networks(args.networks, device, args.tiny):
        batches = args.batches or ([256] if net_name == "mlp" else [64])
        for compiled in args.compile:
            # One compiled module per network: each batch size compiles once, and the baseline replays through it too,
            # so the ratio is what the loop adds to the compiled network.
            net = eager if compiled == "none" else sf.Compiled(eager, compiled)
            for batch in batches:
                for nfe in args.nfe:
                    rows.extend(rows_for(net_name, net, shape, batch, nfe, args, device, compiled))
                    write(rows, args, device)  # after every group, so a run cut short keeps what it measured
    print(f"wrote {args.out / (args.name or f'overhead_{device.type}')}.json and .md")
    return rows


def write(rows, args, device):
    meta = {
        "command": "python " + " ".join(sys.argv),
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "threads": args.threads,
        "rounds": args.rounds,
        "clock": args.clock,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.name or f"overhead_{device.type}"
    write_json(args.out / f"{stem}.json", {**meta, "rows": rows})
    atomic_write_bytes(
        args.out / f"{stem}.md",
        (
            f"Command: `{meta['command']}`; device {meta['device']}, {args.threads} thread(s), "
            f"{args.rounds} rounds timed by {CLOCK_NAMES[args.clock]}, torch {meta['torch']}.\n\n" + table(rows)
        ).encode(),
    )


if __name__ == "__main__":
    main()
