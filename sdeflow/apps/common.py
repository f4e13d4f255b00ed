"""What the console scripts share: versions, run directories, process groups, rebuilding a trained model."""

from __future__ import annotations

import importlib.resources
import platform
import re
import sys
import time
import types
import typing
from datetime import datetime
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.experimental.callback import Callback
from hydra.utils import get_object, instantiate
from omegaconf import OmegaConf
from omegaconf.errors import MissingMandatoryValue

from sdeflow.apps.tracking import sweep_group
from sdeflow.core import distributed
from sdeflow.core.checkpoint import first_line
from sdeflow.core.io import write_json
from sdeflow.samplers.base import SolverError
from sdeflow.training.trainer import TrainingDiverged

# Errors that mean "this input, this checkpoint or this run cannot go on": one line, no traceback.
CLEAR_ERRORS = (
    ValueError,
    FileNotFoundError,
    SolverError,
    TrainingDiverged,
    MissingMandatoryValue,
    InstantiationException,
)


def register_resolvers() -> None:
    """The resolvers the configs' `hydra` blocks read; registered when a console script is made, not on library import.

    The run directory reads the launch time all ranks agreed on, so a torchrun job has one folder;
    Hydra's .hydra/ snapshot is written by rank 0 only (the rank is read from the launcher's
    environment, as submitit tasks resolve this before any process group exists).
    """
    OmegaConf.register_new_resolver(
        "sdeflow_now", lambda pattern: datetime.fromtimestamp(distributed.launch_time()).strftime(pattern), replace=True
    )
    OmegaConf.register_new_resolver(
        "sdeflow_rank_zero", lambda value: value if distributed.env_rank() == 0 else None, replace=True
    )


def versions() -> dict:
    import hydra
    import torchdiffeq

    import sdeflow

    return {
        "sdeflow": sdeflow.__version__,
        "torch": torch.__version__,
        "torchdiffeq": torchdiffeq.__version__,
        "hydra": hydra.__version__,
        "python": platform.python_version(),
        "machine": platform.platform(),
        "command": " ".join(sys.argv),
    }


def write_results(out: Path, cfg, **fields) -> dict:
    """Rank 0 writes `results.json`: the run's fields, with the world size, the resolved config and the versions."""
    result = {
        **fields,
        "world_size": distributed.world().size,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "versions": versions(),
    }
    if distributed.is_main():
        write_json(out / "results.json", result)
    return result


def config_dir() -> Path:
    """conf/: the package's `sdeflow.conf` when installed, else the conf/ beside the sdeflow/ that is imported.

    An install maps conf/ into the package; a checkout's own sdeflow/ has no conf subpackage, and a checkout is
    what `python -m pytest` or `python -m sdeflow.apps...` imports first, even beside a non-editable install.
    Either way the configs read are the ones that sit with the code that runs.
    """
    try:
        return Path(importlib.resources.files("sdeflow.conf"))
    except ModuleNotFoundError:
        return Path(__file__).resolve().parents[2] / "conf"


def console_app(config_name: str, command: str, fn):
    """The console script `command`: Hydra composes `conf/<config_name>.yaml`, and each job runs `fn(cfg)` through
    `run_task`."""

    @hydra.main(version_base="1.3", config_path=str(config_dir()), config_name=config_name)
    def hydra_main(cfg):
        return run_task(command, fn, cfg)

    return console_script(hydra_main, command)


def console_script(hydra_main, command: str):
    """The console script around a Hydra main: start the process group first (under torchrun), then let Hydra run.

    After a multirun, exit non-zero if any of its jobs failed (each left an `error.txt`), naming how many.
    Making it registers the configs' resolvers: the app's module is what a submitit task imports too.
    """
    register_resolvers()

    def main() -> None:
        FAILED_JOBS.clear()
        with distributed.session():
            hydra_main()
        if FAILED_JOBS:
            shown = ", ".join(str(p) for p in FAILED_JOBS[:5]) + (", ..." if len(FAILED_JOBS) > 5 else "")
            sys.exit(f"{command}: {len(FAILED_JOBS)} job(s) of the multirun failed; their error.txt: {shown}")

    return main


# The jobs of this process's last multirun that failed, found by `FailedJobs` once every job has run.
FAILED_JOBS: list[Path] = []


class FailedJobs(Callback):
    """Hydra callback: at the end of a multirun, collect the error.txt files its failed jobs wrote.

    Jobs may run in other processes or on other machines (joblib, submitit), so the sweep folder is
    the record: an error.txt written since this multirun started belongs to one of its jobs.
    """

    def on_multirun_start(self, config, **kwargs) -> None:
        self.start = time.time()

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep = Path(config.hydra.sweep.dir)
        start = getattr(self, "start", 0.0) - 1.0
        FAILED_JOBS.extend(sorted(p for p in sweep.rglob("error.txt") if p.stat().st_mtime >= start))


def run_task(command: str, fn, cfg):
    """The body of a Hydra main: join (or start, in a submitit task) the process group, then `exit_on_bad_input`."""
    with distributed.session():
        return exit_on_bad_input(command, fn, cfg)


def exit_on_bad_input(command: str, fn, cfg):
    """Run fn(cfg); bad settings, data or checkpoints end the command with one clear line, not a traceback.

    In a multirun a failing job writes `error.txt` into its folder and returns, so the sweep goes on
    and the other jobs' results are all there for `sdeflow-report`.
    """
    try:
        return fn(cfg)
    except Exception as e:
        if sweep_group() is None:
            if isinstance(e, CLEAR_ERRORS):
                sys.exit(f"{command}: {clear_message(e)}")
            raise
        import traceback

        if distributed.is_main():
            (run_dir() / "error.txt").write_text(f"{command}: {e}\n\n{traceback.format_exc()}")
        print(f"{command}: job failed ({e}); see {run_dir() / 'error.txt'}", file=sys.stderr)
        return None


# What each kind of setting accepts, and how an error describes it.
_KINDS = {
    "count": ("a positive integer", lambda v: _is_int(v) and v >= 1),
    "index": ("a non-negative integer", lambda v: _is_int(v) and v >= 0),
    "flag": ("true or false", lambda v: isinstance(v, bool)),
    "fraction": ("a number in (0, 1)", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1),
}


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_settings(cfg, **kinds: str) -> None:
    """Check top-level settings at the door (`n="count"`, `use_ema="flag"`, ...): one line naming the key and what it
    takes."""
    for key, kind in kinds.items():
        what, ok = _KINDS[kind]
        value = cfg[key]
        if not ok(value):
            raise ValueError(f"{key} must be {what}, got {value!r}")


def build(node, key: str):
    """`instantiate(node)`, after checking its plain arguments against the annotated types of the target's constructor.

    This is what types the solver configs: `solver.x.lower_order_final=maybe` is refused with the
    key and the type expected, rather than read as true. Nested objects are checked the same way.
    """
    _check_types(OmegaConf.to_container(node, resolve=True), key)
    return instantiate(node)


def _check_types(node, key: str) -> None:
    if isinstance(node, list):
        for i, v in enumerate(node):
            _check_types(v, f"{key}[{i}]")
    if not isinstance(node, dict):
        return
    if "_target_" not in node:
        for k, v in node.items():
            _check_types(v, f"{key}.{k}")
        return
    try:
        target = get_object(node["_target_"])
        hints = typing.get_type_hints(target.__init__ if isinstance(target, type) else target)
    except Exception:
        hints = {}  # unknown targets and unreadable annotations: instantiate says what is wrong
    for name, value in node.items():
        if name.startswith("_"):
            continue
        if isinstance(value, (dict, list)):
            _check_types(value, f"{key}.{name}")
        elif name in hints and not _matches(value, hints[name]):
            raise ValueError(f"{key}.{name} must be {_describe(hints[name])}, got {value!r}")


def _matches(value, hint) -> bool:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(hint))
    plain = {
        bool: lambda v: isinstance(v, bool),
        int: _is_int,
        str: lambda v: isinstance(v, str),
        type(None): lambda v: v is None,
        float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    }
    return plain.get(hint, lambda v: True)(value)  # containers and objects: the constructor checks them


def _describe(hint) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in typing.get_args(hint))
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null"}.get(
        hint, str(hint)
    )


def clear_message(e: BaseException) -> str:
    """One line for an error a user can act on (a missing mandatory value names its key)."""
    if isinstance(e, MissingMandatoryValue):
        key = getattr(e, "full_key", None) or "a mandatory value"
        return f"{key} is not set; give it on the command line ({key}=...)"
    if isinstance(e, InstantiationException):
        # Hydra wraps the constructor's own refusal; say which config entry it was, then the refusal.
        key = re.search(r"full_key: (\S+)", str(e))
        return f"{key.group(1) if key else 'a config entry'}: {first_line(e.__cause__ or e)}"
    return str(e)


def run_dir() -> Path:
    return Path(HydraConfig.get().runtime.output_dir)


def job_name() -> str | None:
    """The job's overrides, for naming its wandb run."""
    try:
        return ",".join(HydraConfig.get().overrides.task) or None
    except ValueError:
        return None


def model_description(cfg) -> str:
    """The resolved model and SDE configuration: what a checkpoint must match to be resumed or loaded."""
    return OmegaConf.to_yaml(
        OmegaConf.create(
            {
                "model": OmegaConf.to_container(cfg.model, resolve=True),
                "sde": OmegaConf.to_container(cfg.sde, resolve=True),
            }
        )
    )
