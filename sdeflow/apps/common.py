"""What the console scripts share: versions, run directories, process groups, rebuilding a trained model."""

from __future__ import annotations

import platform
import sys
from datetime import datetime
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from sdeflow import distributed

# The configs' run directory reads the launch time all ranks agreed on, so a torchrun job has one
# folder; Hydra's .hydra/ snapshot is written by rank 0 only (the rank is read from the launcher's
# environment, as submitit tasks resolve this before any process group exists).
OmegaConf.register_new_resolver(
    "sdeflow_now", lambda pattern: datetime.fromtimestamp(distributed.launch_time()).strftime(pattern), replace=True)
OmegaConf.register_new_resolver("sdeflow_rank_zero", lambda value: value if distributed.env_rank() == 0 else None, replace=True)


def versions() -> dict:
    import hydra
    import torchdiffeq

    import sdeflow

    return {"sdeflow": sdeflow.__version__, "torch": torch.__version__, "torchdiffeq": torchdiffeq.__version__,
            "hydra": hydra.__version__, "python": platform.python_version(), "machine": platform.platform(), "command": " ".join(sys.argv)}


def console_script(hydra_main):
    """The console script around a Hydra main: start the process group first (under torchrun), then let Hydra run."""

    def main() -> None:
        with distributed.session():
            hydra_main()

    return main


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
            if isinstance(e, (ValueError, FileNotFoundError)):
                sys.exit(f"{command}: {e}")
            raise
        import traceback

        if distributed.is_main():
            (run_dir() / "error.txt").write_text(f"{command}: {e}\n\n{traceback.format_exc()}")
        print(f"{command}: job failed ({e}); see {run_dir() / 'error.txt'}", file=sys.stderr)
        return None


def run_dir() -> Path:
    return Path(HydraConfig.get().runtime.output_dir)


def job_name() -> str | None:
    """The job's overrides, for naming its wandb run."""
    try:
        return ",".join(HydraConfig.get().overrides.task) or None
    except ValueError:
        return None


def sweep_group() -> str | None:
    """In a multirun, the sweep's folder name: the wandb group that gathers its jobs."""
    try:
        hc = HydraConfig.get()
    except ValueError:
        return None
    return Path(hc.sweep.dir).name if str(hc.mode) == "RunMode.MULTIRUN" else None


def model_description(cfg) -> str:
    """The resolved model and SDE configuration: what a checkpoint must match to be resumed or loaded."""
    return OmegaConf.to_yaml(OmegaConf.create({"model": OmegaConf.to_container(cfg.model, resolve=True),
                                               "sde": OmegaConf.to_container(cfg.sde, resolve=True)}))
