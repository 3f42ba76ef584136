"""Exponential moving average of a model's weights (used by evaluation and by Ada-CM/FixMatch)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Keeps ``shadow``, a frozen copy of ``model`` whose floats track ``decay * shadow + (1-decay) * model``.

    Integer buffers (BatchNorm's counter) are copied. The warm-up ``min(decay, (1+n)/(10+n))``
    keeps the average from being dominated by the random initial weights early in a run.
    Frozen weights (``requires_grad`` off when the EMA is made) and the buffers of modules with only
    frozen weights (a frozen block's BatchNorm statistics) are copied too: averaging a constant
    drifts it by rounding, and the shadow's frozen blocks must stay bit-identical to the model's
    (their cached activations are found by a hash of them, :mod:`ferkit.engine.trunk_cache`).
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True) -> None:
        self.decay = decay
        self.warmup = warmup
        self.updates = 0
        self.shadow = copy.deepcopy(model).eval()
        for p in self.shadow.parameters():
            p.requires_grad_(False)
        self.copied = {n for n, p in model.named_parameters() if not p.requires_grad}
        for prefix, module in model.named_modules():
            params = list(module.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                self.copied |= {f"{prefix}.{b}" if prefix else b for b, _ in module.named_buffers(recurse=False)}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.decay
        if self.warmup:
            d = min(d, (1 + self.updates) / (10 + self.updates))
        msd = model.state_dict()
        for name, value in self.shadow.state_dict().items():
            src = msd[name].detach()
            if value.dtype.is_floating_point and name not in self.copied:
                value.mul_(d).add_(src.to(value.dtype), alpha=1 - d)
            else:
                value.copy_(src)

    def state_dict(self) -> dict:
        return {"shadow": self.shadow.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        self.shadow.load_state_dict(state["shadow"])
        self.updates = int(state["updates"])
