"""Grids tuned once per model and cached: `timesteps=auto`.

On first use for a (model, SDE, solver, NFE, settings), `AutoGrid` draws a few pilot trajectories,
solves them tightly with a reference ODE solver, fits the solver's grid to half of them
(`optimize_grid`) and checks it on the other half. The fit does no harm: it is kept only if it lowers
both the median and the mean of the held-out errors (`no_harm`); otherwise the base grid and solver
are returned, and the report says so. The report gives the objective the fit minimised and the
acceptance test together, and whether the fit converged or stopped at its cap. The grid is cached as
JSON under a key that hashes the checkpoint's bytes and every setting; later uses read the cache and
cost nothing. The one-off cost is reported in NFE and seconds.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import torch

from sdeflow.core.checks import integer
from sdeflow.eval.metrics import rms_error
from sdeflow.noise.generators import PILOT, seeded_generator
from sdeflow.samplers.grids import Grid, default_grid
from sdeflow.tuning.grid_search import TOL, no_harm, optimize_grid
from sdeflow.tuning.learned import Learned, MultistepFit, learn_multistep, save_learned
from sdeflow.tuning.learned import learn as learn_coefficients


def file_digest(path) -> str:
    """sha256 of a file's bytes, or of a folder's files (names and bytes, in order): what identifies a checkpoint in
    the cache key.

    A folder's `tuned_grids/` (where the cache itself lives) is left out.
    """
    path = Path(path)
    files = (
        [path]
        if path.is_file()
        else sorted(p for p in path.rglob("*") if p.is_file() and "tuned_grids" not in p.relative_to(path).parts)
    )
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
        base: the grid tuning starts from (default `default_grid()`, the log-SNR grid).
        pilot: pilot trajectories the grid is fitted on (as many again are held out to check it).
        maxiter: solver runs the search may make; None: `RUNS_PER_PARAMETER` per parameter searched, a cap the typical
            search converges under.
        rtol, atol: tolerances of the reference solution (dopri5 on the probability-flow ODE); default 1e-8 in
            float64 (far below the errors being fitted), 1e-5 in float32, where a network's rounding sets the floor.
        seed: the pilot draws' seed (stream `PILOT`, apart from any sampling seed).
        learn: also fit each step's evaluation time (`sdeflow.tuning.learned`): learned solver coefficients, which the
            sampling score is wrapped with (`ShiftedScore`).
        tol: the search has converged when a sweep lowers its objective by less than this fraction.
    """

    def __init__(
        self,
        base: Grid | None = None,
        pilot: int = 32,
        maxiter: int | None = None,
        rtol: float | None = None,
        atol: float | None = None,
        seed: int = 0,
        learn: bool = False,
        tol: float = TOL,
    ):
        integer("pilot", pilot, 2)
        if maxiter is not None:
            integer("maxiter", maxiter, accepted=" or null (a cap per parameter searched)")
        if not 0 < tol < 1:
            raise ValueError(f"tol must lie in (0, 1), got {tol}")
        self.base = default_grid() if base is None else base
        self.pilot, self.seed, self.learn, self.tol = int(pilot), int(seed), bool(learn), float(tol)
        self.maxiter = None if maxiter is None else int(maxiter)
        self.rtol, self.atol = (None if v is None else float(v) for v in (rtol, atol))

    def __call__(self, sde, steps: int) -> torch.Tensor:
        return self.base(sde, steps)

    def key(self, model_id: str, sde, solver, nfe: int, shape, dtype) -> str:
        """The cache key: the model's identity and every setting the tuned grid depends on (this tuner's repr holds its
        own)."""
        parts = [model_id, repr(sde), repr(solver), str(int(nfe)), str(tuple(shape)), str(dtype), repr(self)]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:24]

    # --- What is fitted and how it is kept: a tuner that fits something else overrides these -----------------------
    def fit(self, solver, score, sde, x_T, reference, init, progress: bool):
        """(the fit on the pilot draws, the search's report): the grid, with each step's evaluation time if `learn`."""
        args = dict(maxiter=self.maxiter, progress=progress, tol=self.tol)
        if self.learn:
            return learn_coefficients(solver, score, sde, x_T, reference, init, **args)
        grid, report = optimize_grid(solver, score, sde, x_T, reference, init, **args)
        return Learned(grid, grid[:-1]), report

    def plain(self, solver, sde, init):
        """The fit that changes nothing: `solver` on the base grid `init`, what a fit must beat on the held-out
        draws."""
        return Learned(init, init[:-1])

    def check(self, solver, sde, nfe: int) -> None:
        """Refuse, before any pilot is drawn, a solver this tuner cannot fit (every grid solver can be given a grid)."""

    def save(self, path, fit, report: dict) -> None:
        save_learned(path, fit, report)

    def load(self, path):
        return Learned.load(path)

    def tuned(
        self,
        score,
        sde,
        solver,
        nfe: int,
        shape,
        cache_dir,
        model_id: str,
        dtype=torch.float32,
        device=None,
        progress: bool = True,
        condition=None,
    ) -> tuple[Learned | MultistepFit | None, dict]:
        """The fit for (model, sde, solver, nfe), from the cache or made now (a `Learned` or `MultistepFit`: its
        `grid`, `sampler(solver)` for the solver to run and `wrap` for the score); and a report of where it came from
        and what it cost (`tuned`, `cached`, `pilot_nfe`, `seconds`), the search's report (its `objective`, whether it
        `converged` or where it `stopped`) and the acceptance test's (`acceptance`, the held-out medians and means,
        `verdict`, `kept_tuned`). A fit the test rejects returns the base grid and solver. `cache_dir` None: not
        cached. Stochastic solvers keep the base grid (None: the fit follows probability-flow trajectories).

        `condition(score, rows) -> score function`: what pilot draws `rows` (a range) sample with, for a
        class-conditional or guided model (their labels, the guidance), as `generate`'s `condition` does for a run's
        samples; `model_id` must then name the labels and guidance too, since the cache is keyed by it.
        """
        if solver.nfe_per_step is None:
            raise ValueError(
                f"{type(solver).__name__} chooses its own steps: there is no grid to tune (use another timesteps)"
            )
        if solver.fixed_head:
            raise ValueError(
                f"{type(solver).__name__} places its own first interval; tune its inner solver's grid with "
                "sdeflow.optimize_grid instead of timesteps=auto"
            )
        if solver.stochastic:
            # The fit follows trajectories of the probability-flow ODE, which a stochastic solver does not.
            return None, {
                "tuned": False,
                "cached": False,
                "pilot_nfe": 0,
                "seconds": 0.0,
                "reason": f"{type(solver).__name__} is stochastic: it runs on the base grid {self.base!r}",
            }
        self.check(solver, sde, nfe)
        path = (
            None
            if cache_dir is None
            else Path(cache_dir) / f"grid_{self.key(model_id, sde, solver, nfe, shape, dtype)}.json"
        )
        if path is not None and path.is_file():
            fit = self.load(path)
            return fit, {**fit.report, "tuned": True, "cached": True, "pilot_nfe": 0, "seconds": 0.0, "path": str(path)}
        from sdeflow.samplers.solvers.ode import ProbabilityFlowODE

        start = time.perf_counter()
        # Pilot draws to fit on and as many held out to validate on: a fit that does not carry over keeps the base grid.
        x_T = sde.prior_sampling(
            (2 * self.pilot, *shape), seeded_generator(self.seed, PILOT), dtype=dtype, device=device
        )
        ends = torch.tensor([sde.T, sde.eps], dtype=torch.float64)
        parts = {"all": range(2 * self.pilot), "fit": range(self.pilot), "held": range(self.pilot, 2 * self.pilot)}
        scores = {part: score if condition is None else condition(score, rows) for part, rows in parts.items()}
        # One score function for every part when nothing conditions them.
        counted = {id(s): (s, s.nfe) for s in scores.values()}
        with torch.no_grad():
            tol = 1e-8 if dtype == torch.float64 else 1e-5
            ref = ProbabilityFlowODE("dopri5", rtol=self.rtol or tol, atol=self.atol or tol).sample(
                scores["all"], sde, x_T, ends
            )
            init = solver.plan(sde, self.base, nfe=nfe)
        fit, held = slice(0, self.pilot), slice(self.pilot, None)
        tuned, report = self.fit(solver, scores["fit"], sde, x_T[fit], ref.samples[fit], init, progress)
        with torch.no_grad():
            plain = self.plain(solver, sde, init)
            before, after = (
                rms_error(
                    f.sampler(solver).sample(f.wrap(scores["held"]), sde, x_T[held], f.times).samples,
                    ref.samples[held],
                )
                for f in (plain, tuned)
            )
        kept, check = no_harm(before, after)
        tuned = tuned if kept else plain
        # The one-off cost in evaluations of the pilot batch: the reference solve and every solver run of the search.
        pilot_nfe = sum(s.nfe - n0 for s, n0 in counted.values())
        report.update(
            pilot=self.pilot,
            pilot_nfe=pilot_nfe,
            reference_nfe=ref.nfe,
            model=model_id,
            nfe=int(nfe),
            **check,
            kept_tuned=kept,
            one_off_seconds=time.perf_counter() - start,
        )
        report.update(
            tuned=True, cached=False, seconds=report["one_off_seconds"], path=None if path is None else str(path)
        )
        tuned.report = report
        if path is not None:  # else no cache: this run's fit only
            path.parent.mkdir(parents=True, exist_ok=True)
            self.save(path, tuned, report)
        return tuned, report

    def __repr__(self) -> str:
        return (
            f"AutoGrid(base={self.base!r}, pilot={self.pilot}, maxiter={self.maxiter}, rtol={self.rtol}, "
            f"atol={self.atol}, seed={self.seed}, learn={self.learn}, tol={self.tol})"
        )


class AutoMultistep(AutoGrid):
    """A learned multistep table and its grid (`sdeflow.learn_multistep`: S4S's coefficients, LD3's grid), fitted to
    the model on first use from the given solver's own table on the base grid, checked on held-out pilots (the same
    no-harm test as `AutoGrid`'s) and cached like `AutoGrid`'s grids. The table then replaces the solver (`for_model`).
    The fit differentiates through the model (a forward and a backward pass of every pilot at every step per
    evaluation), so it costs more than a grid search; it is paid once.

    The table starts from the solver on a grid searched first (`optimize_grid`, derivative-free and cheap next to
    the fit): a better start than the base grid, which the joint fit then moves on from.

    Args:
        base, pilot, rtol, atol, seed, tol: as for `AutoGrid`.
        maxiter: L-BFGS iterations at most (a cap the typical fit converges under).
        history: data predictions each step weighs (default: every one made so far).
        grid_maxiter: solver runs of the grid search before the fit (None: the search's own cap per parameter;
            0: start on the base grid).
    """

    def __init__(
        self,
        base: Grid | None = None,
        pilot: int = 64,
        maxiter: int = 1000,
        history: int | None = None,
        rtol: float | None = None,
        atol: float | None = None,
        seed: int = 0,
        grid_maxiter: int | None = None,
        tol: float = TOL,
    ):
        super().__init__(base, pilot, maxiter, rtol, atol, seed, tol=tol)
        if history is not None:
            integer("history", history, accepted=" or null (every prediction)")
        if grid_maxiter is not None:
            integer("grid_maxiter", grid_maxiter, 0, accepted=" or null (the search's own cap)")
        self.history = None if history is None else int(history)
        self.grid_maxiter = None if grid_maxiter is None else int(grid_maxiter)

    def check(self, solver, sde, nfe: int) -> None:
        self.plain(solver, sde, solver.plan(sde, self.base, nfe=nfe))  # a solver that is no table is refused here

    def fit(self, solver, score, sde, x_T, reference, init, progress: bool):
        searched = None
        if self.grid_maxiter != 0:
            init, searched = optimize_grid(
                solver, score, sde, x_T, reference, init, maxiter=self.grid_maxiter, progress=progress, tol=self.tol
            )
        table, times, report = learn_multistep(
            score,
            sde,
            x_T,
            reference,
            init,
            history=self.history,
            maxiter=self.maxiter,
            progress=progress,
            start=solver,
            tol=self.tol,
        )
        if searched is not None:
            # Converged only if both stages did; each says where it stopped.
            report.update(
                grid_search_objective_before=searched["objective_before"],
                grid_search_objective_after=searched["objective_after"],
                grid_search_evaluations=searched["evaluations"],
                grid_search_converged=searched["converged"],
                seconds=report["seconds"] + searched["seconds"],
                converged=report["converged"] and searched["converged"],
                stopped=f"grid search {searched['stopped']}; table fit {report['stopped']}",
            )
        return MultistepFit(table, times), report

    def plain(self, solver, sde, init):
        return MultistepFit.of(solver, sde, init)

    def save(self, path, fit, report: dict) -> None:
        fit.table.save(path, fit.times, report)

    def load(self, path):
        return MultistepFit.load(path)

    def __repr__(self) -> str:
        return (
            f"AutoMultistep(base={self.base!r}, pilot={self.pilot}, maxiter={self.maxiter}, history={self.history}, "
            f"rtol={self.rtol}, atol={self.atol}, seed={self.seed}, grid_maxiter={self.grid_maxiter}, tol={self.tol})"
        )


def for_model(
    grid,
    score,
    sde,
    solver,
    nfe,
    shape,
    cache_dir,
    model_id: str,
    dtype=torch.float32,
    device=None,
    progress: bool = True,
    condition=None,
):
    """(the solver and grid to sample this model with, what to wrap each batch's score with, a tuning report or None).

    A grid that tunes itself to the model (`AutoGrid`, `AutoMultistep`, or any with their `tuned` method) is fitted or
    read from the cache; any other grid, a plain callable `grid(sde, steps)`, is used as it is, with the solver and
    the score unchanged. A learned multistep table replaces the solver it was fitted from. `condition`: see
    `AutoGrid.tuned`.
    """
    tuned = getattr(grid, "tuned", None)
    if tuned is None:
        return solver, grid, _unwrapped, None
    fit, report = tuned(
        score,
        sde,
        solver,
        nfe,
        shape,
        cache_dir,
        model_id,
        dtype=dtype,
        device=device,
        progress=progress,
        condition=condition,
    )
    return (solver, grid, _unwrapped, report) if fit is None else (fit.sampler(solver), fit.grid, fit.wrap, report)


def _unwrapped(score):
    return score


def describe(name: str, tuning: dict) -> str:
    """One line on where a solver's tuned grid (or learned table) came from, what it cost, what it minimised, whether it
    converged, and the acceptance test's verdict."""
    if not tuning["tuned"]:
        return f"{name}: grid not tuned ({tuning['reason']})"
    if tuning["cached"]:
        cost = "from the cache"
    else:
        cost = f"tuned once: {tuning['pilot_nfe']} pilot NFE, {tuning['seconds']:.1f} s"
    line = f"{name}: {tuning.get('method', 'grid')} {cost}"
    if "objective" in tuning:
        line += (
            f"; objective ({tuning['objective']}) {tuning['objective_before']:.3g} -> {tuning['objective_after']:.3g}, "
            f"{tuning['stopped']}"
        )
    if "acceptance" in tuning:
        line += (
            f"; acceptance ({tuning['acceptance']}, {tuning['held_out']} draws): median "
            f"{tuning['held_out_median_before']:.3g} -> {tuning['held_out_median_after']:.3g}, mean "
            f"{tuning['held_out_mean_before']:.3g} -> {tuning['held_out_mean_after']:.3g}: {tuning['verdict']}"
            + ("" if tuning["kept_tuned"] else ", so the base grid and solver are kept")
        )
    return line + (f" ({tuning['path']})" if tuning["path"] else "")
