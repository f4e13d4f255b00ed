"""Predictor-corrector sampling of the reverse SDE (Song et al. 2021, Algorithm 1)."""

from __future__ import annotations

from sdeflow.samplers.base import Sampler
from sdeflow.samplers.correctors import Corrector, NoneCorrector
from sdeflow.samplers.predictors import Predictor

__all__ = ["PCSampler"]


class PCSampler(Sampler):
    """At each grid point: corrector at t, then predictor from t to t_next; any predictor with any corrector.

    Integrates the reverse SDE. Order: the predictor's (weak). NFE per step: predictor's + corrector's.

    Args:
        predictor: a `Predictor` (EulerMaruyama, ReverseDiffusion, Ancestral, NonePredictor).
        corrector: a `Corrector` (LangevinCorrector, AnnealedLangevin, NoneCorrector); default none.
        denoise: finish with Tweedie's denoising step (one more evaluation, counted).
    """

    stochastic = True

    def __init__(self, predictor: Predictor, corrector: Corrector | None = None, denoise: bool = False):
        super().__init__(denoise=denoise)
        if not isinstance(predictor, Predictor) or (corrector is not None and not isinstance(corrector, Corrector)):
            raise TypeError(
                f"need a Predictor and a Corrector, got {type(predictor).__name__} and {type(corrector).__name__}"
            )
        corrector = corrector if corrector is not None else NoneCorrector()
        if predictor.nfe_per_step + corrector.nfe_per_step == 0:
            raise ValueError("a predictor-corrector sampler needs a predictor or a corrector; both are none")
        self.predictor = predictor
        self.corrector = corrector
        self.order = predictor.order
        self.nfe_per_step = predictor.nfe_per_step + corrector.nfe_per_step

    def step(self, score, sde, x, i, state, noise):
        sched = state.sched
        x, _ = self.corrector.update(score, sde, x, sched.t[i], sched.t[i + 1], noise)
        x, _ = self.predictor.update_on_grid(score, sde, x, sched, i, noise)
        return x, state
