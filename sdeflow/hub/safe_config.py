"""Objects rebuilt from a config that was read from a file: data, never code.

A checkpoint carries the config of the run that wrote it, so that `sdeflow-sample` and
`sdeflow-eval` can rebuild its model. That config comes from a file we did not necessarily write,
and passing it to Hydra's `instantiate` would let it name any callable (`torch.load(...,
weights_only=False)`, `numpy.load(allow_pickle=True)`, ...). Here a stored config may only name
sdeflow's own SDEs, networks, embeddings, preconditioners, predictions, datasets and toy problems,
with arguments of plain types (numbers, strings, booleans, null, lists and mappings of them, and
further allow-listed objects). Anything else is refused with an error naming the key.
"""

from __future__ import annotations

import functools

_PLAIN = (bool, int, float, str, type(None))


class UnsafeConfigError(ValueError):
    """A stored config names something other than sdeflow's allow-listed classes, or holds a non-plain value."""


@functools.lru_cache(maxsize=1)
def allowed_targets() -> dict:
    """Every `_target_` a stored config may name, under each path it is reachable by, mapped to the object."""
    from sdeflow import nets, problems, score, sde
    from sdeflow.training import data

    sdes = [sde.VPSDE, sde.SubVPSDE, sde.VESDE, sde.CosineVPSDE, sde.DiscreteVPSDE, sde.EDMSDE, sde.FlowSDE]
    predictions = [
        score.ScorePrediction,
        score.EpsPrediction,
        score.X0Prediction,
        score.VPrediction,
        score.FlowPrediction,
    ]
    datasets = [data.digits, data.photo_patches, data.mnist5k, data.toy, data.cifar10, data.image_folder]
    # The namespaces stored configs use: the public ones, and `sdeflow.data` from before datasets moved to
    # `sdeflow.training.data` (checkpoints written then name it); each object is also reachable by its own module path.
    exported = {
        "sdeflow": [*sdes, *predictions, problems.GaussianMixture],
        "sdeflow.sde": [*sdes, sde.linear_betas, sde.scaled_linear_betas, sde.cosine_betas],
        "sdeflow.score": predictions,
        "sdeflow.nets": [
            nets.NCSNpp,
            nets.ScoreMLP,
            nets.EDMPrecond,
            nets.SinusoidalEmbedding,
            nets.GaussianFourierEmbedding,
        ],
        "sdeflow.data": datasets,
        "sdeflow.training.data": datasets,
        "sdeflow.problems": [
            problems.GaussianMixture,
            problems.eight_gaussians,
            problems.grid_gaussians,
            problems.two_moons,
            problems.swiss_roll,
            problems.checkerboard,
        ],
    }
    table = {}
    for namespace, objects in exported.items():
        for obj in objects:
            table[f"{namespace}.{obj.__name__}"] = obj
            table[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return table


def check_plain(node, key: str = "config"):
    """Refuse anything in `node` but plain values: no `_target_` at all, no interpolation, no objects."""
    return _walk(node, key, build=False)


def rebuild(node, key: str = "config"):
    """The object `node` describes: `_target_`s from the allow-list only, called with plain (or rebuilt) arguments."""
    return _walk(node, key, build=True)


def _walk(node, key: str, build: bool):
    if isinstance(node, dict):
        if any(not isinstance(k, str) for k in node):
            raise UnsafeConfigError(f"{key} has a key that is not a string")
        if "_target_" not in node:
            return {k: _walk(v, f"{key}.{k}", build) for k, v in node.items()}
        target = node["_target_"]
        if not build:
            raise UnsafeConfigError(f"{key} names an object ({target!r}) where only plain values are accepted")
        fn = allowed_targets().get(target) if isinstance(target, str) else None
        if fn is None:
            raise UnsafeConfigError(
                f"{key}._target_ is {target!r}, which a stored config may not build: "
                "only sdeflow's own SDEs, networks, predictions, datasets and toy problems are rebuilt from a file "
                "(e.g. sdeflow.VPSDE, sdeflow.nets.NCSNpp)"
            )
        special = sorted(k for k in node if k.startswith("_") and k != "_target_")
        if special:
            raise UnsafeConfigError(f"{key} uses {special}; a stored config may give keyword arguments only")
        kwargs = {k: _walk(v, f"{key}.{k}", build) for k, v in node.items() if k != "_target_"}
        return fn(**kwargs)
    if isinstance(node, (list, tuple)):
        return [_walk(v, f"{key}[{i}]", build) for i, v in enumerate(node)]
    if isinstance(node, _PLAIN):
        if isinstance(node, str) and "${" in node:
            raise UnsafeConfigError(f"{key} holds an interpolation ({node!r}); a stored config must be fully resolved")
        return node
    raise UnsafeConfigError(f"{key} holds a {type(node).__name__}; a stored config may hold only plain values")
