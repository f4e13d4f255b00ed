"""`sdeflow-train`: denoising score matching on offline data, checkpoints that resume, sample grids.

sdeflow-train                                    # NCSN++ tiny on scikit-learn's digits, VP
sdeflow-train data=mnist5k sde=ve train.steps=20000
sdeflow-train data=toy model=mlp train.steps=2000
torchrun --nproc_per_node=4 -m sdeflow.apps.train train.device=cuda
                                                 # data-parallel; train.batch_size is the global batch
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

import sdeflow.training.schemas  # noqa: F401  (registers the structured configs)
from sdeflow.apps.common import build, console_app, job_name, model_description, run_dir, write_results
from sdeflow.apps.tracking import Tracker
from sdeflow.apps.viz import save_samples_png
from sdeflow.core import distributed
from sdeflow.core.checkpoint import CheckpointError, first_line, peek_step
from sdeflow.core.io import lock_run_folder, remove_stale_temporaries
from sdeflow.noise.generators import INIT_WEIGHTS, stream_seed
from sdeflow.samplers.generate import generate
from sdeflow.score.function import ScoreFunction
from sdeflow.training.data import DatasetError
from sdeflow.training.trainer import Trainer, TrainingInterrupted


def build_network(cfg: DictConfig, shape):
    """The model config's network, its initial weights drawn from train.seed; refused clearly when it does not fit the
    data."""
    choices = _choices()
    what = (
        f"model={choices.get('model', '?')} does not fit data={choices.get('data', '?')} "
        f"(samples of shape {list(shape)})"
    )
    x = torch.zeros(2, *shape)
    # The initial weights come from their own stream of train.seed: the same command gives the same run.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stream_seed(cfg.train.seed, INIT_WEIGHTS))
        try:
            net = instantiate(cfg.model.net)
        except (InterpolationResolutionError, InstantiationException) as e:
            raise ValueError(f"{what}: building the network failed ({first_line(e)})") from e
        # One forward pass in eval mode (no dropout draw, no statistics updated) says whether the shapes fit.
        try:
            with torch.no_grad():
                labels = {"y": torch.zeros(2, dtype=torch.int64)} if getattr(net, "label_dim", 0) else {}
                y = net.eval()(x, torch.full((2,), 0.5), **labels)
        except (RuntimeError, ValueError, IndexError) as e:
            raise ValueError(f"{what}: {first_line(e)}") from e
        finally:
            net.train()
    if tuple(y.shape) != tuple(x.shape):
        raise ValueError(f"{what}: the network maps {list(x.shape)} to {list(y.shape)}")
    return net


def _choices() -> dict:
    try:
        return dict(HydraConfig.get().runtime.choices)
    except ValueError:
        return {}


def newest_checkpoint(resume, own: Path):
    """Where to start: the run folder's own checkpoint when it is at least as far as `resume`, else `resume` (or
    None)."""
    if resume is not None and not Path(resume).is_file():
        raise CheckpointError(f"resume={resume}: no checkpoint there")
    candidates = [Path(p) for p in (resume, own) if p is not None and Path(p).is_file()]
    # A crashed `resume=PATH` run must continue from its own newer checkpoint, not restart from PATH.
    return max(candidates, key=lambda p: (peek_step(p), p == own), default=None)


def sample_grid(trainer, sde, prediction, cfg, path, centered: bool):
    """Sample the EMA model with the configured solver and save the picture on rank 0.

    The grid is one batch, so rank 0 draws all of it (a world-size-independent picture); other ranks wait.
    """
    solver = build(cfg.sample.solver, "sample.solver")
    score = ScoreFunction(trainer.ema.model, sde, prediction)
    n = cfg.sample.n
    label_dim = getattr(trainer.model, "label_dim", 0)
    # A class-conditional model's picture shows the classes in turn.
    out = generate(
        score,
        sde,
        solver,
        n,
        tuple(cfg.data.shape),
        nfe=cfg.sample.nfe,
        grid=instantiate(cfg.sample.grid),
        seed=0,
        batch_size=n,
        device=trainer.device,
        progress=False,
        labels=list(range(label_dim)) if label_dim else None,
    )
    samples = distributed.gather_rows(out.samples)
    if samples is not None:
        save_samples_png(
            samples, path, centered=centered, title=f"step {trainer.step}, {type(solver).__name__}, NFE {out.nfe}"
        )
    return out


def train(cfg: DictConfig) -> dict:
    out = run_dir()
    world = distributed.world()
    say = print if world.is_main else (lambda *a, **k: None)
    # One run per folder: a second one would overwrite this one's checkpoints. Killed writes left temporaries: clear
    # them.
    lock = lock_run_folder(out, "sdeflow-train") if world.is_main else None
    if world.is_main and (freed := remove_stale_temporaries(out)):
        say(f"removed {freed / 2**20:.1f} MiB of temporary files that an interrupted write left in {out}")
    data = instantiate(cfg.data.dataset)
    if tuple(data.shape) != tuple(cfg.data.shape):
        raise DatasetError(
            f"data.shape is {list(cfg.data.shape)} but the dataset's samples have shape {list(data.shape)}"
        )
    sde = instantiate(cfg.sde)
    net = build_network(cfg, data.shape)
    prediction = instantiate(cfg.model.prediction)
    loss = instantiate(cfg.loss, sde=sde, prediction=prediction)
    # Checkpoints carry the resolved run config, so sdeflow-sample can rebuild the model.
    trainer = Trainer(
        net,
        loss,
        data,
        model_config=model_description(cfg),
        extra_state={"config": OmegaConf.to_yaml(cfg, resolve=True)},
        **cfg.train,
    )
    ckpt = out / "checkpoint.pt"
    start_from = newest_checkpoint(cfg.resume, ckpt)
    if start_from is not None:
        trainer.resume(start_from)
        if trainer.step >= trainer.steps:
            say(
                f"{start_from} is at step {trainer.step}, at or past train.steps={trainer.steps}: nothing to train. "
                f"Raise train.steps to continue training it."
            )
            return {"steps": trainer.step, "checkpoint": str(start_from), "trained": False}
    n_params = sum(p.numel() for p in net.parameters())
    tracker = Tracker(dir=str(out), config=OmegaConf.to_container(cfg, resolve=True), name=job_name(), **cfg.logger)
    say(
        f"training {type(net).__name__} ({n_params / 1e6:.2f}M parameters) on {data.name} {list(data.shape)}, "
        f"{type(sde).__name__}, {trainer.steps} steps from step {trainer.step}, "
        f"{world.size} process(es) on {trainer.device}; run dir {out}"
    )
    centered = getattr(data, "centered", True)
    start, first_step = time.perf_counter(), trainer.step
    milestones = (
        sorted({*range(cfg.sample.every, trainer.steps, cfg.sample.every), trainer.steps})
        if cfg.sample.every
        else [trainer.steps]
    )
    losses = []
    for m in milestones:
        if m <= trainer.step:
            continue
        try:
            losses += trainer.fit(
                steps=m,
                checkpoint=ckpt,
                checkpoint_every=cfg.checkpoint_every,
                progress=cfg.progress,
                on_log=lambda step, metrics: tracker.log(metrics, step=step),
            )
        except TrainingInterrupted as e:
            tracker.finish()
            say(
                f"sdeflow-train: {e}. To resume, run the same command again with hydra.run.dir={out} "
                f"(or resume={ckpt} from another folder).",
                file=sys.stderr,
            )
            sys.exit(128 + (signal.SIGTERM if e.signal_name == "SIGTERM" else signal.SIGINT))
        sample_grid(trainer, sde, prediction, cfg, out / f"samples_{trainer.step:07d}.png", centered)
        tracker.log_image("samples", out / f"samples_{trainer.step:07d}.png")
    seconds = time.perf_counter() - start
    final = sample_grid(trainer, sde, prediction, cfg, out / "samples.png", centered)
    result = write_results(
        out,
        cfg,
        steps=trainer.step,
        parameters=n_params,
        seconds=seconds,
        steps_per_second=(trainer.step - first_step) / seconds if seconds > 0 else None,
        final_loss_mean_last_100=sum(losses[-100:]) / max(1, len(losses[-100:])) if losses else None,
        sample_nfe=final.nfe,
        checkpoint=str(ckpt),
        global_batch_size=trainer.batch_size,
    )
    tracker.finish()
    if lock is not None:
        lock.close()  # the folder is free for the next run (a killed process releases it too)
    say(f"done: {trainer.step} steps in {seconds:.0f} s; checkpoint {ckpt}; samples {out / 'samples.png'}")
    return result


main = console_app("train", "sdeflow-train", train)


if __name__ == "__main__":
    main()
