"""`sdeflow-sample`'s guidance (`conf/guidance/`): how each batch's score is guided, from settings.

A setting is checked against the checkpoint before any sampling (`prepare`), then wraps each batch's
score with that batch's labels (`wrap`), so the samplers see a plain score function.
"""

from __future__ import annotations

import abc

from sdeflow.conditioning.guidance import Autoguidance, ClassifierFreeGuidance
from sdeflow.core.checkpoint import CheckpointError
from sdeflow.hub.format import Loaded
from sdeflow.hub.trained import load_trained


class Guidance(abc.ABC):
    """How a batch's score is guided."""

    w: float

    def prepare(self, model: Loaded, device) -> None:
        """Check the settings against the checkpoint's model (its shape, SDE and label count); load what they need."""

    @abc.abstractmethod
    def wrap(self, score, labels):
        """The score function one batch samples with; `labels` (B,) for a class-conditional model, else None."""

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in vars(self).items() if not k.startswith('_'))})"
        )


def _interval(interval):
    return None if interval is None else tuple(float(v) for v in interval)


class ClassifierFree(Guidance):
    """Classifier-free guidance (1 + w) s(x | y) - w s(x) of a class-conditional model; w = 0 samples s(x | y).

    `batched`: both branches in one forward of twice the batch (else two forwards).
    """

    def __init__(self, w: float = 0.0, interval=None, batched: bool = True):
        self.w, self.interval, self.batched = float(w), _interval(interval), bool(batched)

    def prepare(self, model, device):
        if self.w != 0 and not model.label_dim:
            raise ValueError(
                f"guidance.w={self.w:g} needs a class-conditional model; this checkpoint's is unconditional "
                "(guide it with guidance=autoguidance)"
            )

    def wrap(self, score, labels):
        if labels is None:
            return score
        if self.w == 0:
            return score.condition(y=labels)
        return ClassifierFreeGuidance(
            score, labels, self.w, null_label=-1, batched=self.batched, interval=self.interval
        )


class AutoGuided(Guidance):
    """Autoguidance (Karras et al. 2024): (1 + w) s(x) - w s_weak(x), the weak model a checkpoint of the same SDE
    and labels (fewer steps, a smaller network). Two forwards per evaluation, both counted."""

    def __init__(self, checkpoint: str, w: float = 1.0, use_ema: bool = True, interval=None):
        self.checkpoint, self.w, self.use_ema, self.interval = (
            str(checkpoint),
            float(w),
            bool(use_ema),
            _interval(interval),
        )
        self._weak = None

    def prepare(self, model, device):
        weak = load_trained(self.checkpoint, self.use_ema, device)
        if weak.shape != model.shape:
            raise CheckpointError(
                f"guidance.checkpoint={self.checkpoint}: the weak model makes samples of shape "
                f"{list(weak.shape)}, the main model {list(model.shape)}"
            )
        # Two sdeflow checkpoints are compared by their stored SDE configs; another format's main model by its SDE.
        same_sde = weak.config["sde"] == model.config["sde"] if model.config is not None else weak.sde == model.sde
        if not same_sde:
            raise CheckpointError(
                f"guidance.checkpoint={self.checkpoint}: the weak model was trained on another SDE "
                f"({weak.config['sde'].get('_target_')}, {weak.config['sde']}); "
                "autoguidance needs the main model's"
            )
        if weak.label_dim != model.label_dim:
            raise CheckpointError(
                f"guidance.checkpoint={self.checkpoint}: the weak model has label_dim="
                f"{weak.label_dim}, the main model {model.label_dim}; they must read the same labels"
            )
        self._weak = weak.score

    def wrap(self, score, labels):
        if self._weak is None:
            raise RuntimeError("AutoGuided.prepare(...) loads the weak model before wrap")
        weak = self._weak
        if labels is not None:
            score, weak = score.condition(y=labels), weak.condition(y=labels)
        return Autoguidance(score, weak, self.w, interval=self.interval)
