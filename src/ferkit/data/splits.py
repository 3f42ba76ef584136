"""Labelled / unlabelled splits for semi-supervised runs, and stratified subsets for quick runs.

Counts come from the labels themselves (never hard-coded per dataset) and are allocated in
proportion to class frequency with the largest-remainder rule, so the totals are exact.
"""

from __future__ import annotations

import numpy as np

from ferkit.errors import ConfigError


def _allocate(counts: np.ndarray, n: int, min_one: bool) -> np.ndarray:
    """Integers <= counts summing to n, proportional to counts (>= 1 per non-empty class if min_one)."""
    counts = np.asarray(counts, np.int64)
    base = np.zeros_like(counts)
    if min_one:
        base = (counts > 0).astype(np.int64)
    rest = n - int(base.sum())
    room = counts - base
    if rest <= 0 or room.sum() == 0:
        return base
    quota = rest * room / room.sum()
    take = np.floor(quota).astype(np.int64)
    left = rest - int(take.sum())
    if left:
        order = np.argsort(-(quota - take), kind="stable")
        take[order[:left]] += 1
    return base + np.minimum(take, room)


def _pick(labels: np.ndarray, per: dict[int, int], rng: np.random.Generator) -> np.ndarray:
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in sorted(per.items()) if k > 0]
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)


def split_labelled(labels: np.ndarray, n_labelled: int | float, num_classes: int, seed: int,
                   per_class: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(labelled_idx, unlabelled_idx), both sorted int64, disjoint, covering every row.

    ``n_labelled`` int: that many rows in total, spread over classes in proportion to their
    frequency with at least one per class present (exact total); with ``per_class=True``, that
    many rows of every class present. Float in (0, 1]: that fraction of each class (at least 1).
    Rows labelled -1 are always unlabelled. Seeded with numpy ``default_rng(seed)``.
    """
    labels = np.asarray(labels, np.int64)
    valid = labels >= 0
    if labels.size and labels.max() >= num_classes:
        raise ConfigError(f"label {int(labels.max())} is out of range for {num_classes} classes")
    counts = np.bincount(labels[valid], minlength=num_classes)
    present = int((counts > 0).sum())
    if isinstance(n_labelled, bool) or not isinstance(n_labelled, (int, float, np.integer, np.floating)):
        raise ConfigError(f"n_labelled must be an int or a fraction, not {n_labelled!r}")
    if isinstance(n_labelled, (float, np.floating)):
        frac = float(n_labelled)
        if not 0.0 < frac <= 1.0:
            raise ConfigError(f"a fraction of labelled rows must be in (0, 1], not {frac}")
        take = np.where(counts > 0, np.maximum(1, np.round(counts * frac)), 0).astype(np.int64)
    elif per_class:
        n = int(n_labelled)
        short = [c for c in range(num_classes) if 0 < counts[c] < n]
        if n < 1 or short:
            raise ConfigError(f"cannot take {n} labelled rows per class: class(es) {short} have fewer "
                              f"(counts {counts.tolist()})")
        take = np.where(counts > 0, n, 0)
    else:
        n = int(n_labelled)
        if not present <= n <= int(counts.sum()):
            raise ConfigError(f"n_labelled={n} must be between the {present} classes present and the "
                              f"{int(counts.sum())} labelled rows")
        take = _allocate(counts, n, min_one=True)
    rng = np.random.default_rng(seed)
    lab = _pick(labels, {c: int(take[c]) for c in range(num_classes)}, rng)
    mask = np.ones(labels.shape[0], bool)
    mask[lab] = False
    return lab.astype(np.int64), np.flatnonzero(mask).astype(np.int64)


def subsample(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of ``n`` rows stratified by label (-1 rows form their own stratum), seeded.

    For quick runs and tests; all rows when ``n`` >= len(labels).
    """
    labels = np.asarray(labels, np.int64)
    if n >= labels.shape[0]:
        return np.arange(labels.shape[0])
    if n < 1:
        raise ConfigError(f"a subset needs at least 1 row, not {n}")
    strata, counts = np.unique(labels, return_counts=True)
    take = _allocate(counts, int(n), min_one=n >= len(strata))
    rng = np.random.default_rng(seed)
    return _pick(labels, {int(s): int(k) for s, k in zip(strata, take)}, rng).astype(np.int64)
