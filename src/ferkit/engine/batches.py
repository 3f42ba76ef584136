"""Batches straight from in-memory uint8 tensors, sharded over processes.

FER datasets are small once decoded (FER2013: 66 MB), so the whole split sits in one uint8
tensor and a batch is one fancy-index: no DataLoader workers, no per-image Python, no decoding.
Augmentation then runs batched on the model's device. The order of an epoch depends only on
(seed, epoch), so a resumed run, or N processes that each take every N-th sample of the global
batch, see exactly the batches a single uninterrupted process would.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from ferkit.augment import to_channels
from ferkit.data.types import FaceDataset


def images_to_tensor(images: np.ndarray, channels: int) -> Tensor:
    """uint8 (N,H,W) or (N,H,W,3) -> uint8 (N, channels, H, W), converting gray <-> RGB if needed
    (BT.601 luma, :func:`ferkit.augment.to_channels`)."""
    arr = np.asarray(images)
    if arr.ndim == 2:
        arr = arr[None]
    with warnings.catch_warnings():  # a read-only memmap from the decode cache: shared, never written
        warnings.simplefilter("ignore", UserWarning)
        t = torch.from_numpy(np.ascontiguousarray(arr))
    t = t.unsqueeze(1) if t.ndim == 3 else t.permute(0, 3, 1, 2)
    if t.shape[1] == channels:
        return t.contiguous()
    return to_channels(t.float(), channels).round_().clamp_(0, 255).to(torch.uint8)


def make_view(augment: torch.nn.Module, mean: float | Sequence[float], std: float | Sequence[float]):
    """uint8 batch (B, C, H, W) -> augmented, normalised float batch, on the batch's device.

    ``mean`` / ``std`` are one number or one per channel (e.g. ImageNet's for RGB weights).
    """
    m = torch.tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1)

    def view(images: Tensor) -> Tensor:
        x = augment(images.to(torch.float32, copy=True).div_(255.0))  # a fresh tensor: safe to edit in place
        return x.sub_(m.to(x.device)).div_(s.to(x.device))

    return view


class BatchLoader:
    """Global batches of ``batch_size`` rows; process ``rank`` of ``world`` yields rows rank::world.

    Each batch is a dict: ``images`` uint8 (b, C, H, W), ``labels`` long, ``index`` long (row in
    the dataset) and ``soft`` float (b, K) when the dataset has soft targets.
    """

    def __init__(self, data: FaceDataset, channels: int, batch_size: int, *, shuffle: bool = True,
                 drop_last: bool = True, seed: int = 0, rank: int = 0, world: int = 1,
                 device: torch.device | str = "cpu", labels: np.ndarray | None = None) -> None:
        self.images = images_to_tensor(data.images, channels)
        self.labels = torch.from_numpy(np.asarray(labels if labels is not None else data.labels, np.int64))
        self.soft = None if data.soft_targets is None else torch.from_numpy(
            np.asarray(data.soft_targets, np.float32))
        self.batch_size = int(batch_size)
        if self.batch_size % world:
            raise ValueError(f"batch size {batch_size} is not divisible by {world} processes")
        self.shuffle, self.drop_last, self.seed = shuffle, drop_last, seed
        self.rank, self.world = rank, world
        self.device = torch.device(device)

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def order(self, epoch: int) -> Tensor:
        n = len(self.labels)
        if not self.shuffle:
            return torch.arange(n)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(n, generator=g)

    def batches(self, epoch: int, start: int = 0) -> Iterator[dict[str, Tensor]]:
        """The batches of ``epoch``, from batch number ``start`` on (for a mid-epoch resume)."""
        perm = self.order(epoch)
        for b in range(start, len(self)):
            idx = perm[b * self.batch_size:(b + 1) * self.batch_size][self.rank::self.world]
            yield self.take(idx)

    def cycle(self, start: int = 0) -> Iterator[dict[str, Tensor]]:
        """Batches without end from global batch number ``start`` on: batch ``s`` is batch
        ``s % len`` of the loader's epoch ``s // len``, each pass in its own shuffled order.

        For loaders that restart on their own (the unlabelled stream of a semi-supervised run, or
        the labelled one under a fixed ``train.steps_per_epoch``): the position is one integer,
        so a resume only needs the global step.
        """
        n = len(self)
        if n == 0:
            raise ValueError(f"{len(self.labels)} rows are fewer than one batch of {self.batch_size}")
        s = int(start)
        while True:
            yield from self.batches(s // n, start=s % n)
            s = (s // n + 1) * n

    def take(self, idx: Tensor) -> dict[str, Tensor]:
        nb = self.device.type == "cuda"
        out = {
            "images": self.images[idx].to(self.device, non_blocking=nb),
            "labels": self.labels[idx].to(self.device, non_blocking=nb),
            "index": idx.to(self.device),
        }
        if self.soft is not None:
            out["soft"] = self.soft[idx].to(self.device, non_blocking=nb)
        return out
