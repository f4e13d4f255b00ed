"""Helpers the tests share: the configs as the apps compose them, the solver registry, exact scores, fitted orders,
the mixture check and the command-line runner."""

import os
import subprocess
import sys

import hydra
import numpy as np
import torch
from hydra import initialize_config_dir

import sdeflow as sf
from sdeflow.apps.common import config_dir
from sdeflow.apps.solvers import build_solvers


def compose_config(config_name: str, *overrides: str, return_hydra_config: bool = False):
    """`conf/<config_name>.yaml` with `overrides`, composed from the configs the apps read (`config_dir`)."""
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        return hydra.compose(config_name, overrides=list(overrides), return_hydra_config=return_hydra_config)


def every_configured_solver(problem: str = "gmm16") -> dict:
    """Every sampler of conf/solver (`solver=all`, as the benchmark and the apps build it: one file, one config)."""
    return build_solvers(compose_config("bench", "solver=all", f"problem={problem}"))


def checkpoint_format(option: str, *overrides):
    """The `checkpoint_format=<option>` node of conf/, as sdeflow-sample composes it, with `checkpoint_format.`
    overrides."""
    cfg = compose_config("sample", f"checkpoint_format={option}", *(f"checkpoint_format.{o}" for o in overrides))
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
    return float(
        np.polyfit(np.log(1.0 / np.asarray(steps, dtype=float)), np.log(np.asarray(errors, dtype=float)), 1)[0]
    )


def assert_mixture_moments(x: torch.Tensor, gm, sde, weights: float = 0.02, mean: float = 0.05, cov: float = 0.1):
    """Samples `x` of the mixture's p_eps under `sde`: the share of each mode, the mean and the covariance, each within
    its tolerance (largest absolute difference) of the exact values."""
    share = torch.bincount(gm.assign(x), minlength=len(gm.weights)).double() / len(x)
    assert (share - gm.weights).abs().max() < weights
    assert (x.mean(0) - gm.mean(sde.eps, sde)).abs().max() < mean
    assert (torch.cov(x.T) - gm.cov(sde.eps, sde)).abs().max() < cov


ENV = {**os.environ, "WANDB_MODE": "disabled"}


def cli(cwd, module, *args, timeout: float = 600, env: dict | None = None):
    """Run `python -m module args` in `cwd` with wandb off (and `env` added), as a user would from a shell."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env={**ENV, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
