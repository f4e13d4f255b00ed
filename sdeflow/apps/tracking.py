"""Experiment tracking through wandb, imported only when a run starts.

`mode=None` leaves the choice to the WANDB_MODE environment variable. When that is unset too and
no API key is configured, the run logs offline rather than failing on a machine without a login.
In a data-parallel job only rank 0 logs.
"""

from __future__ import annotations

import os
from pathlib import Path

from sdeflow.core import distributed


class Tracker:
    """A wandb run, or nothing when disabled; `log` and `finish` are safe either way."""

    def __init__(
        self,
        project: str = "sdeflow",
        mode: str | None = None,
        group: str | None = None,
        name: str | None = None,
        dir: str | None = None,
        config: dict | None = None,
        tags: list | None = None,
    ):
        if mode not in (None, "online", "offline", "disabled"):
            raise ValueError(f"logger mode must be null, 'online', 'offline' or 'disabled', got {mode!r}")
        if group is None:
            group = sweep_group()
        if mode is None and "WANDB_MODE" not in os.environ and not _has_api_key():
            mode = "offline"
        self.run = None
        if (mode or os.environ.get("WANDB_MODE")) == "disabled" or not distributed.is_main():
            return
        import wandb

        self.run = wandb.init(
            project=project,
            mode=mode,
            group=group,
            name=name,
            dir=dir,
            config=config,
            tags=tags,
            reinit="finish_previous",
        )

    def log(self, metrics: dict, step: int | None = None) -> None:
        if self.run is not None:
            self.run.log(metrics, step=step)

    def log_image(self, key: str, path) -> None:
        if self.run is not None:
            import wandb

            self.run.log({key: wandb.Image(str(path))})

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None


def _has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def sweep_group() -> str | None:
    """In a multirun, the sweep's folder name: the wandb group that gathers its jobs."""
    try:
        from hydra.core.hydra_config import HydraConfig

        hc = HydraConfig.get()
    except ValueError:
        return None
    return Path(hc.sweep.dir).name if str(hc.mode) == "RunMode.MULTIRUN" else None
