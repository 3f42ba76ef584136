"""Plain cross-entropy, the baseline every paper compares with.

Target modes follow the FER+ paper: ``hard`` (majority label), ``soft`` (cross-entropy against
the vote distribution, FER+ "CEL"), ``draw`` (a label drawn from the vote distribution at each
step, FER+ "PLD") and ``multi`` (multi-label: -log of the summed probability of the accepted
labels, FER+ "ML"). ``auto`` picks from the dataset: FER+ ``crossentropy`` -> soft,
``probability`` -> draw, ``multi_target`` -> multi, anything else -> hard.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from ferkit.errors import ConfigError
from ferkit.methods.base import Method, soft_cross_entropy
from ferkit.methods.registry import register_method

TARGET_FROM_DATA = {"crossentropy": "soft", "probability": "draw", "multi_target": "multi"}


@register_method
class CrossEntropy(Method):
    name: ClassVar[str] = "ce"
    defaults: ClassVar[dict[str, Any]] = {
        "target": "auto",  # auto | hard | soft | draw | multi
        "label_smoothing": 0.0,
    }

    def __init__(self, model, cfg, num_classes, info=None) -> None:
        super().__init__(model, cfg, num_classes, info)
        target = cfg.get("target", "auto")
        if target == "auto":
            target = TARGET_FROM_DATA.get(self.info.get("target_mode") or "", "hard")
        if target not in ("hard", "soft", "draw", "multi"):
            raise ConfigError(f"method.target must be auto, hard, soft, draw or multi, not '{target}'")
        self.target = target

    def train_step(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        x = self.views["train"](batch["images"])
        logits = self.model(x)
        loss = self.loss(logits, batch)
        acc = (logits.argmax(1) == batch["labels"]).float().mean()
        return loss, {"loss": float(loss.detach()), "acc": float(acc)}

    def loss(self, logits: Tensor, batch: dict[str, Tensor]) -> Tensor:
        if self.target == "hard":
            labels = batch["labels"]
            return F.cross_entropy(logits, labels, ignore_index=-1,
                                   label_smoothing=float(self.cfg.get("label_smoothing", 0.0)))
        soft = batch.get("soft")
        if soft is None:
            raise ConfigError(f"method.target '{self.target}' needs soft targets, which this dataset lacks")
        if self.target == "soft":
            return soft_cross_entropy(logits, soft).mean()
        if self.target == "draw":
            drawn = torch.multinomial(soft.clamp_min(0) + 1e-12, 1).squeeze(1)
            return F.cross_entropy(logits, drawn)
        accepted = (soft > 0).float()  # multi: any accepted label may be the answer
        log_p = torch.logsumexp(F.log_softmax(logits, 1) + torch.log(accepted + 1e-12), dim=1)
        return -log_p.mean()
