"""Exponential moving average of parameters, with the reference's warm-up."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """ema <- d ema + (1 - d) param, d = min(decay, (1 + step) / (10 + step)) when `warmup` is on."""

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True):
        if not 0 <= decay < 1:
            raise ValueError(f"EMA decay must lie in [0, 1), got {decay}")
        self.decay, self.warmup = float(decay), bool(warmup)
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self._source, self._lists = None, None

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step)) if self.warmup else self.decay
        ema_params, params, ema_buffers, buffers = self._tensors(model)
        # One fused update over all parameters rather than a Python loop of small kernels.
        torch._foreach_lerp_(ema_params, params, 1 - d)
        if buffers:
            torch._foreach_copy_(ema_buffers, buffers)

    def _tensors(self, model: nn.Module):
        # Walking the module tree for its parameters costs milliseconds on a deep network, every step:
        # the lists are made once per source model (load_state_dict copies in place, so they stay valid).
        if self._source is not model:
            self._source = model
            self._lists = (
                [p for p in self.model.parameters()],
                [p.detach() for p in model.parameters()],
                [b for b in self.model.buffers()],
                [b for b in model.buffers()],
            )
        return self._lists

    def state_dict(self) -> dict:
        return self.model.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state)
