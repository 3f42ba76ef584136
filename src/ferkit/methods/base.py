"""What a training method is: a module that owns the model and returns a loss per batch.

A method is one file: a subclass of :class:`Method` with a ``name``, a ``defaults`` dict (its
config keys, checked by the config loader) and a ``train_step``. Everything else (the loop,
optimiser, EMA, checkpoints, evaluation, logging, distributed gradients) lives in the engine.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor, nn


class Method(nn.Module):
    """Base class of training objectives.

    ``self.model`` is the FERModel; extra heads a method adds are sub-modules of the method and
    so are optimised, checkpointed and averaged across processes with it. ``self.views`` maps a
    policy name ("train", "weak", "strong", "eval") to a function turning a uint8 batch
    (B, C, H, W) into normalised float model input; the trainer fills it.
    """

    name: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, model: nn.Module, cfg: dict[str, Any], num_classes: int,
                 info: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.model = model
        self.cfg = cfg
        self.num_classes = num_classes
        #: facts about the training data: target_mode, class_counts, num_train
        self.info = dict(info or {})
        self.epoch = 0
        self.views: dict[str, Callable[[Tensor], Tensor]] = {}

    def train_step(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        """Loss for one batch and a dict of scalars to log. ``batch`` holds ``images`` (uint8),
        ``labels`` (long, -1 = none), ``index`` and, when the data has them, ``soft`` targets."""
        raise NotImplementedError

    def predict_logits(self, x: Tensor) -> Tensor:
        """Logits for normalised input at inference; methods with their own head override it."""
        return self.model(x)

    def uncertainty(self, x: Tensor) -> Tensor | None:  # noqa: ARG002 - methods may override
        """Per-sample uncertainty the method provides beyond the probabilities (None = none)."""
        return None

    def on_epoch_start(self, epoch: int) -> None:
        self.epoch = epoch


def soft_cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """Per-sample cross-entropy against a target distribution (rows summing to 1)."""
    return -(target * F.log_softmax(logits, dim=1)).sum(dim=1)
