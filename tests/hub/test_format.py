"""One interface for every checkpoint format: each conf/checkpoint_format entry builds a `CheckpointFormat`, whose
`load` gives a typed `Loaded` (each format's loading is tested in its own file, on the small checkpoints made there)."""

from pathlib import Path

import pytest

import sdeflow as sf
import sdeflow.hub
from sdeflow.apps.common import build
from sdeflow.hub import ADMFormat, CheckpointFormat, DiffusersFormat, EDMFormat, Loaded, ScoreSdeFormat, SdeflowFormat

from helpers import checkpoint_format

CONFIGS = sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "conf" / "checkpoint_format").glob("*.yaml"))


@pytest.mark.parametrize("option", CONFIGS)
def test_every_configured_format_is_a_checkpoint_format(option):
    fmt = build(checkpoint_format(option), "checkpoint_format")  # as sdeflow-sample and sdeflow-eval build it
    assert isinstance(fmt, CheckpointFormat) and repr(fmt).startswith(type(fmt).__name__)


def test_the_former_names_are_the_formats():
    hub = sdeflow.hub
    former = (
        hub.ADMCheckpoint,
        hub.DiffusersFolder,
        hub.EDMPickle,
        hub.ScoreSdeCheckpoint,
        hub.trained.TrainedCheckpoint,
    )
    assert former == (ADMFormat, DiffusersFormat, EDMFormat, ScoreSdeFormat, SdeflowFormat)
    assert {"ADMCheckpoint", "DiffusersFolder", "EDMPickle", "ScoreSdeCheckpoint"} <= set(sdeflow.hub.__all__)


def test_loaded_checks_its_facts_at_the_door_and_records_them():
    sde = sf.VPSDE()
    score = sf.ScoreFunction(lambda x, t: x, sde, sf.EpsPrediction())
    model = Loaded(score, sde, (3, 8, 8), "test:here", label_dim=10, details={"step": 4})
    assert model.record() == {
        "source": "test:here",
        "sde": repr(sde),
        "prediction": "EpsPrediction",
        "shape": [3, 8, 8],
        "label_dim": 10,
        "centered": True,
        "step": 4,
    }
    for shape in ([3, 8, 8], (), (3, 0, 8)):
        with pytest.raises(ValueError, match="shape must be a non-empty tuple of positive integers"):
            Loaded(score, sde, shape, "test:here")
    with pytest.raises(ValueError, match="label_dim must be an integer >= 0"):
        Loaded(score, sde, (2,), "test:here", label_dim=-1)
