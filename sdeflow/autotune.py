"""Grids tuned once per model and cached: `timesteps=auto`.

On first use for a (model, SDE, solver, NFE, settings), `AutoGrid` draws a few pilot trajectories,
solves them tightly with a reference ODE solver, fits the solver's grid to half of them
(`optimize_grid`) and checks it on the other half: a fit that does not lower the held-out error
keeps the base grid. The grid is cached as JSON under a key that hashes the checkpoint's bytes and
every setting; later uses read the cache and cost nothing. The one-off cost is reported in NFE and seconds.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import torch

from sdeflow.grid_search import optimize_grid
from sdeflow.grids import Grid, LogSNRGrid
from sdeflow.learned import Learned, learn as learn_coefficients, save_learned
from sdeflow.metrics import rms_error
from sdeflow.random import PILOT, seeded_generator


def file_digest(path) -> str:
    """sha256 of a file's bytes, or of a folder's files (names and bytes, in order): what identifies a checkpoint in the cache key.

    A folder's `tuned_grids/` (where the cache itself lives) is left out.
    """
    path = Path(path)
    files = [path] if path.is_file() else sorted(
        p for p in path.rglob("*") if p.is_file() and "tuned_grids" not in p.relative_to(path).parts)
    h = hashlib.sha256()
    for file in files:
        if file != path:
            h.update(file.relative_to(path).as_posix().encode() + b"\0")
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


class AutoGrid:
    """A grid fitted to the model on first use and cached; the `base` grid until then, and where tuning does not apply.

    Args:
        base: the grid tuning starts from (default `LogSNRGrid()`).
        pilot: pilot trajectories the grid is fitted on (as many again are held out to check it).
        maxiter: solver runs the search may make.
        rtol, atol: tolerances of the reference solution (dopri5 on the probability-flow ODE); default 1e-8 in
            float64 (far below the errors being fitted), 1e-5 in float32, where a network's rounding sets the floor.
        seed: the pilot draws' seed (stream `PILOT`, apart from any sampling seed).
        learn: also fit each step's evaluation time (`sdeflow.learned`): learned solver coefficients, which the
            sampling score is wrapped with (`ShiftedScore`).
    """

    def __init__(self, base: Grid | None = None, pilot: int = 32, maxiter: int = 400, rtol: float | None = None,
                 atol: float | None = None, seed: int = 0, learn: bool = False):
        if int(pilot) != pilot or pilot < 2 or int(maxiter) != maxiter or maxiter < 1:
            raise ValueError(f"need pilot >= 2 and maxiter >= 1 (integers), got pilot={pilot}, maxiter={maxiter}")
        self.base = LogSNRGrid() if base is None else base
        self.pilot, self.maxiter, self.seed, self.learn = int(pilot), int(maxiter), int(seed), bool(learn)
        self.rtol, self.atol = (None if v is None else float(v) for v in (rtol, atol))

    def __call__(self, sde, steps: int) -> torch.Tensor:
        return self.base(sde, steps)

    def key(self, model_id: str, sde, solver, nfe: int, shape, dtype) -> str:
        """The cache key: the model's identity and every setting the tuned grid depends on."""
        parts = [model_id, repr(sde), repr(solver), str(int(nfe)), str(tuple(shape)), str(dtype), repr(self.base),
                 str(self.pilot), str(self.maxiter), str(self.rtol), str(self.atol), str(self.seed), str(self.learn)]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:24]

    def tuned(self, score, sde, solver, nfe: int, shape, cache_dir, model_id: str, dtype=torch.float32, device=None,
              progress: bool = True) -> tuple[Learned | None, dict]:
        """The fit for (model, sde, solver, nfe), from the cache or made now (a `Learned`: its `grid`, and `wrap` for the
        score, which is the score itself unless `learn`); and a report of where it came from and what it cost
        (`tuned`, `cached`, `pilot_nfe`, `seconds`, the search's report). `cache_dir` None: not cached.
        Stochastic solvers keep the base grid (None: the fit follows probability-flow trajectories)."""
        if solver.nfe_per_step is None:
            raise ValueError(f"{type(solver).__name__} chooses its own steps: there is no grid to tune (use another timesteps)")
        if solver.fixed_head:
            raise ValueError(f"{type(solver).__name__} places its own first interval; tune its inner solver's grid with "
                             "sdeflow.optimize_grid instead of timesteps=auto")
        if solver.stochastic:
            # The fit follows trajectories of the probability-flow ODE, which a stochastic solver does not.
            return None, {"tuned": False, "cached": False, "pilot_nfe": 0, "seconds": 0.0,
                          "reason": f"{type(solver).__name__} is stochastic: it runs on the base grid {self.base!r}"}
        path = None if cache_dir is None else Path(cache_dir) / f"grid_{self.key(model_id, sde, solver, nfe, shape, dtype)}.json"
        if path is not None and path.is_file():
            fit = Learned.load(path)
            return fit, {**fit.report, "tuned": True, "cached": True, "pilot_nfe": 0, "seconds": 0.0, "path": str(path)}
        from sdeflow.samplers.ode import ProbabilityFlowODE

        start = time.perf_counter()
        # Pilot draws to fit on and as many held out to validate on: a fit that does not carry over keeps the base grid.
        x_T = sde.prior_sampling((2 * self.pilot, *shape), seeded_generator(self.seed, PILOT), dtype=dtype, device=device)
        ends = torch.tensor([sde.T, sde.eps], dtype=torch.float64)
        nfe0 = score.nfe
        with torch.no_grad():
            tol = 1e-8 if dtype == torch.float64 else 1e-5
            ref = ProbabilityFlowODE("dopri5", rtol=self.rtol or tol, atol=self.atol or tol).sample(score, sde, x_T, ends)
            fit, held = slice(0, self.pilot), slice(self.pilot, None)
            init = solver.plan(sde, self.base, nfe=nfe)
            if self.learn:
                tuned, report = learn_coefficients(solver, score, sde, x_T[fit], ref.samples[fit], init, maxiter=self.maxiter,
                                                   progress=progress)
            else:
                grid, report = optimize_grid(solver, score, sde, x_T[fit], ref.samples[fit], init, maxiter=self.maxiter, progress=progress)
                tuned = Learned(grid, grid[:-1])
            plain = Learned(init, init[:-1])
            before, after = (float(rms_error(solver.sample(f.wrap(score), sde, x_T[held], f.times).samples, ref.samples[held]).mean())
                             for f in (plain, tuned))
        kept = after < before
        tuned = tuned if kept else plain
        # The one-off cost in evaluations of the pilot batch: the reference solve and every solver run of the search.
        report.update(pilot=self.pilot, pilot_nfe=score.nfe - nfe0, reference_nfe=ref.nfe, model=model_id, nfe=int(nfe),
                      held_out_before=before, held_out_after=after, kept_tuned=kept, one_off_seconds=time.perf_counter() - start)
        report.update(tuned=True, cached=False, seconds=report["one_off_seconds"], path=None if path is None else str(path))
        tuned.report = report
        if path is not None:  # else no cache: this run's fit only
            path.parent.mkdir(parents=True, exist_ok=True)
            save_learned(path, tuned, report)
        return tuned, report

    def __repr__(self) -> str:
        return (f"AutoGrid(base={self.base!r}, pilot={self.pilot}, maxiter={self.maxiter}, rtol={self.rtol}, atol={self.atol}, "
                f"seed={self.seed}, learn={self.learn})")


def for_model(grid, score, sde, solver, nfe, shape, cache_dir, model_id: str, dtype=torch.float32, device=None,
              progress: bool = True):
    """(the grid to sample this model with, what to wrap each batch's score with, a tuning report or None).

    A grid that tunes itself to the model (`AutoGrid`, or any with its `tuned` method) is fitted or read from
    the cache; any other grid, a plain callable `grid(sde, steps)`, is used as it is, the score unwrapped.
    """
    tuned = getattr(grid, "tuned", None)
    if tuned is None:
        return grid, _unwrapped, None
    fit, report = tuned(score, sde, solver, nfe, shape, cache_dir, model_id, dtype=dtype, device=device, progress=progress)
    return (grid, _unwrapped, report) if fit is None else (fit.grid, fit.wrap, report)


def _unwrapped(score):
    return score


def describe(name: str, tuning: dict) -> str:
    """One line on where a solver's tuned grid came from and what it cost."""
    if not tuning["tuned"]:
        return f"{name}: grid not tuned ({tuning['reason']})"
    cost = "from the cache" if tuning["cached"] else (
        f"tuned once: {tuning['pilot_nfe']} pilot NFE, {tuning['seconds']:.1f} s, held-out error {tuning['held_out_before']:.3g} -> "
        f"{tuning['held_out_after']:.3g}" + ("" if tuning["kept_tuned"] else " (no better: the base grid is kept)")
        + ("" if tuning.get("converged") else ", search not converged"))
    return f"{name}: grid {cost}" + (f" ({tuning['path']})" if tuning["path"] else "")
