"""Helpers the tests share: the solver registry as the benchmark builds it, exact scores, fitted orders."""

import os
import subprocess
import sys

import numpy as np
import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate

import sdeflow as sf


def every_configured_solver(problem: str = "gmm16") -> dict:
    """Every sampler of conf/solver (the one registry: the benchmark, the apps and the tests build from it)."""
    with initialize_config_module("sdeflow.conf", version_base="1.3"):
        cfg = compose("bench", overrides=["solver=all", f"problem={problem}"])
    return {name: instantiate(node) for name, node in cfg.solver.items()}


def checkpoint_format(option: str, *overrides):
    """The `checkpoint_format=<option>` node of conf/, as sdeflow-sample composes it, with `checkpoint_format.` overrides."""
    with initialize_config_module("sdeflow.conf", version_base="1.3"):
        cfg = compose("sample", overrides=[f"checkpoint_format={option}", *(f"checkpoint_format.{o}" for o in overrides)])
    return cfg.checkpoint_format


def seeded_tensor(shape, generator: torch.Generator, offset: float = 0.0) -> torch.Tensor:
    """One weight of the reference data's recipe (tests/data/make_*.py): float64 normals from `generator`, divided by
    sqrt(fan_in) at rank >= 2, else 0.2 times them plus `offset`; in float32."""
    w = torch.randn(shape, generator=generator, dtype=torch.float64)
    return (w / float(np.sqrt(np.prod(shape[1:]))) if len(shape) >= 2 else 0.2 * w + offset).float()


def exact_score(gm, sde) -> sf.ScoreFunction:
    """The mixture's exact score under `sde`, read as a score model."""
    return sf.ScoreFunction(gm.score_fn(sde), sde)


def slope(steps, errors) -> float:
    """Least-squares slope of log(error) against log(1 / steps): the empirical order."""
    return float(np.polyfit(np.log(1.0 / np.asarray(steps, dtype=float)), np.log(np.asarray(errors, dtype=float)), 1)[0])


ENV = {**os.environ, "WANDB_MODE": "disabled"}


def cli(cwd, module, *args, **kwargs):
    """Run `python -m module args` in `cwd` with wandb off, as a user would from a shell."""
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600, **kwargs)
