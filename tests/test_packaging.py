"""Packaging: every subpackage ships, the configs travel inside the package, and a checkout finds its own configs."""

import importlib.resources
import importlib.util
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest

from sdeflow.apps.common import config_dir

tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).resolve().parents[1]
SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_subpackage_is_listed_in_pyproject():
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "sdeflow").rglob("__init__.py")}
    assert found | {"sdeflow.conf"} == set(SETUPTOOLS["packages"])


def test_every_config_is_package_data():
    # A non-editable install holds only what these patterns name; `solver=all` reads every file of conf/solver there.
    patterns = [PurePosixPath(p) for p in SETUPTOOLS["package-data"]["sdeflow.conf"]]
    configs = [PurePosixPath(p.relative_to(ROOT / "conf").as_posix()) for p in (ROOT / "conf").rglob("*.yaml")]
    shipped = [c for c in configs if any(len(c.parts) == len(p.parts) and c.match(str(p)) for p in patterns)]
    assert configs and shipped == configs


def test_the_apps_read_the_installed_configs():
    conf = config_dir()
    assert (conf / "bench.yaml").is_file() and (conf / "solver" / "all.yaml").is_file()
    if importlib.util.find_spec("sdeflow.conf") is not None:  # installed (a checkout's own sdeflow/ has no conf)
        assert conf == Path(importlib.resources.files("sdeflow.conf"))


# A checkout beside a non-editable install: `python -m` puts the checkout first on sys.path, so its sdeflow/ is
# imported, and nothing maps conf/ into it as sdeflow.conf (an editable install's finder does: it is dropped here).
AS_A_CHECKOUT = """
import runpy, sys
sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, "__module__", "").startswith("__editable__")]
sys.argv = sys.argv[1:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    "command",
    [["pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "tests"], ["sdeflow.apps.bench.app", "--help"]],
    ids=["pytest", "sdeflow-bench"],
)
def test_a_checkout_beside_a_non_editable_install_finds_its_configs(command):
    proc = subprocess.run(
        [sys.executable, "-c", AS_A_CHECKOUT, *command], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
