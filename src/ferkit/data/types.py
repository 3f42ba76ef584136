"""The in-memory form every dataset reader returns."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np


@dataclass
class FaceDataset:
    """Decoded faces and their labels, ready for the trainer.

    images: uint8, (N, H, W) for grayscale or (N, H, W, 3) RGB; may be a read-only memmap.
    labels: int64 (N,), index into ``classes``; -1 marks a row without a usable hard label
        (unlabelled data, FER+ rows whose majority is unknown).
    classes: canonical label names, the column order of ``soft_targets`` and of a model's output.
    soft_targets: float32 (N, K) target distributions (FER+ votes) or multi-label masks; None if absent.
    meta: counts of what the reader dropped or flagged and anything else worth reporting.
    """

    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    soft_targets: np.ndarray | None = None
    split: str = ""
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return 1 if self.images.ndim == 3 else int(self.images.shape[-1])

    def subset(self, index: np.ndarray) -> FaceDataset:
        """Rows ``index`` as a new dataset (images copied into memory)."""
        index = np.asarray(index)
        soft = None if self.soft_targets is None else self.soft_targets[index]
        return replace(self, images=np.asarray(self.images[index]), labels=self.labels[index].copy(),
                       soft_targets=soft, meta=dict(self.meta))

    def class_counts(self) -> np.ndarray:
        """Rows per class (labels -1 not counted)."""
        lab = self.labels[self.labels >= 0]
        return np.bincount(lab, minlength=self.num_classes)
