"""Label noise and labelled/unlabelled splits."""

from __future__ import annotations

import numpy as np
import pytest

from ferkit.data import inject_noise, load_dataset, split_labelled, subsample
from ferkit.errors import ConfigError

from fixtures_data import isolated_cache, write_fer2013  # noqa: F401


def _labels(n=20_000, k=7, seed=0):
    return np.random.default_rng(seed).integers(0, k, n)


@pytest.mark.parametrize("rate", [0.1, 0.3, 0.5])
def test_flip_rate_within_binomial_tolerance(rate):
    clean = _labels()
    noisy, flipped = inject_noise(clean, rate, 7, seed=1)
    n = len(clean)
    assert abs(flipped.sum() - rate * n) < 5 * np.sqrt(n * rate * (1 - rate))
    assert (noisy[flipped] != clean[flipped]).all() and (noisy[~flipped] == clean[~flipped]).all()
    assert noisy.dtype == np.int64 and noisy.min() >= 0 and noisy.max() < 7


def test_flips_are_uniform_over_the_other_classes():
    clean = np.zeros(20_000, np.int64)
    noisy, flipped = inject_noise(clean, 0.6, 7, seed=3)
    counts = np.bincount(noisy[flipped], minlength=7)
    assert counts[0] == 0
    expected = flipped.sum() / 6
    assert (np.abs(counts[1:] - expected) < 5 * np.sqrt(expected)).all()


def test_noise_seeded_rate_zero_and_unlabelled_rows():
    clean = _labels()
    a, fa = inject_noise(clean, 0.2, 7, seed=5)
    b, fb = inject_noise(clean, 0.2, 7, seed=5)
    c, _ = inject_noise(clean, 0.2, 7, seed=6)
    assert np.array_equal(a, b) and np.array_equal(fa, fb) and not np.array_equal(a, c)
    same, none = inject_noise(clean, 0.0, 7, seed=5)
    assert np.array_equal(same, clean) and not none.any()
    with_unlabelled = clean.copy()
    with_unlabelled[::3] = -1
    out, flipped = inject_noise(with_unlabelled, 1.0, 7, seed=0)
    assert (out[::3] == -1).all() and not flipped[::3].any()
    assert flipped.sum() == (with_unlabelled >= 0).sum()
    with pytest.raises(ConfigError):
        inject_noise(clean, 1.5, 7, 0)


@pytest.mark.usefixtures("isolated_cache")
def test_load_dataset_noises_training_rows_only(tmp_path):
    csv = tmp_path / "f.csv"
    write_fer2013(csv, [0, 1, 2, 3, 4, 5, 6] * 60, ["Training"] * 350 + ["PublicTest"] * 70)
    clean = load_dataset("fer2013", csv, "Training")
    d = load_dataset("fer2013", csv, "Training", noise=0.4, noise_seed=2)
    assert d.meta["noise_rate"] == 0.4 and np.array_equal(d.meta["clean_labels"], clean.labels)
    assert 0.25 < d.meta["flipped"].mean() < 0.55
    assert np.array_equal(d.labels != clean.labels, d.meta["flipped"])
    again = load_dataset("fer2013", csv, "train", noise=0.4, noise_seed=2)
    assert np.array_equal(again.labels, d.labels)
    test = load_dataset("fer2013", csv, "PublicTest", noise=0.4, noise_seed=2)
    assert np.array_equal(test.labels, load_dataset("fer2013", csv, "PublicTest").labels)
    assert test.meta["noise_rate"] == 0.0 and "not a training split" in test.meta["noise_note"]


def _imbalanced():
    counts = [500, 300, 120, 50, 20, 8, 2]
    lab = np.concatenate([np.full(c, k) for k, c in enumerate(counts)])
    return np.random.default_rng(0).permutation(lab), np.array(counts)


def test_split_labelled_int_total():
    labels, counts = _imbalanced()
    lab, unl = split_labelled(labels, 100, 7, seed=0)
    assert len(lab) == 100 and len(lab) + len(unl) == len(labels)
    assert not np.intersect1d(lab, unl).size
    assert np.array_equal(np.sort(np.r_[lab, unl]), np.arange(len(labels)))
    got = np.bincount(labels[lab], minlength=7)
    assert (got >= 1).all()
    assert np.abs(got - 100 * counts / counts.sum()).max() <= 2
    lab2, _ = split_labelled(labels, 100, 7, seed=0)
    lab3, _ = split_labelled(labels, 100, 7, seed=1)
    assert np.array_equal(lab, lab2) and not np.array_equal(lab, lab3)


def test_split_labelled_per_class_fraction_and_unlabelled_rows():
    labels, counts = _imbalanced()
    lab, _ = split_labelled(labels, 2, 7, seed=0, per_class=True)
    assert np.bincount(labels[lab], minlength=7).tolist() == [2] * 7
    lab, _ = split_labelled(labels, 0.1, 7, seed=0)
    assert np.bincount(labels[lab], minlength=7).tolist() == [50, 30, 12, 5, 2, 1, 1]
    with_missing = labels.copy()
    with_missing[:40] = -1
    lab, unl = split_labelled(with_missing, 50, 7, seed=0)
    assert (with_missing[lab] >= 0).all() and set(range(40)) <= set(unl.tolist())
    with pytest.raises(ConfigError, match="fewer"):
        split_labelled(labels, 5, 7, seed=0, per_class=True)
    with pytest.raises(ConfigError):
        split_labelled(labels, 3, 7, seed=0)  # fewer than one per class
    with pytest.raises(ConfigError):
        split_labelled(labels, 1.5, 7, seed=0)


def test_subsample_is_stratified_and_seeded():
    labels, counts = _imbalanced()
    idx = subsample(labels, 200, seed=4)
    assert len(idx) == 200 and len(np.unique(idx)) == 200
    assert np.abs(np.bincount(labels[idx], minlength=7) - 200 * counts / counts.sum()).max() <= 2
    assert np.array_equal(idx, subsample(labels, 200, seed=4))
    assert np.array_equal(subsample(labels, 10_000), np.arange(len(labels)))
    assert len(subsample(labels, 3, seed=0)) == 3
