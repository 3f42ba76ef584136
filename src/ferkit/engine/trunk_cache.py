"""Frozen early stages computed once: the training faces' trunk activations, with their mirrors.

Why: a face-pretrained MobileNet at 112 px trains at about 110 faces/s on two CPU cores, so one
table of 16-40 cells would take days. With its first blocks frozen (``model.options.frozen_blocks``)
their output never changes, so ``train.cache_frozen: true`` computes it once for every training
face and for its mirror image (bf16, eval view: no augmentation) and every step trains only the
upper blocks and the method's heads on it: 3x (7 frozen blocks) to 10x (12) faster per epoch
(measured on 2 cores, see configs/experiments/*_pretrained_cpu.yaml).

What changes in the run, and why it is still the same model:

- the frozen blocks are exactly those a normal run with the same ``frozen_blocks`` keeps frozen
  (no gradient, BatchNorm in eval mode), so the network trained is the one a normal run trains;
  ``model.pt`` is the whole network and takes images;
- validation and the exported model run on images, through the whole network;
- the image augmentation is replaced by views of the cached activations
  (:func:`feature_view`): a random pick of the face or its mirror (the flip augmentation, exact),
  then, per view, erasing of a random rectangle of the activation map and channel dropout, the
  stand-ins for random erasing and the strong (RandAugment) policy. Crops, scaling, rotation and
  colour jitter have no exact counterpart and are not applied: the cached run is the
  fixed-crop, flip-only version of its image twin. ``tensor.flip(-1)`` inside a method (EAC's
  flipped view) flips the activation map, not the face: EAC's consistency then constrains the
  trained upper blocks only.

The activations are kept on disk under ``train.cache_dir`` (default ``<output_dir>/.trunk_cache``),
named by a hash of the frozen blocks' weights and statistics, the faces and the preprocessing, so
the cells of a grid that share a start, a seed and a dataset compute them once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ferkit.atomic import atomic_write
from ferkit.errors import ConfigError

#: options of the cached views, per policy (``augment.features``): erase = probability of erasing a
#: rectangle of 2-33 % of the activation map (zeros), channel_drop = fraction of channels zeroed
FEATURE_VIEW_KEYS = ("erase", "channel_drop")


def check_cacheable(model: nn.Module) -> None:
    """ConfigError unless ``model``'s backbone has frozen blocks whose output can be cached."""
    backbone = getattr(model, "backbone", None)
    if backbone is None or int(getattr(backbone, "trunk_channels", 0) or 0) <= 0:
        raise ConfigError("train.cache_frozen needs a backbone with frozen early blocks: e.g. model.name: "
                          "mobilenet_v1 with model.options.frozen_blocks: 7")


def trunk_state_digest(backbone: nn.Module) -> str:
    """A hash of the frozen blocks' parameters and buffers (BatchNorm statistics included)."""
    h = hashlib.sha1()
    for module in backbone.frozen_modules():
        for name, t in module.state_dict().items():
            h.update(name.encode())
            h.update(t.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


def cache_key(backbone: nn.Module, images: Tensor, preprocess: Mapping[str, Any]) -> str:
    """Name of the cache file: frozen weights + the faces (uint8) + the preprocessing that made them."""
    h = hashlib.sha1()
    h.update(trunk_state_digest(backbone).encode())
    h.update(json.dumps(dict(preprocess), sort_keys=True, default=str).encode())
    h.update(str(tuple(images.shape)).encode())
    h.update(images.contiguous().numpy().tobytes())
    return h.hexdigest()[:20]


@torch.no_grad()
def compute_trunk(backbone: nn.Module, images: Tensor, view: Callable[[Tensor], Tensor], device: torch.device,
                  amp_dtype: torch.dtype | None, batch_size: int = 256, progress: bool = False) -> Tensor:
    """bf16 (N, 2, C, h, w): the frozen blocks' output for each uint8 face (N, C, H, W) and its mirror."""
    was_training = backbone.training
    backbone.eval()
    out = []
    starts = range(0, images.shape[0], batch_size)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="caching frozen blocks", unit="batch", delay=2)
    try:
        for i in starts:
            x = view(images[i:i + batch_size].to(device))
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                t = backbone.trunk(torch.cat([x, x.flip(-1)]))
            n = x.shape[0]
            out.append(torch.stack([t[:n], t[n:]], 1).to(torch.bfloat16).cpu())
    finally:
        backbone.train(was_training)
    return torch.cat(out)


def trunk_preprocess(cfg: Mapping[str, Any], channels: int, amp_dtype: torch.dtype | None) -> dict[str, Any]:
    """What a run's cached activations depend on beside the frozen weights and the faces (part of the key)."""
    d = cfg["data"]
    return {"image_size": d["image_size"], "channels": channels, "mean": d["mean"], "std": d["std"],
            "view": cfg["augment"]["eval"], "amp": str(amp_dtype)}


def run_cache_dir(cfg: Mapping[str, Any]) -> Path:
    """Where a run keeps its cached activations: ``train.cache_dir``, else ``<output_dir>/.trunk_cache``."""
    return Path(cfg["train"].get("cache_dir") or Path(cfg["output_dir"]) / ".trunk_cache")


def trunk_cache_path(backbone: nn.Module, images: Tensor, cache_dir: Path, preprocess: Mapping[str, Any]) -> Path:
    """The file that holds (or would hold) these faces' activations."""
    return Path(cache_dir) / f"trunk_{cache_key(backbone, images, preprocess)}.npy"


def read_trunk(path: Path) -> Tensor | None:
    """Stored activations (bf16), or None when there are none (a damaged file is removed)."""
    if not path.exists():
        return None
    try:
        return torch.from_numpy(np.load(path)).view(torch.bfloat16)
    except (OSError, ValueError):
        path.unlink(missing_ok=True)
        return None


def cached_trunk(backbone: nn.Module, images: Tensor, view: Callable[[Tensor], Tensor], device: torch.device,
                 amp_dtype: torch.dtype | None, cache_dir: Path | None, preprocess: Mapping[str, Any],
                 progress: bool = False) -> Tensor:
    """:func:`compute_trunk`, read from / written to ``cache_dir`` when given (bf16 stored as int16)."""
    if cache_dir is None:
        return compute_trunk(backbone, images, view, device, amp_dtype, progress=progress)
    path = trunk_cache_path(backbone, images, cache_dir, preprocess)
    feats = read_trunk(path)
    if feats is not None:
        return feats
    feats = compute_trunk(backbone, images, view, device, amp_dtype, progress=progress)
    atomic_write(path, lambda fh: np.save(fh, feats.view(torch.int16).numpy()))
    return feats


def feature_view(options: Mapping[str, Any] | None, *, pick: str) -> Callable[[Tensor], Tensor]:
    """A view of cached activations (b, 2, C, h, w) -> float (b, C, h, w).

    ``pick``: ``"random"`` takes the face or its mirror at random per row (the flip augmentation),
    ``"face"`` the face itself (evaluation). Then, per row, with probability ``erase`` a random
    rectangle of 2-33 % of the map (aspect 0.3-3.3) is zeroed, and ``channel_drop`` of the channels.
    """
    opts = dict(options or {})
    unknown = set(opts) - set(FEATURE_VIEW_KEYS)
    if unknown:
        raise ConfigError(f"augment.features: unknown option(s) {', '.join(sorted(unknown))} "
                          f"(known: {', '.join(FEATURE_VIEW_KEYS)})")
    erase, drop = float(opts.get("erase", 0.0)), float(opts.get("channel_drop", 0.0))
    if not (0.0 <= erase <= 1.0 and 0.0 <= drop < 1.0):
        raise ConfigError(f"augment.features: erase must be in [0, 1] and channel_drop in [0, 1), not {opts}")

    def view(cached: Tensor) -> Tensor:
        if pick == "face":
            x = cached[:, 0].float()
        else:
            which = torch.randint(0, 2, (cached.shape[0],), device=cached.device)
            x = cached[torch.arange(cached.shape[0], device=cached.device), which].float()
        if erase > 0:
            x = x * erase_mask(x, erase)
        if drop > 0:
            keep = (torch.rand(x.shape[0], x.shape[1], 1, 1, device=x.device) >= drop).to(x.dtype)
            x = x * keep
        return x

    return view


def erase_mask(x: Tensor, p: float) -> Tensor:
    """(b, 1, h, w) of ones with, in each row with probability ``p``, one random rectangle of zeros."""
    b, _, h, w = x.shape
    area = torch.empty(b).uniform_(0.02, 0.33) * h * w
    aspect = torch.exp(torch.empty(b).uniform_(np.log(0.3), np.log(1 / 0.3)))
    eh = (area * aspect).sqrt().round().clamp(1, h).long()
    ew = (area / aspect).sqrt().round().clamp(1, w).long()
    top = (torch.rand(b) * (h - eh + 1)).long()
    left = (torch.rand(b) * (w - ew + 1)).long()
    on = torch.rand(b) < p
    rows = torch.arange(h).view(1, h, 1)
    cols = torch.arange(w).view(1, 1, w)
    box = ((rows >= top.view(b, 1, 1)) & (rows < (top + eh).view(b, 1, 1))
           & (cols >= left.view(b, 1, 1)) & (cols < (left + ew).view(b, 1, 1)) & on.view(b, 1, 1))
    return (~box).unsqueeze(1).to(x.dtype).to(x.device)


@torch.no_grad()
def classify_cached(net: nn.Module, trunk: Tensor, device: torch.device, batch_size: int = 512,
                    tta_flip: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Probabilities (N, K) and the method's own uncertainty (N,) or None, from cached activations.

    The upper blocks and heads of ``net`` (a method in eval mode) on each face's activations, so
    scoring the training faces costs seconds instead of a pass of the whole network. ``tta_flip``
    averages with the mirror's activations, the exact counterpart of flip averaging on images. The
    activations are stored in bf16, so results differ from the image path by that rounding only.
    """
    was_training = net.training
    net.eval()
    own = getattr(net, "uncertainty", None)
    probs, unc = [], []
    try:
        for i in range(0, trunk.shape[0], batch_size):
            x = trunk[i:i + batch_size, 0].float().to(device)
            p = net.predict_logits(x).float().softmax(1)
            if tta_flip:
                p = 0.5 * (p + net.predict_logits(trunk[i:i + batch_size, 1].float().to(device)).float().softmax(1))
            probs.append(p.cpu())
            u = own(x) if own is not None else None
            if u is not None:
                unc.append(u.float().cpu().reshape(-1))
    finally:
        net.train(was_training)
    p_all = torch.cat(probs).numpy() if probs else np.zeros((0, 0), np.float32)
    return p_all, (torch.cat(unc).numpy() if unc and len(unc) == len(probs) else None)
