"""Packaging: every subpackage ships, and the configs travel inside the package."""

import importlib.resources
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "sdeflow").rglob("__init__.py")}
    assert found | {"sdeflow.conf"} == listed


def test_configs_are_package_resources():
    conf = importlib.resources.files("sdeflow.conf")
    assert conf.joinpath("bench.yaml").is_file()
    assert conf.joinpath("solver").joinpath("all.yaml").is_file()
