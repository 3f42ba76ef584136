"""FixMatch (Sohn et al., NeurIPS 2020): a weak view's confident prediction is the target of a strong view.

Per step: labelled rows ``x`` (``views["train"]``; FixMatch uses its weak augmentation, which a
config gets with ``augment.train: weak``) and ``mu`` times as many unlabelled rows ``u`` (the
trainer's ``data.unlabelled_ratio``, 7 as in the paper), each seen through ``views["weak"]``
and ``views["strong"]`` (RandAugment). With ``q = softmax(f(weak(u)))`` (no gradient),
``y_hat = argmax q`` and ``mask = max q >= threshold`` (0.95):

``L = CE(f(x), y) + lambda_u * 1/|u| sum mask * CE(f(strong(u)), y_hat)``

(divided by the whole unlabelled batch, so the rows below the threshold count as zeros, as in
the paper). All three views go through the network in one batch (BatchNorm sees them together).
The EMA of the weights that the paper evaluates is the trainer's ``train.ema``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from ferkit.errors import ConfigError
from ferkit.methods.registry import register_method
from ferkit.methods.semisupervised import SemiSupervised, hard_pseudo_labels, masked_cross_entropy


@register_method
class FixMatch(SemiSupervised):
    name: ClassVar[str] = "fixmatch"
    defaults: ClassVar[dict[str, Any]] = {
        "threshold": 0.95,  # tau: confidence a weak-view prediction needs to become a pseudo label
        "lambda_u": 1.0,  # weight of the unlabelled loss
    }

    def __init__(self, model, cfg, num_classes, info=None) -> None:
        super().__init__(model, cfg, num_classes, info)
        self.threshold = float(self.opts["threshold"])
        self.lambda_u = float(self.opts["lambda_u"])
        if not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"method.threshold must be in [0, 1], not {self.threshold}")

    def unlabelled_loss(self, logits_weak: Tensor, logits_strong: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(loss, mask, pseudo labels): CE of the strong view against the weak view's confident class."""
        conf, pseudo = hard_pseudo_labels(logits_weak)
        mask = conf >= self.threshold
        return masked_cross_entropy(logits_strong, pseudo, mask, "batch"), mask, pseudo

    def train_step(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        u = batch["u_images"]
        x, weak, strong = self.views["train"](batch["images"]), self.views["weak"](u), self.views["strong"](u)
        (lx, lw, ls), _ = self.forward_views([x, weak, strong])
        loss_x = self.supervised_loss(lx, batch["labels"])
        loss_u, mask, pseudo = self.unlabelled_loss(lw, ls)
        loss = loss_x + self.lambda_u * loss_u
        self.count_pseudo_labels(pseudo, mask, batch.get("u_labels"))
        acc = (lx.argmax(1) == batch["labels"]).float().mean()
        return loss, {"loss": float(loss.detach()), "loss_x": float(loss_x.detach()),
                      "loss_u": float(loss_u.detach()), "mask": float(mask.float().mean()), "acc": float(acc)}
