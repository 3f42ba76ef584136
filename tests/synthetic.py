"""Small generated datasets in real formats, learnable in a few steps (class = bar position), and
the shared test helper that simulates a crash mid-training."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np


def synthetic_faces(n: int, num_classes: int = 7, size: int = 48, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (n, size, size) noise images with a bright bar whose row encodes the class."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, n)
    images = rng.integers(0, 90, (n, size, size)).astype(np.uint8)
    step = size // (num_classes + 1)
    for i, y in enumerate(labels):
        r = step * (int(y) + 1)
        images[i, r - 2:r + 2, 4:-4] = 230
    return images, labels


def write_fer2013_csv(path: Path, n_train: int = 280, n_test: int = 70, seed: int = 0) -> Path:
    """A FER2013-format csv (or .csv.gz) with Training and PublicTest rows."""
    images, labels = synthetic_faces(n_train + n_test, seed=seed)
    lines = ["emotion,pixels,Usage"]
    for i, (img, y) in enumerate(zip(images, labels)):
        usage = "Training" if i < n_train else "PublicTest"
        lines.append(f"{y},{' '.join(map(str, img.reshape(-1)))},{usage}")
    data = ("\n".join(lines) + "\n").encode()
    path = Path(path)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def write_config(path: Path, data_path: Path, out_dir: Path, **sections) -> Path:
    """A small run config for tests (compact model, no augmentation randomness unless asked)."""
    import yaml

    cfg = {
        "name": path.stem,
        "seed": 0,
        "output_dir": str(out_dir),
        "data": {"dataset": "fer2013", "path": str(data_path), "options": {"cache": False}},
        "model": {"name": "compact"},
        "optim": {"batch_size": 32, "lr": 3e-3},
        "train": {"epochs": 2, "device": "cpu", "progress": False, "threads": 1, "log_every": 2},
    }
    for key, value in sections.items():
        cfg.setdefault(key, {})
        if isinstance(value, dict):
            cfg[key].update(value)
        else:
            cfg[key] = value
    path.write_text(yaml.safe_dump(cfg))
    return path


def crash_at(trainer, step: int) -> None:
    """Run ``trainer.fit()`` and stop it with a KeyboardInterrupt right after global ``step``, as a
    Ctrl-C or a killed job would (the checkpoint hook, which runs last, is not reached)."""
    import pytest

    from ferkit.engine.hooks import Hook

    class _StopAt(Hook):
        def after_step(self, tr, logs):
            if tr.step == step:
                raise KeyboardInterrupt

    trainer.hooks.insert(len(trainer.hooks) - 1, _StopAt())
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()


#: a small coarse/fine label structure with FG-Emotions' names, so RALD's hierarchy is exercised
#: without FG-Emotions itself: two coarse classes (fear, happiness), three fine classes each
HIERARCHY: dict[str, tuple[str, ...]] = {"fear": ("anxiety", "panic", "worry"),
                                        "happiness": ("cheerful", "pride", "relief")}


def synthetic_hierarchy(n: int, size: int = 48, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """uint8 (n, size, size) noise images with a bright bar whose row encodes the class: the coarse
    class picks the top or the bottom half, the fine class one of three neighbouring rows there, so
    fine classes of one coarse class look alike, as in a fine-grained set (and a horizontal flip
    keeps the class). Returns images, fine labels and the fine class names."""
    rng = np.random.default_rng(seed)
    fine = [f for kids in HIERARCHY.values() for f in kids]
    labels = rng.integers(0, len(fine), n)
    images = rng.integers(0, 90, (n, size, size)).astype(np.uint8)
    per = len(fine) // len(HIERARCHY)
    step = size // 8
    for i, y in enumerate(labels):
        coarse, sub = divmod(int(y), per)
        r = int(size * (0.17 + 0.46 * coarse)) + step * sub
        images[i, r - 2:r + 2, 4:-4] = 230
    return images, labels, fine


def write_hierarchy_folder(root: Path, n_train: int = 240, n_test: int = 60, seed: int = 0) -> Path:
    """:func:`synthetic_hierarchy` as a folder dataset (``root/{train,test}/<fine label>/<i>.png``),
    read with the folder reader's ``label_graph: fg-emotions`` option."""
    import cv2

    images, labels, fine = synthetic_hierarchy(n_train + n_test, seed=seed)
    for i, (img, y) in enumerate(zip(images, labels)):
        d = Path(root) / ("train" if i < n_train else "test") / fine[int(y)]
        d.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(d / f"{i:04d}.png"), img)
    return Path(root)
