"""Data-parallel processes: the process group from torchrun, SLURM or submitit, and the collectives sdeflow needs.

A single-process run never touches torch.distributed: with no process group every helper here is
the identity (rank 0 of a world of one). Under `torchrun` or Hydra's submitit launcher (SLURM or local),
`launch()` starts the group with NCCL for CUDA tensors and gloo for CPU tensors, so the same run
can keep its feature statistics on the CPU and its gradients on the GPU. (A group you start
yourself needs gloo for CPU tensors too: `init_process_group("cpu:gloo,cuda:nccl")`.)
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

LAUNCH_TIME_ENV = "SDEFLOW_LAUNCH_TIME"


class LaunchError(RuntimeError):
    """The environment asks for several processes but the process group cannot be set up."""


@dataclass(frozen=True)
class World:
    """This process's place among the data-parallel processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes checkpoints, results and logs."""
        return self.rank == 0


def world() -> World:
    """The current world: from the process group when one is up, else a world of one."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return World()


def is_main() -> bool:
    return world().is_main


def env_rank() -> int:
    """This process's rank as the launcher's environment states it (usable before the process group starts)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    for key in ("RANK", "SUBMITIT_LOCAL_GLOBALID", "SLURM_PROCID"):
        if key in os.environ:
            return int(os.environ[key])
    return 0


def _env_world() -> tuple[World, str, str] | None:
    """(world, master address, master port) that torchrun or a submitit job describes; None for one process."""
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:  # torchrun, or a user who exports the variables by hand
        w = World(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)))
        return (w, env.get("MASTER_ADDR", "127.0.0.1"), env.get("MASTER_PORT", "29500")) if w.size > 1 else None
    # A task of a submitit job (Hydra's submitit launcher, on SLURM or local). A plain sbatch script is
    # not one: its SLURM_NTASKS describes the allocation, not processes that will join a group.
    if "SUBMITIT_EXECUTOR" not in env:
        return None
    import submitit

    job = submitit.JobEnvironment()
    if job.num_tasks <= 1:
        return None
    # A port that all tasks of one job agree on without talking, and that differs between jobs.
    port = 20000 + int("".join(c for c in str(job.job_id) if c.isdigit()) or 0) % 20000
    return World(job.global_rank, job.num_tasks, job.local_rank), job.hostnames[0], str(port)


def launch(timeout_s: float = 3600) -> bool:
    """Start the process group the environment asks for; True if this call started it (and should end it).

    `timeout_s` bounds how long a rank waits at a collective (for instance while rank 0 alone writes
    a large checkpoint or sample file) before the job fails rather than hangs.

    Also agrees on one launch time across ranks (rank 0's clock), which the configs' run directory
    reads, so all ranks of a torchrun job write into one output directory.
    """
    if dist.is_available() and dist.is_initialized():
        return False
    found = _env_world()
    if found is None:
        return False
    w, addr, port = found
    if not dist.is_available():
        raise LaunchError(f"{w.size} processes were asked for, but this torch build has no torch.distributed")
    os.environ.update(
        MASTER_ADDR=addr, MASTER_PORT=port, RANK=str(w.rank), WORLD_SIZE=str(w.size), LOCAL_RANK=str(w.local_rank)
    )
    if torch.cuda.is_available():
        torch.cuda.set_device(w.local_rank % torch.cuda.device_count())
        backend = "cpu:gloo,cuda:nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend, rank=w.rank, world_size=w.size, timeout=timedelta(seconds=timeout_s))
    stamp = [repr(launch_time())]
    dist.broadcast_object_list(stamp, src=0)
    os.environ[LAUNCH_TIME_ENV] = f"{stamp[0]}@{os.getpid()}"
    return True


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def session():
    """`launch()` on entry; on exit, end the process group if this session started it."""
    started = launch()
    try:
        yield world()
        if started:
            # Every rank done before any tears its connections down: a rank that destroys the group while its peer
            # is still in gloo's last exchange can abort that peer ("terminate called without an active exception").
            # Only on a clean exit: after an error the peer may never arrive.
            dist.barrier()
    finally:
        if started:
            shutdown()


def launch_time() -> float:
    """The time the job started: shared by all ranks once `launch()` ran, else this process's first call.

    Stored as "time@pid" so that a process started by another sdeflow process does not inherit its
    parent's launch time (and with it the parent's default run folder).
    """
    stamp, _, pid = os.environ.get(LAUNCH_TIME_ENV, "").partition("@")
    if pid != str(os.getpid()):
        stamp = repr(time.time())
        os.environ[LAUNCH_TIME_ENV] = f"{stamp}@{os.getpid()}"
    return float(stamp)


def device(name: str = "cpu") -> torch.device:
    """The device of this rank: "cuda" becomes the rank's own GPU (cuda:LOCAL_RANK). Refused clearly when unusable
    here."""
    try:
        d = torch.device(name)
    except (RuntimeError, TypeError) as e:
        raise ValueError(
            f"device must be 'cpu', 'cuda' or 'cuda:N' (or another torch device type), got {name!r}"
        ) from e
    if d.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={name}, but this machine has no usable CUDA device (torch.cuda.is_available() is false); "
            "use device=cpu"
        )
    if d.type == "cuda" and d.index is not None and d.index >= torch.cuda.device_count():
        raise ValueError(f"device={name}, but this machine has {torch.cuda.device_count()} CUDA device(s)")
    if d.type == "cuda" and d.index is None and world().size > 1:
        return torch.device("cuda", world().local_rank % torch.cuda.device_count())
    return d


def shard(n: int, w: World | None = None, unit: int = 1) -> range:
    """The contiguous block of indices 0..n-1 that rank `w.rank` handles, in whole blocks of `unit` indices.

    With `unit` the batch size, every batch holds the same samples whatever the number of
    processes, so a batched network computes each sample bit for bit as on one process.
    Ranks' numbers of units differ by at most one.
    """
    w = w or world()
    if n < 0 or unit < 1:
        raise ValueError(f"need n >= 0 and unit >= 1, got n={n}, unit={unit}")
    units = -(-int(n) // unit)
    base, extra = divmod(units, w.size)
    start = w.rank * base + min(w.rank, extra)
    stop = start + base + (w.rank < extra)
    return range(min(n, start * unit), min(n, stop * unit))


def barrier() -> None:
    if world().size > 1:
        dist.barrier()


def all_reduce(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """In place across ranks ("sum", "max" or "mean"); returns the tensor."""
    if world().size > 1:
        ops = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "mean": dist.ReduceOp.SUM}
        if op not in ops:
            raise ValueError(f"op must be one of {sorted(ops)}, got {op!r}")
        dist.all_reduce(tensor, ops[op])
        if op == "mean":
            tensor /= world().size
    return tensor


def gather_rows(x: torch.Tensor) -> torch.Tensor | None:
    """Rank 0 receives all ranks' rows of x concatenated in rank order; other ranks get None."""
    w = world()
    if w.size == 1:
        return x
    sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(w.size)]
    dist.all_gather(sizes, torch.tensor([len(x)]))
    width = int(max(sizes).item())
    padded = torch.zeros((width, *x.shape[1:]), dtype=x.dtype, device=x.device)
    padded[: len(x)] = x
    parts = [torch.empty_like(padded) for _ in range(w.size)] if w.is_main else None
    dist.gather(padded, parts, dst=0)
    if not w.is_main:
        return None
    return torch.cat([p[: int(k.item())] for p, k in zip(parts, sizes)])


def broadcast_module(module: torch.nn.Module) -> torch.nn.Module:
    """Give every rank rank 0's parameters and buffers (e.g. a feature network trained on each rank)."""
    if world().size > 1:
        with torch.no_grad():
            for t in [*module.parameters(), *module.buffers()]:
                dist.broadcast(t.data, src=0)
    return module
