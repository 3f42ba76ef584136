"""APSM: probabilistic embedding (PE) and the uncertainty-attenuated loss (USL), seed 000.

The backbone's pooled features ``f`` go through two parallel linear heads, ``mu = W_mu f + b``
and ``s = W_s f + b = log sigma^2`` (``embed_dim`` wide, 512 in the paper). In training with
``pe`` the classifier sees a sample ``z = mu + eps * exp(s / 2)``, ``eps ~ N(0, I)``; without it,
``z = mu``. With ``usl`` each sample's cross-entropy is attenuated by its own variance,
``v = mean_d exp(s)``: ``L_i = CE(z_i, y_i) / (2 v_i) + 0.5 log v_i``; without it, plain CE.
``pe`` x ``usl`` gives the paper's four ablation variants (Table 2). At inference the classifier
runs on ``mu`` (no sampling) and ``v`` is the sample's uncertainty (``Method.uncertainty``),
which ``Recognizer.predict`` reports per face.

Choices the paper leaves open (options, with these defaults):
- ``s`` is clamped to ``[logvar_min, logvar_max]`` = [-10, 5] before use, so ``exp`` cannot
  overflow and ``1 / (2 v)`` cannot blow up a sample's gradient early in training.
- the ``s`` head starts with zero weights and bias ``logvar_init`` = -5 (sigma ~ 0.08): the
  embedding starts nearly deterministic and learns its variance, rather than starting as noise.
- the heads read the pooled backbone features before the model's dropout; dropout
  (``model.dropout``) is applied to ``z`` before the classifier, as on the baseline's features.
- ``samples``: PE samples per image in training (the paper: 1); losses are averaged.
- ``usl_warmup_epochs`` (default 0, the paper): for that many first epochs the network is
  trained on plain CE while the variance already learns to track it
  (``CE + sg(CE) / (2 v) + 0.5 log v``, ``sg`` = stop-gradient); full USL from then on. Why:
  from scratch, USL divides each face's CE by ``2 v`` and ``v`` follows the CE, so the faces still
  misclassified lose most of their gradient before the network has learnt anything (the paper
  starts from a face-recognition backbone); at ferkit's CPU budget USL alone cost 3-5 points.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ferkit.errors import ConfigError
from ferkit.methods.base import Method, masked_mean
from ferkit.methods.registry import register_method


@register_method
class APSM(Method):
    name: ClassVar[str] = "apsm"
    defaults: ClassVar[dict[str, Any]] = {
        "pe": True,  # probabilistic embedding: classify a sample z ~ N(mu, sigma^2) in training
        "usl": True,  # uncertainty-attenuated loss CE / (2 v) + 0.5 log v
        "embed_dim": 512,  # D, the width of mu and log sigma^2
        "logvar_min": -10.0,
        "logvar_max": 5.0,
        "logvar_init": -5.0,  # bias of the log-variance head at the start
        "samples": 1,
        "label_smoothing": 0.0,
        "usl_warmup_epochs": 0,  # epochs of CE (with v learning to track it) before USL weights it
    }

    def __init__(self, model, cfg, num_classes, info=None) -> None:
        super().__init__(model, cfg, num_classes, info)
        c = {**self.defaults, **cfg}
        d = int(c["embed_dim"])
        if d < 1 or int(c["samples"]) < 1:
            raise ConfigError("method.embed_dim and method.samples must be >= 1")
        if int(c["usl_warmup_epochs"]) < 0:
            raise ConfigError("method.usl_warmup_epochs must be >= 0")
        if float(c["logvar_min"]) >= float(c["logvar_max"]):
            raise ConfigError("method.logvar_min must be below method.logvar_max")
        self.pe, self.usl = bool(c["pe"]), bool(c["usl"])
        self.lo, self.hi = float(c["logvar_min"]), float(c["logvar_max"])
        self.samples = int(c["samples"])
        self.usl_warmup = int(c["usl_warmup_epochs"])
        self.smoothing = float(c["label_smoothing"])
        self.mu_head = nn.Linear(model.feature_dim, d)
        self.logvar_head = nn.Linear(model.feature_dim, d)
        nn.init.zeros_(self.logvar_head.weight)
        nn.init.constant_(self.logvar_head.bias, float(c["logvar_init"]))
        self.classifier = nn.Linear(d, num_classes)

    # -- the pieces -----------------------------------------------------------------------
    def heads(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``mu`` and the clamped ``s = log sigma^2``, both (B, D), for normalised input."""
        f = self.model.embed(x)
        return self.mu_head(f), self.logvar_head(f).clamp(self.lo, self.hi)

    @staticmethod
    def variance(s: Tensor) -> Tensor:
        """``v = mean_d exp(s)``, one number per sample: the uncertainty APSM reports."""
        return s.exp().mean(1)

    def _logits(self, z: Tensor) -> Tensor:
        return self.classifier(self.model.dropout(z))

    def loss_terms(self, mu: Tensor, s: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Per-sample loss (B,) and per-sample CE (B,), averaged over the PE samples."""
        ce_sum = torch.zeros_like(mu[:, 0])
        for _ in range(self.samples if self.pe else 1):
            z = mu + torch.randn_like(mu) * (0.5 * s).exp() if self.pe else mu
            ce_sum = ce_sum + F.cross_entropy(self._logits(z), labels.clamp_min(0), reduction="none",
                                              label_smoothing=self.smoothing)
        ce = ce_sum / (self.samples if self.pe else 1)
        if not self.usl:
            return ce, ce
        v = self.variance(s)
        if self.epoch < self.usl_warmup:  # warm-up: CE trains the network, v learns to track it
            return ce + ce.detach() / (2 * v) + 0.5 * v.log(), ce
        return ce / (2 * v) + 0.5 * v.log(), ce

    def train_step(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        x = self.views["train"](batch["images"])
        labels = batch["labels"]
        mu, s = self.heads(x)
        per_sample, ce = self.loss_terms(mu, s, labels)
        loss = masked_mean(per_sample, labels)
        with torch.no_grad():
            acc = (self._logits(mu).argmax(1) == labels).float().mean()
            v = self.variance(s)
            ce_mean = masked_mean(ce, labels)
        return loss, {"loss": float(loss.detach()), "ce": float(ce_mean),
                      "acc": float(acc), "var": float(v.mean())}

    # -- inference: the classifier on mu, the variance as uncertainty --------------------
    def predict_logits(self, x: Tensor) -> Tensor:
        return self.classifier(self.heads(x)[0])

    def uncertainty(self, x: Tensor) -> Tensor:
        return self.variance(self.heads(x)[1])

    def cam_weights(self) -> tuple[Tensor, Tensor]:
        """The linear map from pooled features to logits at inference, ``W_cls W_mu`` and its
        bias: class activation maps of an APSM model use it instead of ``model.fc``."""
        w = self.classifier.weight @ self.mu_head.weight
        b = self.classifier.weight @ self.mu_head.bias + self.classifier.bias
        return w, b
