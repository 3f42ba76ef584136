"""Synthetic symmetric label noise, the standard protocol of the noisy-label FER papers (SCN, RUL, EAC).

Apply it to training labels only: a noisy test set would measure the noise, not the model.
:func:`ferkit.data.load_dataset` with ``noise=`` does that for you.
"""

from __future__ import annotations

import numpy as np

from ferkit.errors import ConfigError


def inject_noise(labels: np.ndarray, rate: float, num_classes: int,
                 seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(noisy labels, flipped mask): each label >= 0 flips with probability ``rate``.

    A flipped label moves to a class drawn uniformly among the *other* ``num_classes - 1``
    classes (never to itself), so the realised flip rate is ``rate`` itself. Rows labelled -1
    are left alone. Deterministic for a given ``seed`` (numpy ``default_rng``).
    """
    labels = np.asarray(labels, np.int64)
    rate = float(rate)
    if not 0.0 <= rate <= 1.0:
        raise ConfigError(f"noise rate must be in [0, 1], not {rate}")
    if labels.size and labels.max() >= num_classes:
        raise ConfigError(f"label {int(labels.max())} is out of range for {num_classes} classes")
    if rate > 0 and num_classes < 2:
        raise ConfigError("label noise needs at least 2 classes")
    rng = np.random.default_rng(seed)
    n = labels.shape[0]
    flip = (rng.random(n) < rate) & (labels >= 0)
    shift = rng.integers(1, max(num_classes, 2), size=n)  # 1..K-1: any class but the original
    noisy = labels.copy()
    noisy[flip] = (labels[flip] + shift[flip]) % num_classes
    return noisy, flip
