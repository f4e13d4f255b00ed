"""The network behind `torch.compile` for sampling loops: fused kernels and, on a GPU, CUDA graphs.

A fixed-grid sampler calls the network with the same shapes at every step, which is the case
`torch.compile` serves best. Its "reduce-overhead" mode records the network's kernels once as a
CUDA graph and replays them, so at small batches the loop no longer waits on the CPU to launch
hundreds of kernels per step. The solver's own arithmetic stays eager: it is a few tensor ops per
step, measured in `benchmarks/sampler_overhead.py --compile`.

CUDA graphs reuse their output buffers: the next replay overwrites the previous output. Multistep
solvers keep earlier outputs in their history, so every output is cloned before it is returned.
"""

from __future__ import annotations

import torch
from torch import nn

from sdeflow.score.function import ScoreFunction

# torch.compile's modes; the two that record CUDA graphs reuse their output memory (see the module docstring).
MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
_GRAPHED = ("reduce-overhead", "max-autotune")


def check_mode(mode) -> str | None:
    """`mode` if torch.compile knows it (None: no compilation), else one line naming what is accepted."""
    if mode is None or mode in MODES:
        return mode
    raise ValueError(
        f"compile must be null (no compilation) or one of torch.compile's modes {', '.join(MODES)}; got {mode!r}"
    )


class Compiled(nn.Module):
    """`model` compiled with `torch.compile(mode=mode, dynamic=False)`; called and saved like the model itself.

    Every new input shape compiles once (a run's last, smaller batch does too); `state_dict()` is the
    model's own, so checkpoints are unchanged.

    Args:
        model: the network, `model(x, t, **cond)`.
        mode: a `torch.compile` mode (`MODES`); "reduce-overhead" records CUDA graphs on a GPU.
        backend: torch.compile's backend ("inductor"; "aot_eager" traces without generating code, for tests).
    """

    def __init__(self, model: nn.Module, mode: str = "reduce-overhead", backend: str = "inductor"):
        super().__init__()
        self.model = model
        self.mode = check_mode(mode)
        # torch.compile refuses a mode with a backend other than inductor: the mode is inductor's option.
        options = {"mode": mode} if backend == "inductor" else {}
        self._compiled = torch.compile(model, backend=backend, dynamic=False, **options)
        self._graphed = backend == "inductor" and mode in _GRAPHED

    def forward(self, x, t, **cond):
        if self._graphed:
            # Tell the CUDA-graph runtime a new call begins, so it may reuse the previous output's memory ...
            torch.compiler.cudagraph_mark_step_begin()
            # ... which is why the caller gets a copy.
            return self._compiled(x, t, **cond).clone()
        return self._compiled(x, t, **cond)

    def state_dict(self, *args, **kwargs):
        return self.model.state_dict(*args, **kwargs)

    def __getattr__(self, name):
        # Attributes the apps read off a network (label_dim, ...) are the model's.
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.model, name)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"


def compile_score(score, mode):
    """`score` (a `ScoreFunction`) with its network compiled in `mode`; `score` itself when mode is None."""
    if check_mode(mode) is None:
        return score
    return ScoreFunction(Compiled(score.model, mode), score.sde, score.prediction, **score.cond)
