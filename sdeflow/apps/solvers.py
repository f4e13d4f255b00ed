"""The solvers a command line selects: `solver=<name>`, `solver=[a,b]`, or `solver=all`, every config of conf/solver.

`conf/solver/all.yaml` lists nothing: it is the marker `all: true`, and `solver_configs` reads every other
file of its folder in its place. A solver is one file and one config; `solver=all`, the benchmark and the
tests' registry (`tests/helpers.every_configured_solver`) follow from the folder.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf, open_dict

from sdeflow.apps.common import build, config_dir

MARKER = "all"  # the one key of conf/solver/all.yaml


def solver_configs(cfg: DictConfig) -> DictConfig:
    """`cfg.solver` as `{name: node}`, with the `solver=all` marker replaced by every config of conf/solver.

    The configs are merged into `cfg` itself, so their interpolations (`${oc.select:problem,null}`) resolve against
    the whole config and the run's saved config lists every solver; settings given on the command line
    (`solver=all +solver.ddim.denoise=true`) apply on top. Calling it again changes nothing.
    """
    if cfg.solver is None or not cfg.solver.get(MARKER, False):
        return cfg.solver
    folder = config_dir() / "solver"
    every = OmegaConf.merge(
        *(OmegaConf.load(path) for path in sorted(folder.glob("*.yaml")) if path.stem != MARKER), cfg.solver
    )
    every.pop(MARKER)
    with open_dict(cfg):
        cfg.solver = every
    return cfg.solver


def build_solvers(cfg: DictConfig) -> dict:
    """Every selected solver, built and type-checked (`build`): the apps build them all before anything runs, so a
    bad one is refused at the door."""
    return {name: build(node, f"solver.{name}") for name, node in solver_configs(cfg).items()}
