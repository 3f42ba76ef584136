"""EAC: Erasing Attention Consistency (Zhang et al., ECCV 2022), seed 004.

Why it helps with noisy labels: a network that memorises a wrong label tends to do it by
looking at a few odd pixels; asking its class activation maps to stay put (mirrored) when part
of the face is erased and the image is flipped keeps it looking at the whole face instead.

Per batch: ``x = views["train"](images)`` (the usual augmentation), ``x_e = erase(x)``,
``x_f = hflip(x_e)``. One backbone pass over both gives feature maps ``F_e``, ``F_f``
(C x h x w). Class activation maps of every class from the classifier weights ``W`` (K x C),
``M_j(h, w) = sum_c W[j, c] F_c(h, w)`` (no bias, as in the authors' code). Loss
``CE(fc(pool(F_e)), y) + lam * mean((M(x_e) - flip(M(x_f)))^2)``, the mean over N K h w
(``F.mse_loss``, as the authors' ``ACLoss``). Inference is the plain model on the plain image.

Choices, as options (defaults follow the authors' code, github zyh-uaiaaaa/Erasing-Attention-Consistency):
- ``detach_fc``: the maps use ``W.detach()`` (their ``Variable(params[-2].data)``), so the
  consistency term trains the backbone only; ``false`` lets it move the classifier too.
- erasing is EAC's own op on the normalised batch, not the train view's ``erase_p``: it is part
  of the method, so it must happen whatever ``augment.options`` say. Its defaults are
  torchvision's ``RandomErasing(scale=(0.02, 0.25))`` after ``Normalize`` that the authors use:
  probability ``erase_p`` 0.5, area 2-25 %, aspect 0.3-3.3, filled with ``erase_value`` 0 in
  normalised units (the normalisation mean, a mid-gray face patch). Set the train view's own
  ``erase_p`` to 0 in EAC configs so images are not erased twice.
- ``flip_erasing``: ``mirrored`` (``x_f = hflip(x_e)``: the paper's formula and the authors'
  clean-label path; the erased box is mirrored too) or ``independent`` (``x_f = hflip(erase'(x))``
  with a new box: what the authors' noisy-label data path does, flipping the raw image and
  running the whole transform, erasing included, on it again).
- the two views go through the backbone as one 2B batch (the authors run two passes): half the
  calls on a CPU, and BatchNorm then normalises both views with the same batch statistics.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from ferkit.augment import box_mask
from ferkit.errors import ConfigError
from ferkit.methods.base import Method, masked_cross_entropy
from ferkit.methods.registry import register_method


def random_erase(x: Tensor, p: float, scale: tuple[float, float] = (0.02, 0.25),
                 ratio: tuple[float, float] = (0.3, 3.3), value: float = 0.0,
                 generator: torch.Generator | None = None) -> Tensor:
    """Random erasing on a float batch (B, C, H, W): one box per sample with probability ``p``.

    Per sample: area fraction ~ U(scale), log aspect ~ U(log ratio), position uniform where the
    box fits; boxes too big for the image are clipped to it (torchvision redraws up to 10 times).
    Works on normalised input, so ``value`` is in the caller's units. Returns a new tensor.
    """
    B, _, H, W = x.shape
    src = generator.device if generator is not None else torch.device("cpu")

    def u(lo: float = 0.0, hi: float = 1.0) -> Tensor:
        return (torch.rand(B, generator=generator, device=src) * (hi - lo) + lo).to(x.device)

    on = u() < p
    area = u(*scale) * (H * W)
    aspect = torch.exp(u(math.log(ratio[0]), math.log(ratio[1])))
    h = torch.sqrt(area * aspect).round().clamp(1, H).long()
    w = torch.sqrt(area / aspect).round().clamp(1, W).long()
    y0 = (u() * (H - h + 1).float()).long()
    x0 = (u() * (W - w + 1).float()).long()
    return x.masked_fill(box_mask(H, W, y0, x0, h * on, w), float(value))


@register_method
class EAC(Method):
    name: ClassVar[str] = "eac"
    defaults: ClassVar[dict[str, Any]] = {
        "lam": 5.0,  # weight of the attention consistency loss (paper and code: 5)
        "flip_erasing": "mirrored",  # mirrored | independent (see the module docstring)
        "detach_fc": True,  # CAMs from W.detach(), as the authors' code
        "erase_p": 0.5,  # EAC's own random erasing (torchvision RandomErasing defaults the authors use)
        "erase_scale": [0.02, 0.25],
        "erase_ratio": [0.3, 3.3],
        "erase_value": 0.0,  # in normalised units: 0 = the normalisation mean
        "label_smoothing": 0.0,
    }

    def __init__(self, model, cfg, num_classes, info=None) -> None:
        super().__init__(model, cfg, num_classes, info)
        c = {**self.defaults, **cfg}
        if c["flip_erasing"] not in ("mirrored", "independent"):
            raise ConfigError(f"method.flip_erasing must be mirrored or independent, not {c['flip_erasing']!r}")
        if not 0.0 <= float(c["erase_p"]) <= 1.0:
            raise ConfigError(f"method.erase_p is a probability, got {c['erase_p']}")
        for key in ("erase_scale", "erase_ratio"):
            lo, hi = (float(v) for v in c[key])
            if not 0 < lo <= hi:
                raise ConfigError(f"method.{key} must be [low, high] with 0 < low <= high, got {c[key]}")
        if float(c["lam"]) < 0:
            raise ConfigError(f"method.lam must be >= 0, got {c['lam']}")
        self.lam = float(c["lam"])
        self.mirrored = c["flip_erasing"] == "mirrored"
        self.detach_fc = bool(c["detach_fc"])
        self.erase_p = float(c["erase_p"])
        self.erase_scale = tuple(float(v) for v in c["erase_scale"])
        self.erase_ratio = tuple(float(v) for v in c["erase_ratio"])
        self.erase_value = float(c["erase_value"])
        self.smoothing = float(c["label_smoothing"])

    # -- the pieces -----------------------------------------------------------------------
    def erase(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """EAC's random erasing of a normalised batch (options ``erase_*``)."""
        return random_erase(x, self.erase_p, self.erase_scale, self.erase_ratio, self.erase_value, generator)

    def two_views(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``(x_e, x_f)`` from an augmented, normalised batch: erased, and its flipped partner."""
        x_e = self.erase(x, generator)
        x_f = x_e.flip(-1) if self.mirrored else self.erase(x, generator).flip(-1)
        return x_e, x_f

    def cams(self, feature_map: Tensor) -> Tensor:
        """Class activation maps (B, K, h, w) of every class: ``sum_c W[k, c] F[b, c, h, w]``."""
        w = self.model.fc.weight
        if self.detach_fc:
            w = w.detach()
        return torch.einsum("kc,bchw->bkhw", w.to(feature_map.dtype), feature_map)

    @staticmethod
    def consistency(m_e: Tensor, m_f: Tensor) -> Tensor:
        """``mean((M_e - flip(M_f))^2)`` over N K h w: the maps of the flipped view, flipped back."""
        return F.mse_loss(m_e, m_f.flip(-1))

    def train_step(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        x = self.views["train"](batch["images"])
        labels = batch["labels"]
        B = x.shape[0]
        x_e, x_f = self.two_views(x)
        out = self.model.extract(torch.cat([x_e, x_f]))
        fmap, logits = out["feature_map"], out["logits"][:B]
        ce = masked_cross_entropy(logits, labels, self.smoothing)
        cams = self.cams(fmap)
        lc = self.consistency(cams[:B], cams[B:])
        loss = ce + self.lam * lc
        acc = (logits.detach().argmax(1) == labels).float().mean()
        return loss, {"loss": float(loss.detach()), "ce": float(ce.detach()),
                      "consistency": float(lc.detach()), "acc": float(acc)}
