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

    Semi-supervised methods set ``uses_unlabelled = True``: the trainer then adds an unlabelled
    batch to every step (``u_images``, ``u_index``; ``u_labels`` are the true labels, for logging
    only, never for a loss) and refuses a run without ``data.labelled``. Those that do not (``ce``)
    train on the labelled part alone. The trainer also sets ``ema_model()`` (the EMA copy of the
    method, or None when EMA is off) and ``labelled_data()`` (labelled training images uint8
    (N, C, H, W) on the CPU, and labels) for methods that need statistics of the model (Ada-CM's
    margins); both return None outside a trainer.
    """

    name: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {}
    uses_unlabelled: ClassVar[bool] = False

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
        self.ema_model: Callable[[], nn.Module | None] = _nothing
        self.labelled_data: Callable[[], tuple[Tensor, Tensor] | None] = _nothing

    def train_step(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        """Loss for one batch and a dict of scalars to log. ``batch`` holds ``images`` (uint8),
        ``labels`` (long, -1 = none), ``index`` and, when the data has them, ``soft`` targets;
        semi-supervised runs add ``u_images``, ``u_index`` and ``u_labels`` (see the class docstring)."""
        raise NotImplementedError

    def predict_logits(self, x: Tensor) -> Tensor:
        """Logits for normalised input at inference; methods with their own head override it."""
        return self.model(x)

    def uncertainty(self, x: Tensor) -> Tensor | None:  # noqa: ARG002 - methods may override
        """Per-sample uncertainty the method provides beyond the probabilities (None = none)."""
        return None

    def on_epoch_start(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, epoch: int) -> dict[str, Any]:  # noqa: ARG002 - methods may override
        """Runs after the epoch's last step, before evaluation and the end-of-epoch checkpoint (so
        state it changes is saved with that epoch); the returned values join the epoch's log row.
        Keys with a ``/`` (per-class values) go to the logs but not to the console line."""
        return {}


def _nothing() -> None:
    """Default of the trainer-provided callables: no EMA model, no labelled data."""
    return None


def soft_cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """Per-sample cross-entropy against a target distribution (rows summing to 1)."""
    return -(target * F.log_softmax(logits, dim=1)).sum(dim=1)


def masked_mean(values: Tensor, labels: Tensor) -> Tensor:
    """Mean of per-sample ``values`` over the labelled rows (label -1 = none); 0, not NaN, when
    no row is labelled (a batch of an unlabelled or noisy-relabelled stream can have none)."""
    keep = (labels >= 0).to(values.dtype)
    return (values * keep).sum() / keep.sum().clamp_min(1)


def masked_cross_entropy(logits: Tensor, labels: Tensor, smoothing: float = 0.0) -> Tensor:
    """Mean cross-entropy over the labelled rows (label -1 = none), see :func:`masked_mean`."""
    ce = F.cross_entropy(logits, labels.clamp_min(0), reduction="none", label_smoothing=smoothing)
    return masked_mean(ce, labels)
