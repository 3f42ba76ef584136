"""Pseudo-Label (Lee, ICML 2013 workshop): the network's own confident class is the target of an unlabelled row.

Per step: labelled rows ``x`` (``views["train"]``) and unlabelled rows ``u`` through one view
(``u_view``, ``weak`` by default). With ``p = softmax(f(u))``, ``y' = argmax p`` (no gradient
through the target) and ``mask = max p >= threshold``:

``L = CE(f(x), y) + alpha(t) * 1/|u| sum mask * CE(f(u), y')``

``alpha(t)`` is Lee's ramp over epochs ``t`` (0-based): 0 before ``ramp_start``, rising linearly
to ``weight`` at ``ramp_end``, then flat (Lee: 0 until T1 = 100, 3 from T2 = 600 epochs on MNIST;
the defaults here scale that to runs of ~30 epochs: 0 for the first 2 epochs, full from 12).
Choices: Lee's pseudo labels take every unlabelled row (``threshold: 0``); the threshold of 0.95
(the one FixMatch uses, and the usual Pseudo-Label baseline in SSL benchmarks) keeps only
confident ones, the "hard pseudo labels above a threshold" of issue 9.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from ferkit.errors import ConfigError
from ferkit.methods.registry import register_method
from ferkit.methods.semisupervised import SemiSupervised, hard_pseudo_labels, masked_cross_entropy


@register_method
class PseudoLabel(SemiSupervised):
    name: ClassVar[str] = "pseudolabel"
    defaults: ClassVar[dict[str, Any]] = {
        "threshold": 0.95,  # confidence a prediction needs to become a pseudo label (0 = Lee's original: all)
        "weight": 1.0,  # alpha_f, the unlabelled weight after the ramp
        "ramp_start": 2,  # T1 (epochs): alpha is 0 before it
        "ramp_end": 12,  # T2 (epochs): alpha reaches `weight` here
        "u_view": "weak",  # view of the unlabelled rows: weak | strong | train | eval
    }

    def __init__(self, model, cfg, num_classes, info=None) -> None:
        super().__init__(model, cfg, num_classes, info)
        self.threshold = float(self.opts["threshold"])
        if not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"method.threshold must be in [0, 1], not {self.threshold}")
        if self.opts["u_view"] not in ("weak", "strong", "train", "eval"):
            raise ConfigError(f"method.u_view must be weak, strong, train or eval, not {self.opts['u_view']!r}")
        if int(self.opts["ramp_end"]) < int(self.opts["ramp_start"]):
            raise ConfigError("method.ramp_end must not be before method.ramp_start")

    def ramp(self, epoch: int) -> float:
        """Lee's alpha(t): 0 before T1, linear to alpha_f at T2, alpha_f after."""
        t1, t2, top = int(self.opts["ramp_start"]), int(self.opts["ramp_end"]), float(self.opts["weight"])
        if epoch < t1:
            return 0.0
        if epoch >= t2:
            return top
        return top * (epoch - t1) / (t2 - t1)

    def unlabelled_loss(self, logits_u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(loss, mask, pseudo labels): CE of the rows against their own confident class."""
        conf, pseudo = hard_pseudo_labels(logits_u)
        mask = conf >= self.threshold
        return masked_cross_entropy(logits_u, pseudo, mask, "batch"), mask, pseudo

    def train_step(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        x = self.views["train"](batch["images"])
        u = self.views[self.opts["u_view"]](batch["u_images"])
        (lx, lu), _ = self.forward_views([x, u])
        loss_x = self.supervised_loss(lx, batch["labels"])
        loss_u, mask, pseudo = self.unlabelled_loss(lu)
        alpha = self.ramp(self.epoch)
        loss = loss_x + alpha * loss_u
        self.count_pseudo_labels(pseudo, mask, batch.get("u_labels"))
        acc = (lx.argmax(1) == batch["labels"]).float().mean()
        return loss, {"loss": float(loss.detach()), "loss_x": float(loss_x.detach()),
                      "loss_u": float(loss_u.detach()), "alpha": alpha, "mask": float(mask.float().mean()),
                      "acc": float(acc)}
