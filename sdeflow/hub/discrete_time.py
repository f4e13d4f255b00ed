"""A network trained on integer timesteps k = 0 .. N-1, read at sdeflow's continuous time t = (k + 1) / N."""

from __future__ import annotations

import torch
from torch import nn

from sdeflow.core.checks import integer


class DiscreteTimeModel(nn.Module):
    """Calls `net(x, k, **cond)` with k = t N - 1: at the training times the model's own integer timestep.

    Times reach the network in the samples' dtype; in float32 a training time carries an error of
    about 1e-4 timesteps at N = 1000. A k within `snap` of an integer is therefore set to it, so
    solvers that step on the training times (`sdeflow.LeadingTimesteps`) feed the model exactly the
    timesteps it was trained on; times between them (log-SNR or Karras grids) give fractional k, which
    sinusoidal timestep embeddings take as they are (DPM-Solver's discrete wrapper does the same).

    Args:
        net: the network, `net(x, timesteps, **cond)` returning a tensor of x's shape.
        N: the number of training timesteps (the beta table's length).
        snap: how close to an integer k is taken as that integer.
    """

    def __init__(self, net: nn.Module, N: int, snap: float = 1e-3):
        super().__init__()
        integer("N", N)
        self.net, self.N, self.snap = net, int(N), float(snap)

    @property
    def label_dim(self) -> int:
        """The wrapped network's number of classes (0: unconditional)."""
        return getattr(self.net, "label_dim", 0)

    def forward(self, x: torch.Tensor, t: torch.Tensor, **cond) -> torch.Tensor:
        k = t.double() * self.N - 1
        nearest = k.round()
        k = torch.where((k - nearest).abs() < self.snap, nearest, k)
        return self.net(x, k.to(t.dtype), **cond)
