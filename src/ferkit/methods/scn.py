"""SCN: Self-Cure Network (Wang et al., CVPR 2020, "Suppressing Uncertainties for Large-Scale FER").

Why: ambiguous or mislabelled faces should count less, and clearly mislabelled ones should get
a better label. Three pieces, as in the authors' code (github kaiwang960112/Self-Cure-Network):

- **self-attention importance**: ``alpha = sigmoid(w^T f + b)`` per sample from the pooled
  features ``f`` (after the model's dropout, like their ``Res18Feature``), and the logits are
  weighted by it, ``z = alpha * fc(f)``; the loss is the CE of ``z`` (logit-weighted CE).
- **rank regularisation**: sort the batch's ``alpha``; the top ``int(beta * B)`` form the high
  group, the rest the low group; ``L_RR = max(0, delta1 - (mean_high - mean_low))``.
- **relabelling**: from the ``relabel_epoch``-th epoch on (1-based, as their ``i >= relabel_epoch``;
  default 10), a sample whose ``max_k p_k - p_label > delta2`` (probabilities of ``z`` in that
  training step) gets the predicted class as its label from then on.

Loss: ``CE(z, current labels) + L_RR``. The current labels live in the buffer ``relabels``
(one entry per training row, indexed by ``batch["index"]``; -1 = keep the dataset's label), so
they are in ``state_dict``: a resumed run continues with the labels it had, and the exported
model keeps them (``relabels`` / :meth:`current_labels` for analyses).

Inference and the signals it reports:
- ``predict_logits`` = ``alpha * fc(f)`` as the authors' test code (``weighted_inference``):
  these are the logits the CE was minimised on, so their probabilities are the trained ones
  (``fc(f)`` alone is sharper by ``1 / alpha``). ``alpha > 0`` never changes the predicted
  class; a low-importance face gets flatter probabilities. ``weighted_inference: false`` gives
  ``fc(f)``.
- :meth:`sample_weights` gives ``alpha`` (the importance weight, for analyses such as finding
  flipped labels), and ``uncertainty`` = ``1 - alpha``, in (0, 1): 0 = fully trusted.
- class activation maps use ``model.fc`` (no ``cam_weights``): ``alpha`` scales all classes of
  a face alike, so the top class and the min-max-scaled map are the same with or without it.

Choices the paper leaves open (options): ``relabel_low_only`` (the paper's text relabels only
the low-importance group; the authors' code relabels any sample over the margin, the default
here); relabelling skips unlabelled rows (label -1). Under torchrun each process relabels its
share of the batch and the changes are all-gathered, so every process keeps the same labels.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ferkit.engine import distributed as dist
from ferkit.errors import ConfigError
from ferkit.methods.base import Method, masked_cross_entropy
from ferkit.methods.registry import register_method


@register_method
class SCN(Method):
    name: ClassVar[str] = "scn"
    defaults: ClassVar[dict[str, Any]] = {
        "beta": 0.7,  # fraction of the batch in the high-importance group
        "delta1": 0.15,  # rank regularisation margin between the groups' mean weights
        "delta2": 0.2,  # relabelling margin: max prob - prob of the current label
        "relabel": True,
        "relabel_epoch": 10,  # 1-based: relabel from this epoch on (authors: 10 of 70)
        "relabel_low_only": False,  # paper text: only the low-importance group; code: everyone
        "weighted_inference": True,  # predict alpha * fc(f) as the authors' test code
        "label_smoothing": 0.0,
    }

    def __init__(self, model, cfg, num_classes, info=None) -> None:
        super().__init__(model, cfg, num_classes, info)
        c = {**self.defaults, **cfg}
        if not 0.0 < float(c["beta"]) < 1.0:
            raise ConfigError(f"method.beta must be in (0, 1), got {c['beta']}")
        if float(c["delta1"]) < 0 or float(c["delta2"]) < 0:
            raise ConfigError("method.delta1 and method.delta2 must be >= 0")
        if int(c["relabel_epoch"]) < 1:
            raise ConfigError(f"method.relabel_epoch is 1-based and must be >= 1, got {c['relabel_epoch']}")
        self.beta, self.delta1, self.delta2 = float(c["beta"]), float(c["delta1"]), float(c["delta2"])
        self.relabel_on, self.relabel_epoch = bool(c["relabel"]), int(c["relabel_epoch"])
        self.relabel_low_only = bool(c["relabel_low_only"])
        self.weighted_inference = bool(c["weighted_inference"])
        self.smoothing = float(c["label_smoothing"])
        self.attention = nn.Linear(model.feature_dim, 1)
        n = int(self.info.get("num_train") or 0)
        #: the label each training row trains with when relabelled; -1 = the dataset's own label
        self.register_buffer("relabels", torch.full((n,), -1, dtype=torch.long))

    # -- the pieces -----------------------------------------------------------------------
    def forward_parts(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``alpha`` (B,) and the unweighted logits ``fc(f)`` (B, K) for normalised input."""
        f = self.model.dropout(self.model.embed(x))
        return torch.sigmoid(self.attention(f)).squeeze(1), self.model.fc(f)

    def rank_regularization(self, alpha: Tensor) -> tuple[Tensor, Tensor]:
        """``max(0, delta1 - (mean_high - mean_low))`` and the (B,) bool mask of the high group."""
        B = alpha.shape[0]
        tops = int(B * self.beta)
        high = torch.zeros(B, dtype=torch.bool, device=alpha.device)
        if tops < 1 or tops >= B:
            return alpha.sum() * 0, high
        order = alpha.argsort(descending=True)
        high[order[:tops]] = True
        gap = alpha[order[:tops]].mean() - alpha[order[tops:]].mean()
        return F.relu(self.delta1 - gap), high

    def current_labels(self, index: Tensor, labels: Tensor) -> Tensor:
        """The labels rows ``index`` train with now: relabelled where SCN relabelled them."""
        self._ensure_size(index)
        new = self.relabels[index]
        return torch.where(new >= 0, new, labels)

    def relabel_now(self) -> bool:
        """Whether this epoch relabels (``self.epoch`` is 0-based, ``relabel_epoch`` 1-based)."""
        return self.relabel_on and self.epoch + 1 >= self.relabel_epoch

    @torch.no_grad()
    def relabel(self, index: Tensor, labels: Tensor, logits: Tensor, high: Tensor | None = None) -> Tensor:
        """Relabel the rows whose ``max p - p[label] > delta2`` (p = softmax of the weighted
        logits); returns the (B,) bool mask of the rows changed in this batch."""
        self._ensure_size(index)
        p = logits.float().softmax(1)
        p_max, pred = p.max(1)
        p_lab = p.gather(1, labels.clamp_min(0)[:, None]).squeeze(1)
        change = (p_max - p_lab > self.delta2) & (labels >= 0)
        if self.relabel_low_only and high is not None:
            change &= ~high
        new = torch.where(change, pred, torch.full_like(pred, -1))
        idx, new = self._gather(index, new)
        self._ensure_size(idx)
        upd = new >= 0
        self.relabels[idx[upd]] = new[upd]
        return change

    def train_step(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        x = self.views["train"](batch["images"])
        labels = self.current_labels(batch["index"], batch["labels"])
        alpha, raw = self.forward_parts(x)
        logits = alpha[:, None] * raw
        ce = masked_cross_entropy(logits, labels, self.smoothing)
        rr, high = self.rank_regularization(alpha)
        loss = ce + rr
        logs = {"loss": float(loss.detach()), "ce": float(ce.detach()), "rr": float(rr.detach()),
                "acc": float((logits.detach().argmax(1) == labels).float().mean()),
                "weight": float(alpha.detach().mean())}
        if self.relabel_now():
            changed = self.relabel(batch["index"], labels, logits.detach(), high)
            logs["relabeled_batch"] = float(changed.sum())  # the running total is in on_epoch_end
        return loss, logs

    def on_epoch_end(self, epoch: int) -> dict[str, float]:  # noqa: ARG002 - the hook's signature
        """The number of training rows relabelled so far, for the epoch's log row."""
        return {"relabeled": float((self.relabels >= 0).sum())}

    # -- inference ------------------------------------------------------------------------
    def predict_logits(self, x: Tensor) -> Tensor:
        alpha, raw = self.forward_parts(x)
        return alpha[:, None] * raw if self.weighted_inference else raw

    def sample_weights(self, x: Tensor) -> Tensor:
        """The importance weight ``alpha`` (B,) in (0, 1) of each sample (call in eval mode)."""
        return self.forward_parts(x)[0]

    def uncertainty(self, x: Tensor) -> Tensor:
        """``1 - alpha``: low importance = high uncertainty."""
        return 1.0 - self.sample_weights(x)

    # -- the label buffer -----------------------------------------------------------------
    def _ensure_size(self, index: Tensor) -> None:
        """Grow ``relabels`` when a row lies beyond it (a method built without ``num_train``)."""
        need = int(index.max()) + 1 if index.numel() else 0
        if need > self.relabels.numel():
            grown = torch.full((need,), -1, dtype=torch.long, device=self.relabels.device)
            grown[: self.relabels.numel()] = self.relabels
            self.relabels = grown

    @staticmethod
    def _gather(index: Tensor, new: Tensor) -> tuple[Tensor, Tensor]:
        """Every process's (index, new label) pairs, so all keep the same buffer under torchrun."""
        if not dist.is_distributed():
            return index, new
        world = dist.world_size()
        idx_all = [torch.empty_like(index) for _ in range(world)]
        new_all = [torch.empty_like(new) for _ in range(world)]
        torch.distributed.all_gather(idx_all, index.contiguous())
        torch.distributed.all_gather(new_all, new.contiguous())
        return torch.cat(idx_all), torch.cat(new_all)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # the buffer's length is the training set's: take the saved one's (inference builds
        # the method without num_train, so it starts empty)
        key = prefix + "relabels"
        if key in state_dict and state_dict[key].shape != self.relabels.shape:
            self.relabels = torch.full(state_dict[key].shape, -1, dtype=torch.long, device=self.relabels.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
