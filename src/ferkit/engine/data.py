"""The datasets of a run, as its config describes them (reader, splits, subsets, noise)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ferkit.data import inject_noise, load_dataset
from ferkit.data.splits import subsample
from ferkit.data.types import FaceDataset
from ferkit.errors import ConfigError


def load_run_data(cfg: dict[str, Any]) -> tuple[FaceDataset, FaceDataset | None, dict[str, Any]]:
    """(train, val or None, info for the method) for a resolved run config.

    ``limit_train`` / ``limit_val`` take a stratified, seeded subset (quick runs, tests);
    ``noise_rate`` flips training labels only (validation rows are never touched).
    """
    d = cfg["data"]
    if not d.get("path"):
        raise ConfigError("data.path is not set: give the dataset's file or folder (data.path=...)")
    opts = dict(d.get("options") or {})
    train = load_dataset(d["dataset"], d["path"], d["train_split"], **opts)
    val = load_dataset(d["dataset"], d["path"], d["val_split"], **opts) if d.get("val_split") else None
    seed = int(cfg["seed"])
    if d.get("limit_train"):
        train = train.subset(subsample(train.labels, int(d["limit_train"]), seed=seed))
    if val is not None and d.get("limit_val"):
        val = val.subset(subsample(val.labels, int(d["limit_val"]), seed=seed))
    if float(d.get("noise_rate") or 0) > 0:
        noisy, flipped = inject_noise(train.labels, float(d["noise_rate"]), train.num_classes,
                                      int(d.get("noise_seed", 0)))
        meta = {**train.meta, "clean_labels": train.labels.copy(), "flipped": flipped,
                "noise_rate": float(d["noise_rate"])}
        train = FaceDataset(train.images, noisy, train.classes, train.soft_targets, train.split,
                            train.source, meta)
    info = {
        "target_mode": train.meta.get("target_mode"),
        "class_counts": train.class_counts().tolist(),
        "num_train": len(train),
        "classes": list(train.classes),
    }
    if "flipped" in train.meta:
        info["flipped_fraction"] = float(np.mean(train.meta["flipped"]))
    return train, val, info
