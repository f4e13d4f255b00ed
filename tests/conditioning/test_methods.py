"""One pattern for guidance and inverse methods: one library class per method, configured by keyword, with one bind."""

import inspect

import pytest
from hydra.utils import instantiate

import sdeflow as sf
from sdeflow.apps.common import config_dir
from sdeflow.conditioning.guidance import GuidanceMethod
from sdeflow.conditioning.inverse import InverseMethod

from helpers import compose_config

GROUPS = {"guidance": GuidanceMethod, "inverse": InverseMethod}
CONFIGS = [(group, p.stem) for group in GROUPS for p in sorted((config_dir() / group).glob("*.yaml"))]


@pytest.mark.parametrize("group, option", CONFIGS, ids=[f"{g}={o}" for g, o in CONFIGS])
def test_every_config_builds_a_library_class_with_bind(group, option):
    extra = ["guidance.checkpoint=weak.pt"] if option == "autoguidance" else []  # its one mandatory setting
    cfg = compose_config("sample", f"{group}={option}", *extra)
    method = instantiate(cfg[group])
    cls = type(method)
    assert cls.__module__.startswith("sdeflow.conditioning.") and not cls.__module__.startswith("sdeflow.apps")
    assert isinstance(method, GROUPS[group]) and callable(method.bind)
    assert list(inspect.signature(method.bind).parameters)[: 2 if group == "guidance" else 6] == (
        ["score", "labels"] if group == "guidance" else ["score", "sde", "solver", "operator", "y", "noise_std"]
    )


def test_the_former_names_are_the_classes_and_the_former_call_form_is_refused_in_one_line():
    assert sf.inverse.DPSMethod is sf.inverse.DPS and sf.inverse.PiGDMMethod is sf.inverse.PiGDM
    assert sf.inverse.RePaintMethod is sf.inverse.RePaint and sf.inverse.ReplacementMethod is sf.inverse.Replacement
    from sdeflow.conditioning.inverse.methods import DPSMethod

    assert DPSMethod is sf.inverse.DPS
    score = sf.ScoreFunction(sf.GaussianMixture.random(dim=2).score_fn(sf.VPSDE()), sf.VPSDE())
    op = sf.inverse.Inpainting([1.0, 0.0])
    for former, new in (
        (lambda: sf.inverse.DPS(score, op, [0.0, 0.0], 0.1), r"sf\.inverse\.DPS\(zeta=1\.0\)\.bind\("),
        (lambda: sf.inverse.PiGDM(score, op, [0.0, 0.0], 0.1), r"sf\.inverse\.PiGDM\(data_var=0\.25\)\.bind\("),
        (
            lambda: sf.ClassifierFreeGuidance(score, [0], 2.0),
            r"sf\.ClassifierFreeGuidance\(w=2\.0\)\.bind\(score, labels\)",
        ),
        (lambda: sf.Autoguidance(score, score, 1.0), r"sf\.Autoguidance\(w=1\.0, weak=weak_score\)"),
    ):
        with pytest.raises(TypeError, match="takes its settings by keyword and is bound to a score afterwards: " + new):
            former()
