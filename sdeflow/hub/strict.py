"""Loading foreign weights strictly: every key used, every shape equal, and one line that names what differs."""

from __future__ import annotations

from torch import nn

from sdeflow.core.checkpoint import CheckpointError

# A module whose parameters have the same names in another codebase's layout as in ours (a linear map, a
# convolution, a normalisation): the name map that each foreign layout (`adm.layout`, `score_sde.KINDS`) uses for it.
AFFINE = {"weight": "weight", "bias": "bias"}


def _some(keys, limit: int = 3) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:limit]) + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def load_strict(module: nn.Module, state: dict, where: str) -> None:
    """`module.load_state_dict(state)` after checking keys and shapes; a mismatch raises `CheckpointError` naming them.

    The reference implementations load with `strict=False`, which hides a renamed layer or a config
    that builds another network: here the first difference stops the import.
    """
    expected = module.state_dict()
    missing, unused = set(expected) - set(state), set(state) - set(expected)
    shapes = {
        k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(getattr(state[k], "shape", ()))
    }
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing ({_some(missing)})")
    if unused:
        problems.append(f"{len(unused)} unused ({_some(unused)})")
    if shapes:
        problems.append(
            f"{len(shapes)} of another shape ("
            + ", ".join(f"{k}: {tuple(state[k].shape)} for {tuple(expected[k].shape)}" for k in sorted(shapes)[:3])
            + ")"
        )
    if problems:
        raise CheckpointError(
            f"{where}: the weights do not fit the network its config describes: " + "; ".join(problems)
        )
    module.load_state_dict(state, strict=True)
