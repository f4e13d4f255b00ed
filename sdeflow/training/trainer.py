"""The training loop: Adam with warm-up and clipping, EMA, bf16 autocast, data-parallel over ranks, exact resume.

Every random draw of step k is a function of (seed, k): slot j of the global batch (its data index,
flip, time and noise) comes from its own stream, and each rank draws only its slots. So training
on N processes follows the same global batches as on one, and a checkpoint resumes exactly under
any world size that divides the batch. Dropout is the exception: it draws from torch's generator,
reseeded from (seed, step, rank) at every step.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from sdeflow.core import distributed
from sdeflow.core.checkpoint import (
    CheckpointError,
    check_model_config,
    first_line,
    load_checkpoint,
    peek_step,
    save_checkpoint,
)
from sdeflow.core.tensors import to_device
from sdeflow.noise.generators import PerSampleNoise
from sdeflow.training.ema import EMA

PRECISIONS = ("fp32", "bf16", "auto")


@dataclass
class TrainSettings:
    """The Trainer's settings and their defaults, declared once: `sdeflow-train`'s `train` group is typed by this
    too."""

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


_DEFAULT = TrainSettings()


class TrainingDiverged(RuntimeError):
    """The loss or the weights became NaN or infinite; the message names the step and the checkpoint kept."""


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on SIGINT or SIGTERM after writing a checkpoint at the current step."""

    def __init__(self, signal_name: str, step: int, checkpoint):
        self.signal_name, self.step, self.checkpoint = signal_name, step, checkpoint
        where = f"; checkpoint written to {checkpoint}" if checkpoint is not None else " (no checkpoint path was given)"
        super().__init__(f"stopped by {signal_name} at step {step}{where}")


class _StopFlag:
    signal: str | None = None


@contextlib.contextmanager
def signals_to_flag():
    """While inside, SIGINT and SIGTERM set `flag.signal` instead of killing the process mid-step.

    The first signal restores the previous handlers, so a second Ctrl-C stops at once. Outside the
    main thread (where handlers cannot be installed) nothing changes.
    """
    flag = _StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    names = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}
    previous = {s: signal.getsignal(s) for s in names}

    def handler(signum, frame):
        flag.signal = names[signum]
        for s, h in previous.items():
            signal.signal(s, h)

    for s in names:
        signal.signal(s, handler)
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


class Trainer:
    """Trains `model` on `data` with `loss`; every random draw comes from streams keyed by (seed, step).

    Args:
        model: the network, called as model(x, t).
        loss: a callable loss(model, x0, generator) -> scalar (e.g. `sdeflow.training.losses.DSMLoss`).
        data: a `sdeflow.training.data.Dataset`.
        steps: total optimisation steps.
        batch_size: samples per step, summed over all ranks (each of W ranks takes batch_size / W).
        lr, warmup, grad_clip, betas, eps, weight_decay: Adam with linear warm-up over `warmup` steps
            and gradient-norm clipping at `grad_clip` (<= 0: none).
        ema_decay, ema_warmup: the EMA of the weights used for sampling.
        precision: "fp32", "bf16" (autocast), or "auto" (bf16 on a GPU that supports it).
        compile: wrap the model in torch.compile.
        seed: seeds the data, noise and dropout streams.
        device: where to train; "cuda" means this rank's GPU under torchrun or SLURM.
        model_config: a string describing the model's configuration, stored in checkpoints and
            checked when resuming.
        extra_state: further plain entries written into every checkpoint (e.g. the run's config).

    Under a process group (see `sdeflow.core.distributed.launch`) the model is wrapped in
    DistributedDataParallel, which all-reduces the gradients; every rank keeps the same EMA, and
    only rank 0 writes checkpoints.
    """

    def __init__(
        self,
        model: nn.Module,
        loss,
        data,
        steps: int = _DEFAULT.steps,
        batch_size: int = _DEFAULT.batch_size,
        lr: float = _DEFAULT.lr,
        warmup: int = _DEFAULT.warmup,
        grad_clip: float = _DEFAULT.grad_clip,
        betas=tuple(_DEFAULT.betas),
        eps: float = _DEFAULT.eps,
        weight_decay: float = _DEFAULT.weight_decay,
        ema_decay: float = _DEFAULT.ema_decay,
        ema_warmup: bool = _DEFAULT.ema_warmup,
        precision: str = _DEFAULT.precision,
        compile: bool = _DEFAULT.compile,
        seed: int = _DEFAULT.seed,
        device: str = _DEFAULT.device,
        model_config: str = "",
        extra_state: dict | None = None,
    ):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if steps < 1 or batch_size < 1 or lr <= 0 or warmup < 0:
            raise ValueError(
                f"need steps >= 1, batch_size >= 1, lr > 0, warmup >= 0; got {steps}, {batch_size}, {lr}, {warmup}"
            )
        self.world = distributed.world()
        if batch_size % self.world.size:
            raise ValueError(
                f"batch_size {batch_size} must be a multiple of the number of processes ({self.world.size}): "
                f"each rank takes an equal part of the global batch"
            )
        self.local_batch = batch_size // self.world.size
        self.device = distributed.device(device)
        self.model = model.to(self.device)
        parallel = self.model
        if self.world.size > 1:
            from torch.nn.parallel import DistributedDataParallel

            # DDP broadcasts rank 0's weights now (before the EMA copies them) and averages the gradients in backward().
            parallel = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        self.loss, self.data = loss, data
        # A class-conditional network (label_dim > 0) trains on (sample, label) pairs: refused here if the data has
        # none.
        self.conditional = getattr(model, "label_dim", 0) > 0
        if self.conditional and getattr(data, "labels", None) is None:
            raise ValueError(
                f"the model is class-conditional (label_dim={model.label_dim}) but the dataset "
                f"{getattr(data, 'name', '')!r} has no labels; use digits, mnist5k or cifar10, or label_dim=0"
            )
        self.steps, self.batch_size, self.lr, self.warmup, self.grad_clip = (
            int(steps),
            int(batch_size),
            float(lr),
            int(warmup),
            float(grad_clip),
        )
        # The fused kernel on a GPU (one launch for all parameters); on a CPU the multi-tensor one, which
        # torch leaves off there by default (a Python loop of small ops per parameter).
        self.kernel = (
            {"fused": True, "foreach": None} if self.device.type == "cuda" else {"fused": None, "foreach": True}
        )
        self.opt = torch.optim.Adam(
            self.model.parameters(), lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, **self.kernel
        )
        self.ema = EMA(self.model, ema_decay, ema_warmup)
        self._params = list(self.model.parameters())  # walked once: a deep network's module tree costs milliseconds
        use_bf16 = precision == "bf16" or (
            precision == "auto" and self.device.type == "cuda" and torch.cuda.is_bf16_supported()
        )
        self.autocast = (
            (lambda: torch.autocast(self.device.type, dtype=torch.bfloat16)) if use_bf16 else contextlib.nullcontext
        )
        self.forward = torch.compile(parallel) if compile else parallel
        self.step = 0
        self.seed = int(seed)
        self.model_config = model_config
        self.extra_state = dict(extra_state or {})

    def train_step(self) -> torch.Tensor:
        """One optimisation step; returns the detached loss (not synchronised, so a GPU is never stalled here)."""
        if not self.model.training:  # train() walks every module: only when sampling left it in eval mode
            self.model.train()
        noise = PerSampleNoise.for_step(
            self.seed, self.step, self.local_batch, offset=self.world.rank * self.local_batch
        )
        if self.conditional:
            x0, labels = self.data.batch(self.local_batch, noise, labels=True)
            x0, labels = to_device(x0, self.device), to_device(labels, self.device)
        else:
            x0, labels = to_device(self.data.batch(self.local_batch, noise), self.device), None
        # Dropout draws from torch's global generator: seeded per (seed, step, rank), so nothing needs saving, inside
        # fork_rng, so the caller's global stream is left as it was.
        with torch.random.fork_rng(devices=[torch.cuda.current_device()] if self.device.type == "cuda" else []):
            torch.manual_seed(
                int(np.random.SeedSequence(self.seed, spawn_key=(self.step, self.world.rank)).generate_state(1)[0])
            )
            with self.autocast():
                loss = self.loss(self.forward, x0, noise, **({"labels": labels} if labels is not None else {}))
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
        for group in self.opt.param_groups:
            group["lr"] = self.lr * min(1.0, (self.step + 1) / max(1, self.warmup))
        if self.grad_clip > 0:
            nn.utils.clip_grad_norm_(self._params, self.grad_clip)
        self.opt.step()
        self.ema.update(self.model, self.step)
        self.step += 1
        return loss.detach()

    def fit(
        self,
        steps: int | None = None,
        checkpoint: str | Path | None = None,
        checkpoint_every: int = 0,
        on_log=None,
        log_every: int = 50,
        progress: bool = True,
    ) -> list[float]:
        """Train up to step `steps` (default: all), checkpointing every `checkpoint_every` steps and at the end.

        Returns the losses of the global batches (averaged over ranks); `on_log` is called on rank 0 only.

        SIGINT (Ctrl-C) and SIGTERM (what SLURM sends before pre-emption) end the current step, write
        the checkpoint at that step and raise `TrainingInterrupted`; a second Ctrl-C stops at once.
        A non-finite loss or non-finite weights raise `TrainingDiverged` naming the step, and the
        checkpoint on disk stays the last good one.
        """
        until = self.steps if steps is None else min(int(steps), self.steps)
        losses, pending = [], []
        main = self.world.is_main
        bar = tqdm(total=until, initial=self.step, desc="train", disable=not (progress and main), dynamic_ncols=True)
        start, stopped_by, saved_at = time.perf_counter(), None, None
        with signals_to_flag() as stop:
            while self.step < until:
                pending.append(self.train_step())
                bar.update(1)
                save_now = checkpoint is not None and checkpoint_every > 0 and self.step % checkpoint_every == 0
                # One process checks its flag every step; ranks agree on stopping at the collectives below.
                asked = stop.signal is not None and self.world.size == 1
                if self.step % log_every == 0 or self.step == until or save_now or asked:
                    reduced = (
                        distributed.all_reduce(
                            torch.stack(
                                [*pending, torch.zeros_like(pending[0]) + float(stop.signal is not None)]
                            ).float(),
                            "mean",
                        )
                        .cpu()
                        .tolist()
                    )
                    new, stopping = reduced[:-1], reduced[-1] > 0
                    self._check_losses(new, checkpoint)
                    losses += new
                    pending = []
                    bar.set_postfix(loss=f"{sum(losses[-log_every:]) / len(losses[-log_every:]):.4f}")
                    if on_log is not None and main:
                        on_log(
                            self.step,
                            {
                                "loss": losses[-1],
                                "lr": self.opt.param_groups[0]["lr"],
                                "seconds": time.perf_counter() - start,
                            },
                        )
                    if stopping:
                        stopped_by = stop.signal or "a signal to another rank"
                        break
                if save_now:
                    self.save(checkpoint)
                    saved_at = self.step
        bar.close()
        # The final state, unless the periodic checkpoint of this very step already holds it.
        if checkpoint is not None and saved_at != self.step:
            self.save(checkpoint)
        if stopped_by is not None:
            raise TrainingInterrupted(stopped_by, self.step, checkpoint)
        return losses

    def _check_losses(self, new: list[float], checkpoint) -> None:
        bad = next((i for i, v in enumerate(new) if not math.isfinite(v)), None)
        if bad is not None:
            step = self.step - len(new) + bad + 1
            raise TrainingDiverged(
                f"the loss became {new[bad]} at step {step}; "
                + self._kept(checkpoint)
                + " (lower train.lr, or set train.grad_clip)"
            )

    def _kept(self, checkpoint) -> str:
        if checkpoint is None or not Path(checkpoint).exists():
            return "no checkpoint was written"
        return f"the last good checkpoint, {checkpoint} (step {peek_step(checkpoint)}), is kept"

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.opt.state_dict(),
            "step": self.step,
            "model_config": self.model_config,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "world_size": self.world.size,
            **self.extra_state,
        }

    def save(self, path) -> Path:
        """Rank 0 writes the checkpoint atomically; every rank returns once it is on disk.

        Refused (keeping the file) when the weights are not finite, or when the file already holds a
        later step: nothing newer is ever overwritten by something older.
        """
        path = Path(path)
        tensors = [*self.model.parameters(), *self.ema.model.parameters()]
        if not bool(torch.stack([torch.isfinite(p).all() for p in tensors]).all()):
            raise TrainingDiverged(
                f"the weights became NaN or infinite by step {self.step}; "
                + self._kept(path)
                + " (lower train.lr, or set train.grad_clip)"
            )
        if self.world.is_main:
            if path.exists() and peek_step(path) > self.step:
                raise CheckpointError(
                    f"{path} holds step {peek_step(path)}, later than this run's step {self.step}; "
                    "refusing to overwrite it with an older state (resume from it instead)"
                )
            save_checkpoint(path, self.state_dict())
        distributed.barrier()
        return path

    def resume(self, path) -> None:
        """Continue exactly where the checkpoint at `path` stopped, on any number of processes that divides the
        batch."""
        state = load_checkpoint(path, map_location=self.device)
        check_model_config(state, self.model_config, path)
        try:
            self.model.load_state_dict(state["model"])
            self.ema.load_state_dict(state["ema"])
            self.opt.load_state_dict(state["optimizer"])
            for group in self.opt.param_groups:
                # The kernel follows this run's device, not the device of the run that wrote the checkpoint.
                group.update(self.kernel)
        except (RuntimeError, KeyError, ValueError) as e:
            raise CheckpointError(f"{path} does not fit this model: {first_line(e)}") from e
        self.step = int(state["step"])
        self.seed = int(state["seed"])
