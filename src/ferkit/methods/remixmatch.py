"""ReMixMatch (Berthelot et al., ICLR 2020): MixMatch with distribution alignment, augmentation
anchoring, a pre-mixup strong-view loss and rotation prediction.

Per step: labelled rows ``x`` (``views["train"]``, one-hot targets ``p``); unlabelled rows ``u``
seen through one weak view (the anchor) and ``k`` (8) strong views. The guess comes from the
weak view only, ``q = softmax(f(weak(u)))`` (no gradient), then

- distribution alignment: ``q <- normalise(q * p(y) / p~(y))``, ``p(y)`` the labelled class
  frequencies, ``p~(y)`` the mean prediction on unlabelled rows over the last ``da_batches``
  (128) steps (a ring buffer, checkpointed with the method);
- sharpening with ``T`` = 0.5;
- MixUp (``lam' = max(lam, 1 - lam)``, ``lam ~ Beta(0.75, 0.75)``) of the labelled rows and all
  unlabelled views (the ``k`` strong and the weak one, each with target ``q``) with a shuffled copy;

``L = CE(f(x'), p') + r(t) * (lambda_u CE(f(u'), q') + lambda_u1 CE(f(strong_1(u)), q)) + lambda_rot CE_rot``

with soft cross-entropies, ``lambda_u`` 1.5, ``lambda_u1`` 0.5 (the pre-mixup loss on the first
strong view), ``lambda_rot`` 0.5: a 4-way linear head on the pooled features predicts the
rotation (0, 90, 180, 270 degrees, drawn per row) of the first strong view. ``r(t)`` ramps the
unlabelled terms linearly over ``ramp_epochs`` (the paper's code warms them up too).
Differences from the paper, for this harness: the strong view is ferkit's RandAugment
(``views["strong"]``, as FixMatch's RA variant) instead of CTAugment, and the rotation head is
the method's own sub-module (saved with it; inference never uses it).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ferkit.errors import ConfigError
from ferkit.methods.base import soft_cross_entropy
from ferkit.methods.mixmatch import mixup, sharpen
from ferkit.methods.registry import register_method
from ferkit.methods.semisupervised import SemiSupervised


def align_distribution(q: Tensor, labelled_prior: Tensor, model_prior: Tensor) -> Tensor:
    """``normalise(q * p(y) / p~(y))`` per row: guesses pulled towards the labelled class frequencies."""
    a = q * (labelled_prior / model_prior.clamp_min(1e-6))
    return a / a.sum(1, keepdim=True)


def rotate(x: Tensor, quarter_turns: Tensor) -> Tensor:
    """Each row of ``x`` (B, C, H, W) turned by ``quarter_turns[i]`` x 90 degrees (square images)."""
    out = x.clone()
    for r in range(1, 4):
        sel = quarter_turns == r
        if sel.any():
            out[sel] = torch.rot90(x[sel], r, dims=(2, 3))
    return out


@register_method
class ReMixMatch(SemiSupervised):
    name: ClassVar[str] = "remixmatch"
    defaults: ClassVar[dict[str, Any]] = {
        "k": 8,  # strong views per unlabelled row (augmentation anchoring)
        "temperature": 0.5,  # sharpening T
        "alpha": 0.75,  # Beta(alpha, alpha) of MixUp
        "lambda_u": 1.5,  # mixed unlabelled CE
        "lambda_u1": 0.5,  # pre-mixup CE of the first strong view
        "lambda_rot": 0.5,  # rotation prediction
        "da_batches": 128,  # steps in the running mean p~(y) of distribution alignment
        "ramp_epochs": 16,  # the unlabelled terms rise linearly from 0 over these epochs
    }

    def __init__(self, model, cfg, num_classes, info=None) -> None:
        super().__init__(model, cfg, num_classes, info)
        o = self.opts
        if int(o["k"]) < 1 or int(o["da_batches"]) < 1:
            raise ConfigError("method.k and method.da_batches must be >= 1")
        if float(o["temperature"]) <= 0 or float(o["alpha"]) <= 0:
            raise ConfigError("method.temperature and method.alpha must be > 0")
        self.rotation_head = nn.Linear(model.feature_dim, 4)
        counts = torch.tensor(self.info.get("class_counts") or [1] * num_classes, dtype=torch.float32)
        self.register_buffer("labelled_prior", counts.clamp_min(1) / counts.clamp_min(1).sum())
        self.register_buffer("da_history", torch.full((int(o["da_batches"]), num_classes), 1.0 / num_classes))
        self.register_buffer("da_seen", torch.zeros((), dtype=torch.long))

    def ramp(self, epoch: int) -> float:
        n = int(self.opts["ramp_epochs"])
        return 1.0 if n <= 0 else min(1.0, epoch / n)

    @torch.no_grad()
    def model_prior(self, q: Tensor) -> Tensor:
        """Record this batch's mean guess and return ``p~(y)``, the mean over the recorded batches."""
        n = self.da_history.shape[0]
        self.da_history[int(self.da_seen) % n] = q.mean(0).to(self.da_history)
        self.da_seen += 1
        return self.da_history[:min(int(self.da_seen), n)].mean(0)

    def train_step(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        o = self.opts
        k = int(o["k"])
        x = self.views["train"](batch["images"])
        u = batch["u_images"]
        weak = self.views["weak"](u)
        strong = [self.views["strong"](u) for _ in range(k)]
        with torch.no_grad():
            q = self.model(weak).float().softmax(1)
            q = sharpen(align_distribution(q, self.labelled_prior, self.model_prior(q)), float(o["temperature"]))
        p = F.one_hot(batch["labels"].clamp_min(0), self.num_classes).float()
        inputs = torch.cat([x, *strong, weak])
        targets = torch.cat([p, q.repeat(k + 1, 1)])
        alpha = torch.tensor(float(o["alpha"]))
        lam = float(torch.distributions.Beta(alpha, alpha).sample())
        perm = torch.randperm(inputs.shape[0]).to(inputs.device)
        mixed_x, mixed_t = mixup(inputs, targets, lam, perm)
        turns = torch.randint(0, 4, (u.shape[0],)).to(u.device)
        nb, nm = x.shape[0], inputs.shape[0]
        emb = self.model.embed(torch.cat([mixed_x, strong[0], rotate(strong[0], turns)]))
        logits = self.model.classify(emb[:nm + u.shape[0]]).float()
        loss_x = soft_cross_entropy(logits[:nb], mixed_t[:nb]).mean()
        loss_u = soft_cross_entropy(logits[nb:nm], mixed_t[nb:]).mean()
        loss_u1 = soft_cross_entropy(logits[nm:], q).mean()
        loss_rot = F.cross_entropy(self.rotation_head(emb[nm + u.shape[0]:]).float(), turns)
        r = self.ramp(self.epoch)
        loss = loss_x + r * (float(o["lambda_u"]) * loss_u + float(o["lambda_u1"]) * loss_u1) + \
            float(o["lambda_rot"]) * loss_rot
        guess = q.max(1).indices
        self.count_pseudo_labels(guess, torch.ones_like(guess, dtype=torch.bool), batch.get("u_labels"))
        return loss, {"loss": float(loss.detach()), "loss_x": float(loss_x.detach()), "loss_u": float(loss_u.detach()),
                      "loss_u1": float(loss_u1.detach()), "loss_rot": float(loss_rot.detach()), "ramp": r}
