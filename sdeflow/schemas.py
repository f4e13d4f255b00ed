"""Structured-config schemas: Hydra checks the types and keys of these groups when it composes.

Registered in Hydra's ConfigStore under names that differ from the YAML files that extend them
(`train/default.yaml` lists `train_schema` first in its defaults).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore


@dataclass
class TrainSettings:
    """`train` group: the Trainer's arguments."""

    steps: int = 4000
    batch_size: int = 64
    lr: float = 2e-3
    warmup: int = 200
    grad_clip: float = 1.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.0
    ema_decay: float = 0.999
    ema_warmup: bool = True
    precision: str = "fp32"
    compile: bool = False
    seed: int = 0
    device: str = "cpu"


def register() -> None:
    ConfigStore.instance().store(group="train", name="train_schema", node=TrainSettings)


register()
