"""What a checkpoint format is: one loader class (`CheckpointFormat`), and what it gives the apps (`Loaded`).

`conf/checkpoint_format/*.yaml` names one class per format (`_target_: sdeflow.hub.EDMFormat`, ...); the
apps build it and call `.load(path, use_ema, device)`, and read every fact about the model from the
typed fields of the `Loaded` it returns, whichever format it came from.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

from sdeflow.score.function import ScoreFunction
from sdeflow.sde.base import SDE


@dataclass(frozen=True)
class Loaded:
    """A checkpoint read by a `CheckpointFormat`: the score model, the SDE to sample it on, and the facts the apps need.

    Args:
        score: the model read as a score function (its `prediction` says what the network outputs).
        sde: the SDE it was trained on, the default to sample it on.
        shape: one sample's shape, e.g. (3, 32, 32).
        source: what was read (`<format>:<path>`), for messages and the run record.
        label_dim: the classes of a class-conditional model (0: unconditional).
        centered: the data are in [-1, 1] (else [0, 1]); every foreign format's are.
        dataset: the stored config node of the training data (sdeflow's own checkpoints only). It is data:
            rebuild it through `sdeflow.hub.safe_config.rebuild`, never Hydra's `instantiate`.
        config: the whole stored run config of an sdeflow checkpoint, as plain dicts and lists (else None).
        details: per-format facts worth recording, such as EDM's preconditioner (`precond`) or the training `step`.
    """

    score: ScoreFunction
    sde: SDE
    shape: tuple[int, ...]
    source: str
    label_dim: int = 0
    centered: bool = True
    dataset: dict | None = None
    config: dict | None = None
    details: dict = field(default_factory=dict)

    def __post_init__(self):
        shape = self.shape
        if not isinstance(shape, tuple) or not shape or not all(isinstance(n, int) and n > 0 for n in shape):
            raise ValueError(f"shape must be a non-empty tuple of positive integers, got {shape!r}")
        if isinstance(self.label_dim, bool) or not isinstance(self.label_dim, int) or self.label_dim < 0:
            raise ValueError(f"label_dim must be an integer >= 0, got {self.label_dim!r}")

    def record(self) -> dict:
        """The facts a run records about its model: source, SDE, prediction, shape, classes, data range and details."""
        return {
            "source": self.source,
            "sde": repr(self.sde),
            "prediction": type(self.score.prediction).__name__,
            "shape": list(self.shape),
            "label_dim": self.label_dim,
            "centered": self.centered,
            **self.details,
        }


class CheckpointFormat(abc.ABC):
    """One kind of checkpoint file or folder, read into a `Loaded` model (`checkpoint_format=<entry>` in the apps).

    The contract every format keeps:

    - A file is data, never code: weights come from safetensors or `torch.load(weights_only=True)`,
      pickles through `sdeflow.hub.safe_pickle` (nothing they name is called), stored configs through
      `sdeflow.hub.safe_config`'s allow-list (never Hydra's `instantiate`).
    - Strict: every stored tensor is used and every shape checked against the network the format
      describes (`sdeflow.hub.strict.load_strict`), so a checkpoint of another config is refused
      rather than half-loaded.
    - Anything wrong (a missing, damaged, unsafe or mismatched file) raises
      `sdeflow.core.checkpoint.CheckpointError` with one line naming the file and what differs.
    - Nothing is downloaded: `path` is a local file or folder.
    """

    @abc.abstractmethod
    def load(self, path, use_ema: bool = True, device="cpu") -> Loaded:
        """The checkpoint at `path`, on `device`, in eval mode without gradients.

        `use_ema`: the averaged weights rather than the raw ones, where the checkpoint holds both
        (formats that publish one set of weights ignore it).
        """

    def __repr__(self) -> str:
        # A configured format (ADM's, score_sde's) is told apart by the published model it reads.
        return f"{type(self).__name__}({vars(self).get('name') or ''})"
