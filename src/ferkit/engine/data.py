"""The datasets of a run, as its config describes them (reader, splits, subsets, noise)."""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ferkit.atomic import atomic_write
from ferkit.data import inject_noise, load_dataset
from ferkit.data.cache import cache_dir
from ferkit.data.splits import split_labelled, subsample
from ferkit.data.types import FaceDataset
from ferkit.engine.device import autocast_dtype, resolve_device
from ferkit.engine.model_io import load_model, resolve_model_path
from ferkit.errors import ConfigError


def load_run_data(cfg: dict[str, Any]) -> tuple[FaceDataset, FaceDataset | None, dict[str, Any]]:
    """(train, val or None, info for the method) for a resolved run config.

    ``limit_train`` / ``limit_val`` take a stratified, seeded subset (quick runs, tests);
    ``noise_rate`` flips training labels only (validation rows are never touched).
    ``labelled`` (semi-supervised) keeps that count or fraction of the training rows labelled
    (:func:`~ferkit.data.splits.split_labelled`, seeded by ``seed``, in proportion to the classes):
    ``train`` is then the labelled part and the unlabelled part comes from :func:`load_ssl_data`.
    """
    train, _, val, info = load_ssl_data(cfg)
    return train, val, info


def load_ssl_data(cfg: dict[str, Any]) -> tuple[FaceDataset, FaceDataset | None, FaceDataset | None,
                                                 dict[str, Any]]:
    """(labelled train, unlabelled train or None, val or None, info) for a resolved run config.

    Without ``data.labelled`` the unlabelled part is None and the rest is :func:`load_run_data`.
    The unlabelled rows keep their true labels, which the trainer passes as ``u_labels`` for
    analysis only (pseudo-label precision / recall); no method may train on them. Label noise,
    when asked for, is injected into the labelled part only, after the split.
    """
    d = cfg["data"]
    if not d.get("path"):
        raise ConfigError("data.path is not set: give the dataset's file or folder (data.path=...)")
    opts = dict(d.get("options") or {})
    train = load_dataset(d["dataset"], d["path"], d["train_split"], **opts)
    train, held = split_holdout(train, d.get("holdout"), int(d.get("holdout_seed") or 0))
    if d.get("val_split") == HOLDOUT:
        if held is None:
            raise ConfigError("data.val_split: holdout needs data.holdout (a count or fraction of the training split)")
        val = held
    else:
        val = load_dataset(d["dataset"], d["path"], d["val_split"], **opts) if d.get("val_split") else None
    seed = int(cfg["seed"])
    if d.get("limit_train"):
        train = train.subset(subsample(train.labels, int(d["limit_train"]), seed=seed))
    if val is not None and d.get("limit_val"):
        val = val.subset(subsample(val.labels, int(d["limit_val"]), seed=seed))
    unlabelled = None
    if d.get("labelled") is not None:
        lab_idx, unl_idx = split_labelled(train.labels, _count_or_fraction(d["labelled"]), train.num_classes,
                                          seed)
        if len(unl_idx) == 0:
            raise ConfigError(f"data.labelled={d['labelled']} keeps every training row labelled: nothing unlabelled")
        train, unlabelled = train.subset(lab_idx), train.subset(unl_idx)
    if float(d.get("noise_rate") or 0) > 0:
        noisy, flipped = inject_noise(train.labels, float(d["noise_rate"]), train.num_classes,
                                      int(d.get("noise_seed", 0)))
        meta = {**train.meta, "clean_labels": train.labels.copy(), "flipped": flipped,
                "noise_rate": float(d["noise_rate"])}
        train = FaceDataset(train.images, noisy, train.classes, train.soft_targets, train.split,
                            train.source, meta)
    if d.get("teacher") is not None:
        train = with_teacher_targets(train, d["teacher"], float(d["teacher_weight"]),
                                     float(d["teacher_temperature"]), cfg["train"].get("device", "auto"))
    info = {
        "target_mode": train.meta.get("target_mode"),
        "class_counts": train.class_counts().tolist(),
        "num_train": len(train),
        "classes": list(train.classes),
    }
    if "flipped" in train.meta:
        info["flipped_fraction"] = float(np.mean(train.meta["flipped"]))
    if unlabelled is not None:
        info["num_unlabelled"] = len(unlabelled)
    return train, unlabelled, val, info


#: ``data.val_split`` value naming the part of the training split held out by ``data.holdout``
HOLDOUT = "holdout"


def split_holdout(train: FaceDataset, holdout: Any, seed: int = 0) -> tuple[FaceDataset, FaceDataset | None]:
    """(the rest, the held-out part) of the training split, or (train, None) without ``holdout``.

    A stratified, seeded part of the training split that the run never trains on: the selection and
    calibration split when the official validation split must stay unseen. Seeded by
    ``data.holdout_seed``, not the run's seed, so runs of several seeds hold out the same faces.
    """
    if holdout in (None, 0, 0.0):
        return train, None
    held_idx, rest_idx = split_labelled(train.labels, _count_or_fraction(holdout, "data.holdout"),
                                        train.num_classes, seed + 1_000_003)
    if len(rest_idx) == 0:
        raise ConfigError(f"data.holdout={holdout} leaves no training rows")
    return train.subset(rest_idx), train.subset(held_idx)


def _count_or_fraction(value: Any, key: str = "data.labelled") -> int | float:
    """``data.labelled``: an int (or an integral number such as 4000.0 or "4000") is a count of rows,
    a number in (0, 1) a fraction."""
    if isinstance(value, bool):
        raise ConfigError(f"{key} must be a count or a fraction, not {value!r}")
    try:
        num = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key} must be a count or a fraction, not {value!r}") from None
    if 0 < num < 1:
        return num
    if num >= 1 and num == int(num):
        return int(num)
    raise ConfigError(f"{key} must be a count (>= 1) or a fraction in (0, 1), not {value!r}")


def with_teacher_targets(train: FaceDataset, teacher: str | Sequence[str], weight: float,
                         temperature: float = 1.0, device: str = "auto") -> FaceDataset:
    """``train`` with soft targets ``(1 - weight) * one_hot(label) + weight * teacher``: offline distillation.

    The teacher (any trained ferkit model) scores each training face once, flip-averaged when it was
    validated that way, at its own input size; its probabilities are softened by ``temperature``
    (``p^(1/T)``, renormalised). A list of teachers is an ensemble: the mean of their probabilities
    is the teacher (ensemble distillation into one network). The targets are computed on the
    un-augmented faces, not per step on the augmented views (the choice that keeps a 112 px teacher
    affordable on a CPU); ``ce`` with ``target: auto`` then trains on them as on FER+ vote
    distributions. Rows without a label take the teacher's distribution alone.
    """
    teachers = [teacher] if isinstance(teacher, str) else list(teacher)
    if not teachers:
        raise ConfigError("data.teacher is an empty list: name one trained model or several")
    probs = np.mean([_teacher_probs(t, train, device) for t in teachers], axis=0)
    probs = np.clip(np.asarray(probs, np.float64), 1e-12, 1.0) ** (1.0 / temperature)
    probs /= probs.sum(1, keepdims=True)
    labelled = train.labels >= 0
    one_hot = np.zeros_like(probs)
    one_hot[np.flatnonzero(labelled), train.labels[labelled]] = 1.0
    w = np.where(labelled, weight, 1.0)[:, None]
    soft = ((1.0 - w) * one_hot + w * probs).astype(np.float32)
    agree = float(np.mean(probs[labelled].argmax(1) == train.labels[labelled])) if labelled.any() else 0.0
    meta = {**train.meta, "target_mode": "crossentropy",
            "teacher": str(teacher) if isinstance(teacher, str) else [str(t) for t in teachers],
            "teacher_weight": weight,
            "teacher_temperature": temperature, "teacher_train_accuracy": agree}
    return FaceDataset(train.images, train.labels, train.classes, soft, train.split, train.source, meta)


def _teacher_probs(teacher: str, train: FaceDataset, device: str) -> np.ndarray:
    """One teacher's probabilities (N, classes) on the training faces, its classes checked.

    Kept in the decode cache (``$FERKIT_CACHE/teachers/``), keyed by the teacher file's bytes, the
    faces and the precision it ran in: scoring 26,000 faces with a 112 px teacher takes about ten
    CPU-minutes, which a resumed run, each seed of a student and every ensemble naming the same
    teacher would otherwise pay again.
    """
    model = load_model(teacher, device)
    if tuple(model.classes) != tuple(train.classes):
        raise ConfigError(f"data.teacher {teacher} predicts {', '.join(model.classes)}, not this dataset's "
                          f"classes ({', '.join(train.classes)})")
    amp = autocast_dtype(resolve_device(device), "auto") if hasattr(model, "net") else None  # torch models
    images = np.ascontiguousarray(train.images)
    path = _teacher_cache_path(resolve_model_path(teacher), images, str(amp))
    try:
        probs = np.load(path)
        if probs.shape == (len(train), len(train.classes)):
            return probs
    except (OSError, ValueError):
        pass
    probs = np.asarray(model.predict_probs(images, **({"amp_dtype": amp} if amp is not None else {})),
                       np.float64)
    try:
        atomic_write(path, lambda fh: np.save(fh, probs))
    except OSError as exc:  # a read-only or full disk costs the next run the scoring, nothing else
        warnings.warn(f"ferkit: could not keep the teacher's probabilities at {path}: {exc}", stacklevel=2)
    return probs


def _teacher_cache_path(model_file: Path, images: np.ndarray, precision: str) -> Path:
    """Where a teacher's probabilities on these faces are kept: a hash of all three."""
    h = hashlib.sha256()
    h.update(model_file.read_bytes())
    h.update(f"{images.shape}{images.dtype}{precision}".encode())
    h.update(images.tobytes())
    return cache_dir() / "teachers" / f"{h.hexdigest()[:32]}.npy"
