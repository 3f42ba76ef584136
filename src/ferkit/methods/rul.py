"""RUL: Relative Uncertainty Learning (Zhang, Wang and Deng, NeurIPS 2021).

Why: uncertainty is learned from how samples compare, not from an assumed Gaussian. Two
samples' features are mixed, each weighted by its share of the pair's uncertainty, and the mix
must be recognised as *both* labels (the add-up loss): a hard or mislabelled sample can only be
heard in the mix with a large weight, so the branch learns to give such samples large values.

Per batch (as the authors' code, github zyh-uaiaaaa/Relative-Uncertainty-Learning): pooled
features ``f``; two heads of the same shape, ``mu = head_mu(f)`` (D -> ``embed_dim``, 64) and
``s = head_s(f)``; the uncertainty ``u = mean_d exp(s)`` (one positive number per sample).
Partners ``j = perm(i)`` (a random permutation of the batch, their ``mixup_data``);
``lam_i = u_i / (u_i + u_j)``, ``m_i = lam_i mu_i + (1 - lam_i) mu_j``; add-up loss
``0.5 CE(W m_i, y_i) + 0.5 CE(W m_i, y_j)`` with the one classifier ``W``. At inference the
classifier runs on ``mu`` (no mixing; deterministic) and ``u`` is the reported ``uncertainty``.

Choices the paper leaves open or that differ from the code (options, with these defaults):
- the heads read the *pooled* features: ``BatchNorm1d(affine=False) -> Dropout(head_dropout)
  -> Linear -> BatchNorm1d``; the authors flatten the 7x7 ResNet map into the Linear
  (``BatchNorm2d -> Dropout -> Flatten -> Linear -> BatchNorm1d``, a face-recognition output
  layer). Pooling keeps the heads independent of the input size and the whole inference path
  affine in the pooled features, so :meth:`cam_weights` gives exact class activation maps.
  ``head_dropout`` 0.4 is theirs; the model's own dropout is not used.
- ``s`` is clamped to +-``logvar_clamp`` (10) before ``exp``, so ``u`` cannot overflow (the
  authors do not clamp).
- one learning rate for everything (the authors give the classifier 10x the backbone's).
- rows without a label (-1) drop out of the CE term they would supply.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ferkit.errors import ConfigError
from ferkit.methods.base import Method, masked_cross_entropy
from ferkit.methods.registry import register_method


def _head(in_dim: int, out_dim: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.BatchNorm1d(in_dim, eps=2e-5, affine=False), nn.Dropout(dropout),
                         nn.Linear(in_dim, out_dim), nn.BatchNorm1d(out_dim, eps=2e-5))


@register_method
class RUL(Method):
    name: ClassVar[str] = "rul"
    defaults: ClassVar[dict[str, Any]] = {
        "embed_dim": 64,  # width of mu and s (authors: out_dimension 64)
        "head_dropout": 0.4,  # dropout inside both heads (authors: 0.4)
        "logvar_clamp": 10.0,  # |s| <= this before exp
        "label_smoothing": 0.0,
    }

    def __init__(self, model, cfg, num_classes, info=None) -> None:
        super().__init__(model, cfg, num_classes, info)
        c = {**self.defaults, **cfg}
        d = int(c["embed_dim"])
        if d < 1:
            raise ConfigError(f"method.embed_dim must be >= 1, got {d}")
        if not 0.0 <= float(c["head_dropout"]) < 1.0:
            raise ConfigError(f"method.head_dropout must be in [0, 1), got {c['head_dropout']}")
        if float(c["logvar_clamp"]) <= 0:
            raise ConfigError(f"method.logvar_clamp must be > 0, got {c['logvar_clamp']}")
        self.clamp = float(c["logvar_clamp"])
        self.smoothing = float(c["label_smoothing"])
        self.mu_head = _head(model.feature_dim, d, float(c["head_dropout"]))
        self.logvar_head = _head(model.feature_dim, d, float(c["head_dropout"]))
        self.classifier = nn.Linear(d, num_classes)

    # -- the pieces -----------------------------------------------------------------------
    def heads(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``mu`` (B, D) and the uncertainty ``u`` (B,) for normalised input."""
        f = self.model.embed(x)
        return self.mu_head(f), self.uncertainty_of(self.logvar_head(f))

    def uncertainty_of(self, s: Tensor) -> Tensor:
        """``u = mean_d exp(clamp(s))``: the branch's one number per sample."""
        return s.clamp(-self.clamp, self.clamp).exp().mean(1)

    @staticmethod
    def mix(mu: Tensor, u: Tensor, perm: Tensor) -> tuple[Tensor, Tensor]:
        """Mixed features ``lam mu + (1 - lam) mu[perm]`` and ``lam = u / (u + u[perm])`` (B,)."""
        lam = u / (u + u[perm])
        return lam[:, None] * mu + (1 - lam)[:, None] * mu[perm], lam

    def add_up_loss(self, logits: Tensor, y_a: Tensor, y_b: Tensor) -> Tensor:
        """``0.5 CE(logits, y_a) + 0.5 CE(logits, y_b)``: the mix must be both labels."""
        return 0.5 * (masked_cross_entropy(logits, y_a, self.smoothing)
                      + masked_cross_entropy(logits, y_b, self.smoothing))

    def train_step(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        x = self.views["train"](batch["images"])
        labels = batch["labels"]
        mu, u = self.heads(x)
        perm = torch.randperm(mu.shape[0], device=mu.device)
        mixed, lam = self.mix(mu, u, perm)
        loss = self.add_up_loss(self.classifier(mixed), labels, labels[perm])
        with torch.no_grad():
            acc = (self.classifier(mu).argmax(1) == labels).float().mean()
        return loss, {"loss": float(loss.detach()), "acc": float(acc), "u": float(u.detach().mean()),
                      "lam_spread": float((lam.detach() - 0.5).abs().mean())}

    # -- inference: the classifier on mu, u as the uncertainty ----------------------------
    def predict_logits(self, x: Tensor) -> Tensor:
        return self.classifier(self.heads(x)[0])

    def uncertainty(self, x: Tensor) -> Tensor:
        return self.heads(x)[1]

    def cam_weights(self) -> tuple[Tensor, Tensor]:
        """The affine map pooled features -> logits at inference (eval mode: BatchNorm with its
        running statistics, no dropout), ``(W (K, C), b (K,))``, for class activation maps."""
        bn0, _, lin, bn1 = self.mu_head
        s0 = (bn0.running_var + bn0.eps).rsqrt()
        s1 = bn1.weight * (bn1.running_var + bn1.eps).rsqrt()
        w_mu = s1[:, None] * lin.weight * s0[None, :]
        b_mu = s1 * (lin.weight @ (-bn0.running_mean * s0) + lin.bias - bn1.running_mean) + bn1.bias
        wc = self.classifier.weight
        return wc @ w_mu, wc @ b_mu + self.classifier.bias
