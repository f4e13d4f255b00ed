"""Structured-config schemas: Hydra checks the types and keys of these groups when it composes.

Registered in Hydra's ConfigStore under names that differ from the YAML files that extend them
(`train/default.yaml` lists `train_schema` first in its defaults).
"""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from sdeflow.training.trainer import TrainSettings


def register() -> None:
    ConfigStore.instance().store(group="train", name="train_schema", node=TrainSettings)


register()
