"""sdeflow's own checkpoints (written by sdeflow-train): the model rebuilt from the run config stored inside."""

from __future__ import annotations

from pathlib import Path

from sdeflow.core.checkpoint import CheckpointError, first_line, load_checkpoint
from sdeflow.hub.format import CheckpointFormat, Loaded


class SdeflowFormat(CheckpointFormat):
    """A checkpoint.pt written by sdeflow-train (`checkpoint_format=sdeflow` in the apps, the default).

    The stored config is data: it is parsed as plain YAML, and only sdeflow's own classes are built
    from it (`sdeflow.hub.safe_config`), never passed to Hydra's `instantiate`. `Loaded.config` holds
    it as plain dicts and lists, `Loaded.dataset` its training data's node, and `Loaded.details["step"]`
    the training step.
    """

    def load(self, path, use_ema: bool = True, device="cpu") -> Loaded:
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
        if (
            not isinstance(cfg, dict)
            or not isinstance(cfg.get("model"), dict)
            or not {"net", "prediction"} <= set(cfg["model"])
            or "sde" not in cfg
            or not isinstance(cfg.get("data"), dict)
            or "shape" not in cfg["data"]
        ):
            raise CheckpointError(f"{path}: its stored config lacks model.net, model.prediction, sde or data.shape")
        shape = check_plain(cfg["data"]["shape"], "config.data.shape")
        if not isinstance(shape, list) or not shape or not all(isinstance(n, int) and n > 0 for n in shape):
            raise CheckpointError(f"{path}: its stored config.data.shape is {shape!r}, not a list of positive integers")
        dataset = cfg["data"].get("dataset")
        if dataset is not None and not isinstance(dataset, dict):
            raise CheckpointError(
                f"{path}: its stored config.data.dataset is a {type(dataset).__name__}, not a config node"
            )
        sde = rebuild(cfg["sde"], "config.sde")
        net = rebuild(cfg["model"]["net"], "config.model.net")
        prediction = rebuild(cfg["model"]["prediction"], "config.model.prediction")
        try:
            net.load_state_dict(state["ema" if use_ema else "model"])
        except (RuntimeError, KeyError, TypeError, AttributeError) as e:
            raise CheckpointError(f"{path}: weights do not fit the model its config describes: {first_line(e)}") from e
        net = net.to(device).eval().requires_grad_(False)
        # sdeflow's networks state their classes; any other allow-listed module stored as the net is unconditional.
        return Loaded(
            ScoreFunction(net, sde, prediction),
            sde,
            tuple(shape),
            f"sdeflow:{Path(path)}",
            label_dim=int(getattr(net, "label_dim", 0)),
            centered=bool((dataset or {}).get("centered", True)),
            dataset=dataset,
            config=cfg,
            details={"step": state.get("step")},
        )


def load_trained(path, use_ema: bool = True, device="cpu") -> Loaded:
    """The sdeflow-train checkpoint at `path`: `SdeflowFormat().load(path, use_ema, device)`."""
    return SdeflowFormat().load(path, use_ema, device)


TrainedCheckpoint = SdeflowFormat  # the former name (sdeflow.hub.trained.TrainedCheckpoint in older configs and code)
