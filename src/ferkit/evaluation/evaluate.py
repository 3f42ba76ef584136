"""``ferkit evaluate``: a trained model scored on a dataset, across label sets if need be.

When the model's labels and the dataset's differ (a 7-class FER2013 model on 8-class FER+, a
model on JAFFE), the scoring space is the labels both share, matched by canonical name; rows
whose true label the model cannot output are left out and counted, and the probabilities are
renormalised over the shared labels. The JSON records the mapping.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ferkit.errors import InputError

TEST_SPLITS = {"fer2013": "PublicTest", "ferplus": "PublicTest", "rafdb": "test", "affectnet": "validation"}


def default_split(dataset: str) -> str | None:
    """The split a reader's users usually report on (None: the whole set)."""
    return TEST_SPLITS.get(dataset)


def align_labels(
    probs: np.ndarray, model_classes: tuple[str, ...], labels: np.ndarray, data_classes: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], dict[str, Any]]:
    """Restrict ``probs`` and ``labels`` to the labels the model and the dataset share."""
    if tuple(model_classes) == tuple(data_classes):
        return probs, labels, tuple(model_classes), {"shared": list(model_classes), "rows_dropped": 0}
    shared = tuple(c for c in model_classes if c in data_classes)
    if not shared:
        raise InputError(f"the model's labels {list(model_classes)} share none with the dataset's "
                         f"{list(data_classes)}")
    cols = [model_classes.index(c) for c in shared]
    remap = np.full(len(data_classes) + 1, -1, np.int64)
    for i, c in enumerate(data_classes):
        if c in shared:
            remap[i] = shared.index(c)
    new_labels = remap[np.where(labels >= 0, labels, len(data_classes))]
    keep = new_labels >= 0
    p = probs[keep][:, cols]
    p = p / np.clip(p.sum(1, keepdims=True), 1e-12, None)
    info = {"shared": list(shared), "model_only": [c for c in model_classes if c not in shared],
            "data_only": [c for c in data_classes if c not in shared], "rows_dropped": int((~keep).sum())}
    return p, new_labels[keep], shared, info


def evaluate_model(model: str | Path, dataset: str, path: str | Path, split: str | None,
                   out: str | Path, options: dict[str, Any] | None = None, device: str = "auto",
                   batch_size: int = 512, tta_flip: bool | None = None,
                   tta_crop: float | None = None) -> dict[str, Any]:
    """Score ``model`` on ``dataset``/``split``; write the metrics JSON and its plots; return metrics."""
    from ferkit.data import load_dataset
    from ferkit.engine.model_io import load_model
    from ferkit.evaluation.io import write_metrics
    from ferkit.metrics import compute_metrics

    loaded = load_model(model, device=device)
    data = load_dataset(dataset, path, split, **(options or {}))
    if len(data) == 0:
        raise InputError(f"{dataset} split {split!r} at {path} has no rows")
    probs = loaded.predict_probs(data.images, batch_size=batch_size, tta_flip=tta_flip, tta_crop=tta_crop)
    p, labels, classes, mapping = align_labels(probs, loaded.classes, data.labels, data.classes)
    metrics = compute_metrics(p, labels, classes)
    metrics.update({"model": loaded.source, "dataset": dataset, "path": str(path), "split": split,
                    "label_mapping": mapping, "tta_flip": bool(
                        loaded.preprocess.get("tta_flip") if tta_flip is None else tta_flip),
                    "tta_crop": float(loaded.preprocess.get("tta_crop", 0.0) if tta_crop is None else tta_crop)})
    write_metrics(metrics, Path(out), p, labels, classes)
    return metrics
