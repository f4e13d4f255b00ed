"""Score functions: one object that reads a model in any parameterisation and counts its calls.

A model predicts one of score, noise (eps), clean data (x0) or v. With x_t = alpha x_0 + sigma eps,
every other quantity follows through the SDE's alpha(t) and sigma(t); samplers ask for the one
their update is written in (`score`, `eps` or `x0`) and never see the model's choice.

Conditioning (class labels, guidance scales, masks) is bound into the score function with
`condition(...)` or by wrapping it: solvers only ever call `score_fn(x, t)`.
"""

from __future__ import annotations

import abc

import torch

from sdeflow.core.tensors import append_dims, as_times, batch_times


class Prediction(abc.ABC):
    """What a network outputs; converts that output to (eps, x0) given x_t = alpha x0 + sigma eps."""

    @abc.abstractmethod
    def to_eps_x0(self, out, x, alpha, sigma) -> tuple[torch.Tensor, torch.Tensor]:
        """(eps, x0) implied by the network output `out` at x; alpha and sigma broadcast against x."""

    @abc.abstractmethod
    def from_eps_x0(self, eps, x0, alpha, sigma) -> torch.Tensor:
        """The network target corresponding to the true eps and x0 (used by training losses)."""

    # Solvers usually need one of the two: a prediction that gives it directly skips the other's arithmetic.
    def to_eps(self, out, x, alpha, sigma) -> torch.Tensor:
        return self.to_eps_x0(out, x, alpha, sigma)[0]

    def to_x0(self, out, x, alpha, sigma) -> torch.Tensor:
        return self.to_eps_x0(out, x, alpha, sigma)[1]

    def to_score(self, out, x, alpha, sigma) -> torch.Tensor:
        return self.to_eps(out, x, alpha, sigma) / -sigma

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class ScorePrediction(Prediction):
    """out = grad_x log p_t(x) = -eps / sigma."""

    def to_eps_x0(self, out, x, alpha, sigma):
        return -sigma * out, (x + sigma**2 * out) / alpha

    def from_eps_x0(self, eps, x0, alpha, sigma):
        return -eps / sigma

    def to_eps(self, out, x, alpha, sigma):
        return -sigma * out

    def to_score(self, out, x, alpha, sigma):
        return out


class EpsPrediction(Prediction):
    """out = eps, the noise added to alpha x0 (DDPM)."""

    def to_eps_x0(self, out, x, alpha, sigma):
        return out, (x - sigma * out) / alpha

    def from_eps_x0(self, eps, x0, alpha, sigma):
        return eps

    def to_eps(self, out, x, alpha, sigma):
        return out


class X0Prediction(Prediction):
    """out = x0, the clean data (a denoiser D(x; sigma), as in EDM)."""

    def to_eps_x0(self, out, x, alpha, sigma):
        return (x - alpha * out) / sigma, out

    def from_eps_x0(self, eps, x0, alpha, sigma):
        return x0

    def to_x0(self, out, x, alpha, sigma):
        return out


class VPrediction(Prediction):
    """out = v = alpha eps - sigma x0 (Salimans & Ho 2022), for any alpha, sigma."""

    def to_eps_x0(self, out, x, alpha, sigma):
        norm = alpha**2 + sigma**2
        return (alpha * out + sigma * x) / norm, (alpha * x - sigma * out) / norm

    def from_eps_x0(self, eps, x0, alpha, sigma):
        return alpha * eps - sigma * x0


class FlowPrediction(Prediction):
    """out = eps - x0: the velocity dx/dt of a flow-matching / rectified-flow model on `sdeflow.FlowSDE`
    (alpha = 1 - t, sigma = t).

    The conversion holds on any schedule, x0 = (x - sigma out) / (alpha + sigma) and
    eps = (x + alpha out) / (alpha + sigma), and needs no division by alpha, so it stays finite at t = 1 where
    alpha = 0.
    """

    def to_eps_x0(self, out, x, alpha, sigma):
        total = alpha + sigma
        return (x + alpha * out) / total, (x - sigma * out) / total

    def from_eps_x0(self, eps, x0, alpha, sigma):
        return eps - x0


class ScoreFunction:
    """A model of grad log p_t read through an SDE, counting every model evaluation in `nfe`.

    `nfe` counts the evaluations a solver asks for; `forwards` and `backwards` count the network's
    forward and backward passes behind them (the same as `nfe` and 0 here; guidance that evaluates two
    networks, or differentiates one, counts them apart: `sdeflow.conditioning.guidance`).

    Args:
        model: callable `model(x, t, **cond)`; t is a (batch,) tensor of SDE times.
        sde: the forward SDE whose alpha(t), sigma(t) relate the parameterisations.
        prediction: what `model` outputs (default: the score itself).
        **cond: conditioning passed through to every model call.
    """

    def __init__(self, model, sde, prediction: Prediction | None = None, **cond):
        if not callable(model):
            raise TypeError(f"model must be callable as model(x, t), got {type(model).__name__}")
        self.model = model
        self.sde = sde
        self.prediction = prediction if prediction is not None else ScorePrediction()
        self.cond = cond
        self.nfe = 0
        self.forwards = 0
        self.backwards = 0

    def condition(self, **cond) -> "ScoreFunction":
        """A score function with extra conditioning bound; it shares nothing mutable with this one."""
        return ScoreFunction(self.model, self.sde, self.prediction, **{**self.cond, **cond})

    def evaluate(self, x: torch.Tensor, t, coef=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One model evaluation at (x, t): (output, alpha(t), sigma(t)), the coefficients shaped to broadcast against x.

        `coef`: (alpha(t), sigma(t)) when the caller has them already (a solver at a grid point reads
        them from its `Schedule`), which saves recomputing them at every evaluation.
        """
        t = as_times(t, x)
        # alpha and sigma of a scalar time (every grid solver's case) are a few scalar operations, not per-sample ones.
        alpha, sigma = coef if coef is not None else (self.sde.alpha(t), self.sde.sigma(t))
        alpha, sigma = append_dims(alpha, x.ndim), append_dims(sigma, x.ndim)
        self.nfe += 1
        self.forwards += 1
        out = self.model(x, batch_times(t, x), **self.cond)
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(
                f"the score model returned {got} for input of shape {tuple(x.shape)}; it must return a tensor of "
                "the input's shape"
            )
        # A model that computes in another precision (e.g. under autocast) must not change the samples' dtype.
        return (out if out.dtype == x.dtype else out.to(x.dtype)), alpha, sigma

    def eps_x0(self, x: torch.Tensor, t, coef=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Predicted noise and clean data at (x, t), from one model evaluation (`coef`: see `evaluate`)."""
        return self.prediction.to_eps_x0(*self._with_x(x, t, coef))

    def _with_x(self, x, t, coef):
        out, alpha, sigma = self.evaluate(x, t, coef)
        return out, x, alpha, sigma

    def eps(self, x, t, coef=None):
        """Predicted noise eps."""
        return self.prediction.to_eps(*self._with_x(x, t, coef))

    def x0(self, x, t, coef=None):
        """Predicted clean data (Tweedie's denoiser)."""
        return self.prediction.to_x0(*self._with_x(x, t, coef))

    def score(self, x, t, coef=None):
        """grad_x log p_t(x) = -eps / sigma."""
        return self.prediction.to_score(*self._with_x(x, t, coef))

    __call__ = score

    def v(self, x, t):
        """v = alpha eps - sigma x0."""
        out, alpha, sigma = self.evaluate(x, t)
        eps, x0 = self.prediction.to_eps_x0(out, x, alpha, sigma)
        return alpha * eps - sigma * x0

    def __repr__(self) -> str:
        return f"ScoreFunction({self.model!r}, {self.sde!r}, {self.prediction!r})"
