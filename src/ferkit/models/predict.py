"""Inference-time prediction: probabilities of uint8 faces from any network with ``predict_logits``.

One home below the engine and the methods, so that the trainer, a method that scores its own
training rows (Ada-CM's margins) and a loaded model all predict the same way, and none of them
imports another to do it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ferkit.errors import InputError


def check_tta_crop(crop: float) -> float:
    """``crop`` as a float in [0, 1): 0 turns multi-crop averaging off."""
    crop = float(crop)
    if not 0.0 <= crop < 1.0:
        raise InputError(f"tta_crop is the crop's side as a fraction of the face, in (0, 1), or 0 for off; got {crop}")
    return crop


def crop_views(x: Tensor, crop: float) -> list[Tensor]:
    """The views of a batch (N, C, S, S) averaged at test time: the whole face, and when ``crop`` is
    in (0, 1) its centre and four corner crops of side ``crop * S``, each resized back to S (bilinear).

    The five crops are the "ten-crop" of the FER2013 recipes that reach ~73 % (with their mirror
    images, which ``predict_probs`` adds); ferkit keeps the whole face as a sixth view, since its
    models train on random crops of 80-100 % of the face's area that include the whole face. The
    views match what training showed the network, so averaging them smooths the prediction instead of
    showing it something new.
    """
    if not crop:
        return [x]
    size = x.shape[-1]
    side = max(1, min(size, round(crop * size)))
    far = size - side
    mid = far // 2
    offsets = ((mid, mid), (0, 0), (0, far), (far, 0), (far, far))
    views = [x]
    for top, left in offsets:
        part = x[..., top:top + side, left:left + side]
        views.append(F.interpolate(part, size=(size, size), mode="bilinear", align_corners=False))
    return views


@torch.no_grad()
def predict_probs(net: nn.Module, images: Tensor, view: Callable[[Tensor], Tensor], device: torch.device,
                  batch_size: int = 512, tta_flip: bool = False, amp_dtype: torch.dtype | None = None,
                  tta_crop: float = 0.0) -> np.ndarray:
    """Softmax probabilities (N, K) for uint8 images (N, C, H, W), in batches, in eval mode: the mean
    over the views of :func:`crop_views` (one, the face, unless ``tta_crop``), and over each view's
    mirror image too when ``tta_flip``.

    Each row depends only on its own image (models are in eval mode: BatchNorm uses its
    running statistics), so batching never changes a result.
    """
    crop = check_tta_crop(tta_crop)
    was_training = net.training
    net.eval()
    out = []
    try:
        for i in range(0, images.shape[0], batch_size):
            views = crop_views(view(images[i:i + batch_size].to(device)), crop)
            p = 0
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                for x in views:
                    if tta_flip:  # one pass over the faces and their mirror images (fewer, larger calls)
                        q = net.predict_logits(torch.cat([x, x.flip(3)])).float().softmax(1)
                        p = p + 0.5 * (q[:len(x)] + q[len(x):])
                    else:
                        p = p + net.predict_logits(x).float().softmax(1)
            out.append((p / len(views)).cpu())
    finally:
        net.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)
