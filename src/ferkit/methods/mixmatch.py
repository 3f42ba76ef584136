"""MixMatch (Berthelot et al., NeurIPS 2019): sharpened guesses on unlabelled rows, MixUp over everything.

Per step: labelled rows ``x`` (``views["train"]``) with one-hot targets ``p``; unlabelled rows
``u`` seen through ``k`` (2) weak views. The guess ``q = sharpen(mean_k softmax(f(u_k)), T)``
(``T`` = 0.5; no gradient, computed in training mode as in the paper's code) is the target of
every view of ``u``. All inputs and targets are then mixed with a shuffled copy of themselves:
``lam ~ Beta(alpha, alpha)``, ``lam' = max(lam, 1 - lam)`` (so a mixed row stays closer to its
own input), one ``lam`` per step as in the paper's code. Loss:

``L = CE(f(x'), p') + lambda_u(t) * mean (softmax(f(u')) - q')^2``

(squared error averaged over rows and classes, as in the paper's code), ``lambda_u`` = 75 (the
paper's CIFAR-10 value) ramped linearly from 0 over the first ``ramp_epochs`` epochs (the
paper: 16 of its "epochs" of 1,024 steps; here the ramp rises once an epoch). The random
draws (Beta, permutation) use the global torch RNG, so the trainer's resume stays exact.

Logged: ``loss_x``, ``loss_u``, ``lambda_u``; every guess counts as "above" in the pseudo-label
statistics (MixMatch has no threshold), so ``pl_above_precision`` is the guesses' accuracy.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from ferkit.errors import ConfigError
from ferkit.methods.base import soft_cross_entropy
from ferkit.methods.registry import register_method
from ferkit.methods.semisupervised import SemiSupervised


def sharpen(p: Tensor, temperature: float) -> Tensor:
    """``p^(1/T) / sum p^(1/T)`` per row: a lower-entropy guess (T -> 0 gives one-hot)."""
    q = p.pow(1.0 / temperature)
    return q / q.sum(1, keepdim=True)


def mixup(inputs: Tensor, targets: Tensor, lam: float, perm: Tensor) -> tuple[Tensor, Tensor]:
    """MixUp of each row with row ``perm[i]``: ``lam' x_i + (1 - lam') x_perm[i]``, ``lam' = max(lam, 1 - lam)``."""
    lam = max(lam, 1.0 - lam)
    return lam * inputs + (1 - lam) * inputs[perm], lam * targets + (1 - lam) * targets[perm]


@register_method
class MixMatch(SemiSupervised):
    name: ClassVar[str] = "mixmatch"
    defaults: ClassVar[dict[str, Any]] = {
        "k": 2,  # weak views of each unlabelled row averaged for the guess
        "temperature": 0.5,  # sharpening T
        "alpha": 0.75,  # Beta(alpha, alpha) of MixUp
        "lambda_u": 75.0,  # weight of the squared-error unlabelled loss (paper: 75 on CIFAR-10)
        "ramp_epochs": 16,  # lambda_u rises linearly from 0 over these epochs
    }

    def __init__(self, model, cfg, num_classes, info=None) -> None:
        super().__init__(model, cfg, num_classes, info)
        o = self.opts
        if int(o["k"]) < 1:
            raise ConfigError("method.k must be >= 1")
        if float(o["temperature"]) <= 0 or float(o["alpha"]) <= 0:
            raise ConfigError("method.temperature and method.alpha must be > 0")

    def ramp(self, epoch: int) -> float:
        """``lambda_u`` at ``epoch``: linear from 0 to its value over ``ramp_epochs``."""
        n = int(self.opts["ramp_epochs"])
        return float(self.opts["lambda_u"]) * (1.0 if n <= 0 else min(1.0, epoch / n))

    def train_step(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        o = self.opts
        k = int(o["k"])
        x = self.views["train"](batch["images"])
        u_views = [self.views["weak"](batch["u_images"]) for _ in range(k)]
        with torch.no_grad():
            guess_logits, _ = self.forward_views(u_views)
            q = sharpen(torch.stack([lg.float().softmax(1) for lg in guess_logits]).mean(0), float(o["temperature"]))
        p = F.one_hot(batch["labels"].clamp_min(0), self.num_classes).float()
        inputs = torch.cat([x, *u_views])
        targets = torch.cat([p, q.repeat(k, 1)])
        alpha = torch.tensor(float(o["alpha"]))
        lam = float(torch.distributions.Beta(alpha, alpha).sample())
        perm = torch.randperm(inputs.shape[0]).to(inputs.device)
        mixed_x, mixed_t = mixup(inputs, targets, lam, perm)
        logits = self.model(mixed_x).float()
        nb = x.shape[0]
        loss_x = soft_cross_entropy(logits[:nb], mixed_t[:nb]).mean()
        loss_u = (logits[nb:].softmax(1) - mixed_t[nb:]).pow(2).mean()
        weight = self.ramp(self.epoch)
        loss = loss_x + weight * loss_u
        conf_pseudo = q.max(1)
        self.count_pseudo_labels(conf_pseudo.indices, torch.ones_like(conf_pseudo.indices, dtype=torch.bool),
                                 batch.get("u_labels"))
        return loss, {"loss": float(loss.detach()), "loss_x": float(loss_x.detach()),
                      "loss_u": float(loss_u.detach()), "lambda_u": weight, "lam": max(lam, 1 - lam)}
