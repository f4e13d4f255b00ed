"""Guidance: score functions built from other score functions, so that every sampler runs them unchanged.

Each wrapper is a `ScoreFunction` whose output is the guided score (`ScorePrediction`): a solver
asks it for eps, x0 or the score as from any model. Accounting stays honest: `nfe` counts the
evaluations the solver asks for, `forwards` and `backwards` the network passes behind them, and
`SampleResult` reports all three.

Weights follow Ho & Salimans: s_w = (1 + w) s_main - w s_guide, so w = 0 is the main score
(classifier-free guidance's conditional score) and w > 0 pushes away from the guide. Karras et al.'s
weight is 1 + w.
"""

from __future__ import annotations

import torch

from sdeflow.core.tensors import append_dims, batch_times
from sdeflow.score.function import ScoreFunction, ScorePrediction


class GuidedScore(ScoreFunction):
    """Base of the wrappers: the SDE, model and counters of `base`; outputs in score space.

    Args:
        base: the score function being guided.
        interval: (t_lo, t_hi), the times where guidance acts (Kynkaanniemi et al. 2024); outside it
            the base score is used, at one forward. None: everywhere.
    """

    def __init__(self, base: ScoreFunction, interval=None):
        super().__init__(base.model, base.sde, ScorePrediction(), **base.cond)
        self.base = base
        if interval is not None:
            lo, hi = (float(v) for v in interval)
            if not lo <= hi:
                raise ValueError(f"a guidance interval is (t_lo, t_hi) with t_lo <= t_hi, got {interval!r}")
            interval = (lo, hi)
        self.interval = interval

    def condition(self, **cond) -> ScoreFunction:
        raise TypeError(
            f"{type(self).__name__} is already built around its score function: bind conditioning into that "
            "one (score.condition(...)) before guiding it"
        )

    def active(self, t: torch.Tensor) -> torch.Tensor:
        """Where guidance acts: a boolean per sample."""
        if self.interval is None:
            return torch.ones_like(t, dtype=torch.bool)
        return (t >= self.interval[0]) & (t <= self.interval[1])

    def evaluate(self, x, t, coef=None):
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        alpha, sigma = coef if coef is not None else (self.sde.alpha(t), self.sde.sigma(t))
        self.nfe += 1
        tb = batch_times(t, x)
        active = self.active(tb)
        out = self.guided(x, tb, alpha, sigma, active)
        return out.to(x.dtype), append_dims(alpha, x.ndim), append_dims(sigma, x.ndim)

    def base_score(self, score: ScoreFunction, x, t, alpha, sigma, **cond) -> torch.Tensor:
        """One evaluation of `score` (with extra conditioning bound), read as a score; its network passes
        are added to this wrapper's counters, so wrappers of wrappers count every pass once."""
        if cond:
            score = score.condition(**cond)
        passes = score.forwards, score.backwards
        out, a, s = score.evaluate(x, t, (alpha, sigma))
        self.forwards += score.forwards - passes[0]
        self.backwards += score.backwards - passes[1]
        return score.prediction.to_score(out, x, a, s)

    def score_and_x0(self, x, t, alpha, sigma):
        """(x as a leaf that records gradients, the base score there, Tweedie's x0 = (x + sigma^2 s) / alpha), under
        enable_grad: for methods that differentiate through the network."""
        a = append_dims(torch.as_tensor(alpha, dtype=x.dtype, device=x.device), x.ndim)
        s = append_dims(torch.as_tensor(sigma, dtype=x.dtype, device=x.device), x.ndim)
        xg = x.detach().requires_grad_(True)
        score = self.base_score(self.base, xg, t, alpha, sigma)
        return xg, score, (xg + s**2 * score) / a

    def guided(self, x, t, alpha, sigma, active) -> torch.Tensor:
        raise NotImplementedError


def _twice(v):
    """A coefficient for a batch stacked twice: a scalar as it is, a per-sample one repeated."""
    v = torch.as_tensor(v)
    return v if v.ndim == 0 else torch.cat([v, v])


def mix(active, guided, plain):
    """The guided score where guidance acts, the plain one elsewhere."""
    return torch.where(append_dims(active, guided.ndim), guided, plain)


class ClassifierFreeGuidance(GuidedScore):
    """(1 + w) s(x | y) - w s(x | null), both from one conditional network (Ho & Salimans 2022).

    Args:
        base: the conditional score function (its model takes the labels as keyword `key`).
        labels: (B,) class labels of the batch.
        w: the guidance weight (0: conditional sampling).
        null_label: the label the network was trained to read as "no class" (label dropout).
        batched: evaluate the conditional and unconditional branches in one forward of twice the
            batch (1 forward per evaluation, as EDM and diffusers do), or in two forwards.
        interval: where guidance acts (see `GuidedScore`).
    """

    def __init__(
        self,
        base: ScoreFunction,
        labels,
        w: float,
        null_label: int = -1,
        key: str = "y",
        batched: bool = True,
        interval=None,
    ):
        super().__init__(base, interval)
        self.labels, self.w, self.null_label, self.key, self.batched = (
            torch.as_tensor(labels),
            float(w),
            int(null_label),
            key,
            bool(batched),
        )

    def guided(self, x, t, alpha, sigma, active):
        labels = self.labels.to(x.device).reshape(-1).expand(len(x))
        if not bool(active.any()):
            return self.base_score(self.base, x, t, alpha, sigma, **{self.key: labels})
        null = torch.full_like(labels, self.null_label)
        if self.batched:
            both = self.base_score(
                self.base,
                torch.cat([x, x]),
                torch.cat([t, t]),
                _twice(alpha),
                _twice(sigma),
                **{self.key: torch.cat([labels, null])},
            )
            cond, uncond = both[: len(x)], both[len(x) :]
        else:
            cond = self.base_score(self.base, x, t, alpha, sigma, **{self.key: labels})
            uncond = self.base_score(self.base, x, t, alpha, sigma, **{self.key: null})
        return mix(active, (1 + self.w) * cond - self.w * uncond, cond)


class Autoguidance(GuidedScore):
    """(1 + w) s_main - w s_weak: a weaker model (smaller, or trained less) guides the main one (Karras et al. 2024).

    Two forwards per evaluation (two networks) where guidance acts, one elsewhere.
    """

    def __init__(self, main: ScoreFunction, weak: ScoreFunction, w: float, interval=None):
        super().__init__(main, interval)
        if weak.sde != main.sde:
            raise ValueError(
                f"the guiding model reads its network through {weak.sde!r}, the main one through {main.sde!r}"
            )
        self.weak, self.w = weak, float(w)

    def guided(self, x, t, alpha, sigma, active):
        main = self.base_score(self.base, x, t, alpha, sigma)
        if not bool(active.any()):
            return main
        weak = self.base_score(self.weak, x, t, alpha, sigma)
        return mix(active, (1 + self.w) * main - self.w * weak, main)


class ClassifierGuidance(GuidedScore):
    """s(x) + scale grad_x log p_t(y | x), from a noise-aware classifier (Dhariwal & Nichol 2021).

    One forward of the score network, plus a forward and a backward of the classifier (counted in
    `forwards` and `backwards`). With the exact p_t(y | x) and scale 1 it is the conditional score.

    Args:
        base: the unconditional score function.
        classifier: `classifier(x, t) -> (B, classes)` log-probabilities, differentiable in x.
        labels: (B,) the classes to guide towards.
        scale: the guidance scale.
    """

    def __init__(self, base: ScoreFunction, classifier, labels, scale: float = 1.0, interval=None):
        super().__init__(base, interval)
        if not callable(classifier):
            raise TypeError(f"classifier must be callable as classifier(x, t), got {type(classifier).__name__}")
        self.classifier, self.labels, self.scale = classifier, torch.as_tensor(labels), float(scale)

    def guided(self, x, t, alpha, sigma, active):
        score = self.base_score(self.base, x, t, alpha, sigma)
        if not bool(active.any()):
            return score
        labels = self.labels.to(x.device).reshape(-1).expand(len(x))
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            logp = self.classifier(xg, t)
            self.forwards += 1
            (grad,) = torch.autograd.grad(logp.gather(1, labels[:, None]).sum(), xg)
            self.backwards += 1
        return mix(active, score + self.scale * grad.to(x.dtype), score)


class DynamicThresholding(GuidedScore):
    """Clip the x0 prediction (Saharia et al. 2022) and read the score back from it: a hook on the denoiser.

    s = the `percentile` of |x0| per sample, at least `max_value`; x0 <- clamp(x0, -s, s) * max_value / s.
    With `percentile` = 1 and a large bound it is plain clipping to [-max_value, max_value]. Strong
    guidance weights push x0 outside the data range; this keeps it there, at no extra forward.
    """

    def __init__(self, base: ScoreFunction, percentile: float = 0.995, max_value: float = 1.0):
        super().__init__(base)
        if not 0 < percentile <= 1 or not max_value > 0:
            raise ValueError(f"need 0 < percentile <= 1 and max_value > 0, got {percentile}, {max_value}")
        self.percentile, self.max_value = float(percentile), float(max_value)

    def guided(self, x, t, alpha, sigma, active):
        a = append_dims(torch.as_tensor(alpha, dtype=x.dtype, device=x.device), x.ndim)
        s = append_dims(torch.as_tensor(sigma, dtype=x.dtype, device=x.device), x.ndim)
        score = self.base_score(self.base, x, t, alpha, sigma)  # any score function, guided ones included
        x0 = (x + s**2 * score) / a
        bound = torch.quantile(x0.abs().flatten(1), self.percentile, dim=1).clamp_min(self.max_value)
        bound = append_dims(bound, x.ndim)
        x0 = x0.clamp(-bound, bound) * (self.max_value / bound)
        return (a * x0 - x) / s**2
