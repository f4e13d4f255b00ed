"""sdeflow's own checkpoints (written by sdeflow-train): the model rebuilt from the run config stored inside."""

from __future__ import annotations

from sdeflow.core.checkpoint import CheckpointError, first_line, load_checkpoint


def load_trained(path, use_ema: bool = True, device="cpu"):
    """(score function, sde, run config) rebuilt from a checkpoint written by sdeflow-train.

    The stored config is data: it is parsed as plain YAML, and only sdeflow's own classes are built
    from it (`sdeflow.hub.safe_config`), never passed to Hydra's `instantiate`. The config is returned
    as plain dicts and lists.
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from sdeflow.hub.safe_config import check_plain, rebuild
    from sdeflow.score.function import ScoreFunction

    state = load_checkpoint(path)  # on the CPU: the weights move with the network
    if not isinstance(state.get("config"), str):
        raise CheckpointError(f"{path} has no run config; it was not written by sdeflow-train")
    try:
        cfg = OmegaConf.to_container(OmegaConf.create(state["config"]), resolve=False)
    except (OmegaConfBaseException, ValueError) as e:
        raise CheckpointError(f"{path}: its stored config is not readable YAML: {first_line(e)}") from e
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model"), dict) or not {"net", "prediction"} <= set(cfg["model"]) \
            or "sde" not in cfg or not isinstance(cfg.get("data"), dict) or "shape" not in cfg["data"]:
        raise CheckpointError(f"{path}: its stored config lacks model.net, model.prediction, sde or data.shape")
    check_plain(cfg["data"]["shape"], "config.data.shape")
    sde = rebuild(cfg["sde"], "config.sde")
    net = rebuild(cfg["model"]["net"], "config.model.net")
    prediction = rebuild(cfg["model"]["prediction"], "config.model.prediction")
    try:
        net.load_state_dict(state["ema" if use_ema else "model"])
    except (RuntimeError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{path}: weights do not fit the model its config describes: {first_line(e)}") from e
    net = net.to(device).eval().requires_grad_(False)
    return ScoreFunction(net, sde, prediction), sde, cfg


class TrainedCheckpoint:
    """`checkpoint_format=sdeflow` in the apps (the default): a checkpoint.pt written by sdeflow-train, read by `load_trained`."""

    def load(self, path, use_ema: bool = True, device="cpu"):
        return load_trained(path, use_ema, device)

    def __repr__(self) -> str:
        return "TrainedCheckpoint()"
