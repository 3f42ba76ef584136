"""Inference-time prediction: probabilities of uint8 faces from any network with ``predict_logits``.

One home below the engine and the methods, so that the trainer, a method that scores its own
training rows (Ada-CM's margins) and a loaded model all predict the same way, and none of them
imports another to do it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn


@torch.no_grad()
def predict_probs(net: nn.Module, images: Tensor, view: Callable[[Tensor], Tensor], device: torch.device,
                  batch_size: int = 512, tta_flip: bool = False, amp_dtype: torch.dtype | None = None) -> np.ndarray:
    """Softmax probabilities (N, K) for uint8 images (N, C, H, W), in batches, in eval mode.

    Each row depends only on its own image (models are in eval mode: BatchNorm uses its
    running statistics), so batching never changes a result.
    """
    was_training = net.training
    net.eval()
    out = []
    try:
        for i in range(0, images.shape[0], batch_size):
            x = view(images[i:i + batch_size].to(device))
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                if tta_flip:  # one pass over the faces and their mirror images (fewer, larger calls)
                    p = net.predict_logits(torch.cat([x, x.flip(3)])).float().softmax(1)
                    p = 0.5 * (p[:len(x)] + p[len(x):])
                else:
                    p = net.predict_logits(x).float().softmax(1)
            out.append(p.cpu())
    finally:
        net.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)
