"""Start a function on W local processes that join one process group (the benchmarks' launcher)."""

from __future__ import annotations

import os
import socket

import torch
import torch.multiprocessing as mp


def spawn(fn, world: int, *args, threads: int = 1) -> None:
    """Run fn(*args) on `world` fresh processes, each with `threads` torch threads, joined by
    `sdeflow.core.distributed.launch()`."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_entry, args=(world, port, threads, fn, args), nprocs=world, start_method="spawn", join=True)


def _entry(rank, world, port, threads, fn, args):
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(threads)
    from sdeflow.core import distributed

    with distributed.session():
        fn(*args)
