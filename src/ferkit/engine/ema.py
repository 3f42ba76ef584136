"""Exponential moving average of a model's weights (used by evaluation and by Ada-CM/FixMatch)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Keeps ``shadow``, a frozen copy of ``model`` whose floats track ``decay * shadow + (1-decay) * model``.

    Integer buffers (BatchNorm's counter) are copied. The warm-up ``min(decay, (1+n)/(10+n))``
    keeps the average from being dominated by the random initial weights early in a run.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True) -> None:
        self.decay = decay
        self.warmup = warmup
        self.updates = 0
        self.shadow = copy.deepcopy(model).eval()
        for p in self.shadow.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.decay
        if self.warmup:
            d = min(d, (1 + self.updates) / (10 + self.updates))
        msd = model.state_dict()
        for name, value in self.shadow.state_dict().items():
            src = msd[name].detach()
            if value.dtype.is_floating_point:
                value.mul_(d).add_(src.to(value.dtype), alpha=1 - d)
            else:
                value.copy_(src)

    def state_dict(self) -> dict:
        return {"shadow": self.shadow.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        self.shadow.load_state_dict(state["shadow"])
        self.updates = int(state["updates"])
