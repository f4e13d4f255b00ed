"""Guidance: one class per method, holding its settings, whose `bind` gives the guided score function.

A guidance method is configured by keyword (what Hydra's `_target_` does from `conf/guidance/`) and bound
to a score function and a batch's labels: `ClassifierFreeGuidance(w=2).bind(score, labels)`. What `bind`
returns is a `ScoreFunction` whose output is the guided score (`ScorePrediction`), so every sampler runs
it unchanged. Accounting stays honest: `nfe` counts the evaluations the solver asks for, `forwards` and
`backwards` the network passes behind them, and `SampleResult` reports all three.

Weights follow Ho & Salimans: s_w = (1 + w) s_main - w s_guide, so w = 0 is the main score
(classifier-free guidance's conditional score) and w > 0 pushes away from the guide. Karras et al.'s
weight is 1 + w.

A method that must be checked against a checkpoint, or load one, does so in `prepare(model, load)`,
before any sampling. The conditioning layer sits below the checkpoint formats (`sdeflow.hub`), so
both are read by duck typing: `model` has the `shape`, `sde`, `label_dim` and `config` of a
`sdeflow.hub.format.Loaded`, and `load(path, use_ema)` returns such a model, with its `score`.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import torch

from sdeflow.core.checkpoint import CheckpointError
from sdeflow.core.tensors import append_dims, batch_times
from sdeflow.score.function import ScoreFunction, ScorePrediction


def check_interval(interval) -> tuple[float, float] | None:
    """A guidance interval (t_lo, t_hi) as two numbers, refused at the door unless t_lo <= t_hi; None stays None."""
    if interval is None:
        return None
    lo, hi = (float(v) for v in interval)
    if not lo <= hi:
        raise ValueError(f"a guidance interval is (t_lo, t_hi) with t_lo <= t_hi, got {interval!r}")
    return lo, hi


class GuidedScore(ScoreFunction):
    """Base of the guided score functions: the SDE, model and counters of `base`; outputs in score space.

    Args:
        base: the score function being guided.
        interval: (t_lo, t_hi), the times where guidance acts (Kynkaanniemi et al. 2024); outside it
            the base score is used, at one forward. None: everywhere.
    """

    def __init__(self, base: ScoreFunction, interval=None):
        super().__init__(base.model, base.sde, ScorePrediction(), **base.cond)
        self.base = base
        self.interval = check_interval(interval)

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


class Method:
    """A guidance or inverse method: its settings, given by keyword (what Hydra configures), and one `bind`.

    A positional argument is the former call form, the method built around a score function; it is
    refused in one line that shows the form to use (`usage`).
    """

    usage: ClassVar[str] = ""

    def __new__(cls, *args, **kwargs):
        if args:
            raise TypeError(
                f"{cls.__name__} takes its settings by keyword and is bound to a score afterwards: {cls.usage}"
            )
        return super().__new__(cls)

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({settings})"


class GuidanceMethod(Method, abc.ABC):
    """A way to guide a score function: `bind(score, labels)` gives the score function one batch samples with."""

    def prepare(self, model, load=None) -> None:
        """Check the settings against the checkpoint's model (duck-typed `Loaded`: its `shape`, `sde`, `label_dim`,
        `config`) and load what they need with `load(path, use_ema)`; before any sampling. Most methods need nothing."""

    @abc.abstractmethod
    def bind(self, score: ScoreFunction, labels=None) -> ScoreFunction:
        """The score function a batch samples with; `labels`: (B,) or one for all (class-conditional models) or None."""


def _labels_for(labels: torch.Tensor, n: int, who: str, device) -> torch.Tensor:
    """The (n,) labels of a batch of n: one per sample, or one for all; any other count refused in one line."""
    if len(labels) not in (1, n):
        raise ValueError(
            f"{who}: {len(labels)} labels for a batch of {n} samples; give one label per sample ({n}) or one for all"
        )
    return labels.to(device).expand(n)


def _as_labels(labels, who: str) -> torch.Tensor:
    """Class indices as a 1-D integer tensor: (B,), or one label for all; refused at the door otherwise."""
    labels = torch.as_tensor(labels)
    if labels.ndim > 1 or labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(
            f"{who}: labels are class indices, integers of shape (B,) or one for all; "
            f"got {labels.dtype} of shape {tuple(labels.shape)}"
        )
    return labels.reshape(-1)


class ClassifierFreeGuidance(GuidanceMethod):
    """(1 + w) s(x | y) - w s(x | null), both from one conditional network (Ho & Salimans 2022).

    One forward per evaluation with `batched` (the two branches in one forward of twice the batch, as
    EDM and diffusers do), two without; one where guidance does not act (w = 0, or outside `interval`).

    Args:
        w: the guidance weight (0: conditional sampling).
        interval: where guidance acts (see `GuidedScore`).
        batched: evaluate the conditional and unconditional branches in one forward, or in two.
        null_label: the label the network was trained to read as "no class" (label dropout).
        key: the keyword the model takes the labels by.
    """

    usage = "sf.ClassifierFreeGuidance(w=2.0).bind(score, labels)"

    def __init__(self, *, w: float = 0.0, interval=None, batched: bool = True, null_label: int = -1, key: str = "y"):
        self.w, self.interval, self.batched = float(w), check_interval(interval), bool(batched)
        self.null_label, self.key = int(null_label), str(key)

    def prepare(self, model, load=None):
        if self.w != 0 and not getattr(model, "label_dim", 0):
            raise ValueError(
                f"classifier-free guidance at w={self.w:g} needs a class-conditional model; this checkpoint's is "
                "unconditional (guide it with autoguidance)"
            )

    def bind(self, score, labels=None):
        """The guided score of the batch with `labels`; without labels (an unconditional model), at w = 0, the score."""
        if labels is None:
            if self.w != 0:
                raise ValueError(f"classifier-free guidance at w={self.w:g} needs the batch's labels")
            return score
        return _ClassifierFreeScore(score, _as_labels(labels, "ClassifierFreeGuidance"), self)


class _ClassifierFreeScore(GuidedScore):
    def __init__(self, base, labels, method: ClassifierFreeGuidance):
        super().__init__(base, method.interval)
        self.labels, self.method = labels, method

    def guided(self, x, t, alpha, sigma, active):
        m = self.method
        labels = _labels_for(self.labels, len(x), "ClassifierFreeGuidance", x.device)
        if m.w == 0 or not bool(active.any()):
            return self.base_score(self.base, x, t, alpha, sigma, **{m.key: labels})
        null = torch.full_like(labels, m.null_label)
        if m.batched:
            both = self.base_score(
                self.base,
                torch.cat([x, x]),
                torch.cat([t, t]),
                _twice(alpha),
                _twice(sigma),
                **{m.key: torch.cat([labels, null])},
            )
            cond, uncond = both[: len(x)], both[len(x) :]
        else:
            cond = self.base_score(self.base, x, t, alpha, sigma, **{m.key: labels})
            uncond = self.base_score(self.base, x, t, alpha, sigma, **{m.key: null})
        return mix(active, (1 + m.w) * cond - m.w * uncond, cond)


class Autoguidance(GuidanceMethod):
    """(1 + w) s_main - w s_weak: a weaker model (smaller, or trained less) guides the main one (Karras et al. 2024).

    Two forwards per evaluation (two networks) where guidance acts, one elsewhere. Works for
    unconditional and class-conditional models: labels, when bound, go to both.

    Args:
        w: the guidance weight (0: the main model alone).
        interval: where guidance acts (see `GuidedScore`).
        checkpoint: the weak model's checkpoint, loaded by `prepare(model, load)` and checked there
            against the main model (its sample shape, SDE and labels).
        use_ema: load the weak model's EMA weights.
        weak: the weak model's score function itself (from Python, instead of a checkpoint).
    """

    usage = "sf.Autoguidance(w=1.0, weak=weak_score).bind(score, labels)"

    def __init__(
        self,
        *,
        w: float = 1.0,
        interval=None,
        checkpoint: str | None = None,
        use_ema: bool = True,
        weak: ScoreFunction | None = None,
    ):
        self.w, self.interval = float(w), check_interval(interval)
        self.checkpoint, self.use_ema = None if checkpoint is None else str(checkpoint), bool(use_ema)
        self._weak = weak

    def prepare(self, model, load=None):
        if self.checkpoint is None:
            if self._weak is None:
                raise ValueError("autoguidance needs a weak model: checkpoint=<path> (or weak=<score function>)")
            return
        if load is None:
            raise ValueError(f"autoguidance loads its weak model from {self.checkpoint}: prepare(model, load)")
        weak = load(self.checkpoint, self.use_ema)
        where = f"guidance.checkpoint={self.checkpoint}"
        if tuple(weak.shape) != tuple(model.shape):
            raise CheckpointError(
                f"{where}: the weak model makes samples of shape {list(weak.shape)}, the main model {list(model.shape)}"
            )
        # Two sdeflow checkpoints are compared by their stored SDE configs; another format's main model by its SDE.
        same_sde = weak.config["sde"] == model.config["sde"] if model.config is not None else weak.sde == model.sde
        if not same_sde:
            raise CheckpointError(
                f"{where}: the weak model was trained on another SDE ({weak.config['sde'].get('_target_')}, "
                f"{weak.config['sde']}); autoguidance needs the main model's"
            )
        if weak.label_dim != model.label_dim:
            raise CheckpointError(
                f"{where}: the weak model has label_dim={weak.label_dim}, the main model {model.label_dim}; "
                "they must read the same labels"
            )
        self._weak = weak.score

    def bind(self, score, labels=None):
        if self._weak is None:
            raise ValueError(
                "Autoguidance has no weak model: give weak=<score function>, or checkpoint=<path> and prepare"
            )
        labels = None if labels is None else _as_labels(labels, "Autoguidance")
        return _AutoguidedScore(score, self._weak, labels, self.w, self.interval)


class _AutoguidedScore(GuidedScore):
    def __init__(self, main, weak, labels, w, interval):
        super().__init__(main, interval)
        if weak.sde != main.sde:
            raise ValueError(
                f"the guiding model reads its network through {weak.sde!r}, the main one through {main.sde!r}"
            )
        self.weak, self.labels, self.w = weak, labels, w

    def guided(self, x, t, alpha, sigma, active):
        cond = {} if self.labels is None else {"y": _labels_for(self.labels, len(x), "Autoguidance", x.device)}
        main = self.base_score(self.base, x, t, alpha, sigma, **cond)
        if not bool(active.any()):
            return main
        weak = self.base_score(self.weak, x, t, alpha, sigma, **cond)
        return mix(active, (1 + self.w) * main - self.w * weak, main)


class ClassifierGuidance(GuidanceMethod):
    """s(x) + scale grad_x log p_t(y | x), from a noise-aware classifier (Dhariwal & Nichol 2021).

    One forward of the score network, plus a forward and a backward of the classifier (counted in
    `forwards` and `backwards`). With the exact p_t(y | x) and scale 1 it is the conditional score.

    Args:
        classifier: `classifier(x, t) -> (B, classes)` log-probabilities, differentiable in x.
        scale: the guidance scale.
        interval: where guidance acts (see `GuidedScore`).
    """

    usage = "sf.ClassifierGuidance(classifier=classifier, scale=1.0).bind(score, labels)"

    def __init__(self, *, classifier, scale: float = 1.0, interval=None):
        if not callable(classifier):
            raise TypeError(f"classifier must be callable as classifier(x, t), got {type(classifier).__name__}")
        self.classifier, self.scale, self.interval = classifier, float(scale), check_interval(interval)

    def bind(self, score, labels=None):
        if labels is None:
            raise ValueError("classifier guidance guides towards classes: bind(score, labels)")
        return _ClassifierGuidedScore(score, _as_labels(labels, "ClassifierGuidance"), self)


class _ClassifierGuidedScore(GuidedScore):
    def __init__(self, base, labels, method: ClassifierGuidance):
        super().__init__(base, method.interval)
        self.labels, self.method = labels, method

    def guided(self, x, t, alpha, sigma, active):
        score = self.base_score(self.base, x, t, alpha, sigma)
        if not bool(active.any()):
            return score
        labels = _labels_for(self.labels, len(x), "ClassifierGuidance", x.device)
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            logp = self.method.classifier(xg, t)
            self.forwards += 1
            if not isinstance(logp, torch.Tensor) or logp.ndim != 2 or len(logp) != len(x):
                got = tuple(logp.shape) if isinstance(logp, torch.Tensor) else type(logp).__name__
                raise ValueError(
                    f"ClassifierGuidance: the classifier returned {got}; it must return log-probabilities of shape "
                    f"(B, classes) = ({len(x)}, classes)"
                )
            if int(labels.max()) >= logp.shape[1] or int(labels.min()) < 0:
                raise ValueError(
                    f"ClassifierGuidance: labels must be classes in 0..{logp.shape[1] - 1} (the classifier's "
                    f"{logp.shape[1]} outputs), got {int(labels.min())}..{int(labels.max())}"
                )
            (grad,) = torch.autograd.grad(logp.gather(1, labels[:, None]).sum(), xg)
            self.backwards += 1
        return mix(active, score + self.method.scale * grad.to(x.dtype), score)


class DynamicThresholding(GuidanceMethod):
    """Clip the x0 prediction (Saharia et al. 2022) and read the score back from it: a hook on the denoiser.

    s = the `percentile` of |x0| per sample, at least `max_value`; x0 <- clamp(x0, -s, s) * max_value / s.
    With `percentile` = 1 and a large bound it is plain clipping to [-max_value, max_value]. Strong
    guidance weights push x0 outside the data range; this keeps it there, at no extra forward.

    It thresholds what `guidance` gives (`guidance.bind(score, labels)`), or, without one, the score
    with the labels bound as `y`; it binds like every guidance method, so it composes with any.

    Args:
        percentile: the share of |x0| kept unscaled, in (0, 1].
        max_value: the data's bound.
        guidance: the guidance method whose score is thresholded (None: the plain score).
    """

    usage = "sf.DynamicThresholding(percentile=0.995, guidance=sf.ClassifierFreeGuidance(w=4.0)).bind(score, labels)"

    def __init__(self, *, percentile: float = 0.995, max_value: float = 1.0, guidance: GuidanceMethod | None = None):
        if not 0 < percentile <= 1 or not max_value > 0:
            raise ValueError(f"need 0 < percentile <= 1 and max_value > 0, got {percentile}, {max_value}")
        self.percentile, self.max_value, self.guidance = float(percentile), float(max_value), guidance

    def prepare(self, model, load=None):
        if self.guidance is not None:
            self.guidance.prepare(model, load)

    def bind(self, score, labels=None):
        if self.guidance is not None:
            score = self.guidance.bind(score, labels)
        elif labels is not None:
            score = score.condition(y=labels)
        return _ThresholdedScore(score, self.percentile, self.max_value)


class _ThresholdedScore(GuidedScore):
    def __init__(self, base, percentile, max_value):
        super().__init__(base)
        self.percentile, self.max_value = percentile, max_value

    def guided(self, x, t, alpha, sigma, active):
        a = append_dims(torch.as_tensor(alpha, dtype=x.dtype, device=x.device), x.ndim)
        s = append_dims(torch.as_tensor(sigma, dtype=x.dtype, device=x.device), x.ndim)
        score = self.base_score(self.base, x, t, alpha, sigma)  # any score function, guided ones included
        x0 = (x + s**2 * score) / a
        bound = torch.quantile(x0.abs().flatten(1), self.percentile, dim=1).clamp_min(self.max_value)
        bound = append_dims(bound, x.ndim)
        x0 = x0.clamp(-bound, bound) * (self.max_value / bound)
        return (a * x0 - x) / s**2
