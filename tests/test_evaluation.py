"""Evaluation metrics (checked against scikit-learn), calibration, plots and the metrics file."""

from __future__ import annotations

import json

import numpy as np
import pytest
from matplotlib.image import imread
from sklearn import metrics as skm

from ferkit.errors import InputError
from ferkit.evaluation import (
    accuracy,
    auroc,
    brier_score,
    compute_metrics,
    confusion_matrix,
    expected_calibration_error,
    macro_f1,
    mean_class_accuracy,
    nll,
    risk_coverage,
)
from ferkit.evaluation.io import write_metrics
from ferkit.evaluation.plots import Curve, plot_confusion_matrix, plot_curves, plot_reliability_diagram

CLASSES = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear")


def _random(n: int = 400, k: int = 7, seed: int = 0, skill: float = 1.5):
    """Softmax probabilities that lean towards the label, so scores are neither 0 nor 1."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), labels] += skill
    probs = np.exp(logits - logits.max(1, keepdims=True))
    return probs / probs.sum(1, keepdims=True), labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_sklearn(seed):
    probs, labels = _random(seed=seed)
    pred = probs.argmax(1)
    ks = list(range(len(CLASSES)))
    m = compute_metrics(probs, labels, CLASSES)
    assert m["n"] == len(labels) and m["n_ignored"] == 0 and m["classes"] == list(CLASSES)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(labels, pred), abs=1e-12)
    assert m["macro_f1"] == pytest.approx(skm.f1_score(labels, pred, average="macro"), abs=1e-12)
    assert m["mean_class_accuracy"] == pytest.approx(skm.balanced_accuracy_score(labels, pred), abs=1e-12)
    assert m["nll"] == pytest.approx(skm.log_loss(labels, probs, labels=ks), abs=1e-9)
    assert m["confusion_matrix"] == skm.confusion_matrix(labels, pred, labels=ks).tolist()
    p, r, f, s = skm.precision_recall_fscore_support(labels, pred, labels=ks, zero_division=0)
    for i, c in enumerate(CLASSES):
        row = m["per_class"][c]
        got = (row["precision"], row["recall"], row["f1"], row["support"])
        assert got == pytest.approx((p[i], r[i], f[i], s[i]))
    onehot = np.eye(len(CLASSES))[labels]
    assert m["brier"] == pytest.approx(np.mean(np.sum((probs - onehot) ** 2, 1)))
    json.dumps(m, allow_nan=False)  # serialisable as strict JSON


def test_separate_functions_agree_with_compute_metrics():
    probs, labels = _random(seed=3)
    m = compute_metrics(probs, labels, CLASSES)
    assert accuracy(probs, labels) == m["accuracy"]
    assert macro_f1(probs, labels) == pytest.approx(m["macro_f1"])
    assert mean_class_accuracy(probs, labels) == pytest.approx(m["mean_class_accuracy"])
    assert nll(probs, labels) == pytest.approx(m["nll"])
    assert brier_score(probs, labels) == pytest.approx(m["brier"])
    assert expected_calibration_error(probs, labels)[0] == pytest.approx(m["ece"])
    assert confusion_matrix(probs, labels).tolist() == m["confusion_matrix"]
    # top-1 functions take integer predictions too
    assert confusion_matrix(probs.argmax(1), labels, 7).tolist() == m["confusion_matrix"]
    assert accuracy(probs.argmax(1), labels) == m["accuracy"]


def test_unlabelled_rows_are_ignored():
    probs, labels = _random(n=300, seed=4)
    masked = labels.copy()
    masked[::3] = -1
    keep = masked >= 0
    m = compute_metrics(probs, masked, CLASSES)
    ref = compute_metrics(probs[keep], labels[keep], CLASSES)
    assert m["n"] == keep.sum() and m["n_ignored"] == (~keep).sum()
    for key in ("accuracy", "macro_f1", "nll", "ece", "brier", "confusion_matrix", "per_class"):
        assert m[key] == ref[key]
    with pytest.raises(InputError, match="no labelled rows"):
        compute_metrics(probs[:5], np.full(5, -1), CLASSES)


def test_absent_and_never_predicted_classes_give_no_nan():
    # class 2 never occurs and is never predicted; class 1 occurs but is never predicted
    probs = np.array([[0.9, 0.05, 0.05], [0.8, 0.1, 0.1], [0.6, 0.3, 0.1]])
    labels = np.array([0, 1, 1])
    with np.errstate(all="raise"):
        m = compute_metrics(probs, labels, ("a", "b", "c"))
    assert m["per_class"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    assert m["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    pred = probs.argmax(1)
    assert m["macro_f1"] == pytest.approx(skm.f1_score(labels, pred, average="macro", zero_division=0))
    assert m["mean_class_accuracy"] == pytest.approx(0.5)  # mean recall over a (1.0) and b (0.0)
    json.dumps(m, allow_nan=False)


def test_nll_clips_zero_probability():
    probs = np.array([[1.0, 0.0], [0.5, 0.5]])
    assert nll(probs, np.array([1, 0])) == pytest.approx((-np.log(1e-12) - np.log(0.5)) / 2)


def test_brier_hand_case():
    probs = np.array([[0.7, 0.2, 0.1], [0.2, 0.2, 0.6]])
    # row 0: 0.09 + 0.04 + 0.01 = 0.14; row 1 (label 1): 0.04 + 0.64 + 0.36 = 1.04
    assert brier_score(probs, np.array([0, 1])) == pytest.approx((0.14 + 1.04) / 2)


def test_ece_perfectly_calibrated_is_zero():
    # 10 rows at confidence 0.8, 8 right; 10 rows at 0.6, 6 right: every bin's accuracy = confidence
    probs = np.array([[0.8, 0.2]] * 10 + [[0.6, 0.4]] * 10)
    labels = np.array([0] * 8 + [1] * 2 + [0] * 6 + [1] * 4)
    ece, table = expected_calibration_error(probs, labels, n_bins=15)
    assert ece == pytest.approx(0.0, abs=1e-12)
    assert len(table) == 15 and sum(b["count"] for b in table) == 20
    filled = [b for b in table if b["count"]]
    assert [(b["count"], b["accuracy"], b["confidence"]) for b in filled] == [
        (10, pytest.approx(0.6), pytest.approx(0.6)), (10, pytest.approx(0.8), pytest.approx(0.8))]
    assert all(b["accuracy"] is None for b in table if not b["count"])


def test_ece_sampled_calibration_is_small_and_overconfidence_known():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.5, 1.0, 20000)
    correct = rng.random(20000) < conf
    probs = np.stack([conf, 1 - conf], 1)
    labels = np.where(correct, 0, 1)
    assert expected_calibration_error(probs, labels)[0] < 0.02
    # always 90 % sure, right half the time: ECE = |0.5 - 0.9| = 0.4
    probs = np.array([[0.9, 0.1]] * 100)
    labels = np.array([0, 1] * 50)
    assert expected_calibration_error(probs, labels)[0] == pytest.approx(0.4)


def test_ece_bin_edges_are_right_closed():
    # confidence exactly on an edge (0.6 with 5 bins) falls in the bin that ends there
    _, table = expected_calibration_error(np.array([[0.6, 0.4]]), np.array([0]), n_bins=5)
    assert [b["count"] for b in table] == [0, 0, 1, 0, 0]


def test_bad_inputs_raise():
    probs, labels = _random(n=10)
    with pytest.raises(ValueError, match="columns"):
        compute_metrics(probs, labels, CLASSES[:5])
    with pytest.raises(ValueError, match="labels must lie"):
        compute_metrics(probs, np.full(10, 9), CLASSES)
    with pytest.raises(ValueError, match="do not match"):
        compute_metrics(probs, labels[:5], CLASSES)


def test_auroc_matches_sklearn_with_ties():
    rng = np.random.default_rng(5)
    positives = rng.random(500) < 0.3
    scores = np.round(rng.normal(size=500) + positives, 1)  # rounding makes many ties
    assert auroc(scores, positives) == pytest.approx(skm.roc_auc_score(positives, scores), abs=1e-12)
    assert auroc([1, 2, 3], [False, True, True]) == 1.0
    assert auroc([1, 1, 1, 1], [False, True, False, True]) == 0.5
    with pytest.raises(ValueError, match="positives and negatives"):
        auroc([0.1, 0.2], [True, True])


def test_risk_coverage():
    conf = np.array([0.9, 0.8, 0.7, 0.6])
    correct = np.array([True, False, True, False])
    coverage, risk, aurc = risk_coverage(conf, correct)
    assert coverage.tolist() == [0.25, 0.5, 0.75, 1.0]
    assert risk == pytest.approx([0.0, 0.5, 1 / 3, 0.5])
    assert aurc == pytest.approx(np.mean([0.0, 0.5, 1 / 3, 0.5]))
    # a perfect ranking puts every error last; the full-coverage risk is the error rate
    _, risk, best = risk_coverage([4, 3, 2, 1], [True, True, False, False])
    assert risk[-1] == 0.5 and best == pytest.approx((0 + 0 + 1 / 3 + 1 / 2) / 4)
    # ties: the expected curve, whatever the input order
    a = risk_coverage([0.5, 0.5, 0.9], [True, False, True])
    b = risk_coverage([0.5, 0.5, 0.9], [False, True, True])
    assert a[1] == pytest.approx(b[1]) and a[1] == pytest.approx([0.0, 0.25, 1 / 3])


def _png(path):
    assert path.is_file() and path.stat().st_size > 0
    img = imread(path)
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 200 and img.shape[2] in (3, 4)
    return img


def test_plots_written(tmp_path):
    probs, labels = _random(seed=6)
    m = compute_metrics(probs, labels, CLASSES)
    _png(plot_confusion_matrix(m["confusion_matrix"], CLASSES, tmp_path / "a" / "cm.png"))
    _png(plot_confusion_matrix(m["confusion_matrix"], CLASSES, tmp_path / "cm_counts.png", normalize=False))
    _png(plot_reliability_diagram(probs, labels, tmp_path / "b" / "rel.png"))
    x = np.arange(50)
    _png(plot_curves({"loss": Curve(x, np.exp(-x / 10) + 0.1, "train", smooth=0.6),
                      "acc": [Curve(x, x / 50, "val"), Curve(x, x / 60, "train")]},
                     tmp_path / "curves.png", logy="auto", vlines=[10]))
    assert not list(tmp_path.rglob("*.tmp"))


def test_write_metrics(tmp_path):
    probs, labels = _random(seed=7)
    m = compute_metrics(probs, labels, CLASSES)
    out = tmp_path / "eval" / "fer2013_PublicTest.json"
    paths = write_metrics(m, out, probs, labels, CLASSES)
    assert paths == [out, tmp_path / "eval" / "fer2013_PublicTest_confusion_matrix.png",
                     tmp_path / "eval" / "fer2013_PublicTest_reliability.png"]
    for p in paths[1:]:
        _png(p)
    saved = json.loads(out.read_text())
    assert saved["accuracy"] == m["accuracy"] and saved["per_class"] == m["per_class"]
    assert saved["plots"] == {"confusion_matrix": "fer2013_PublicTest_confusion_matrix.png",
                              "reliability": "fer2013_PublicTest_reliability.png"}
    assert "plots" not in m  # the caller's dict is left alone
    assert sorted(p.name for p in out.parent.iterdir()) == sorted(p.name for p in paths)  # no temp files

    paths = write_metrics(m, tmp_path / "m.json", probs, labels, CLASSES, plot_dir=tmp_path / "plots")
    assert [p.name for p in paths[1:]] == ["confusion_matrix.png", "reliability.png"]
    assert json.loads((tmp_path / "m.json").read_text())["plots"]["reliability"] == "plots/reliability.png"


def test_timed_rate_is_the_one_timer_of_every_speed_figure():
    """ferkit benchmark ("until"), compare_fer ("calibrate") and onnx_engine (one pass per timing) share it."""
    import time

    from ferkit.evaluation.speed import timed_rate

    calls: list[int] = []

    def fn() -> int:
        calls.append(1)
        return 4

    r = timed_rate(fn, repeats=3, warmup=2, calls=5)
    assert len(calls) == 2 + 3 * 5 and r["calls_per_repeat"] == 5 and len(r["rates"]) == 3 and r["repeats"] == 3
    assert r["min"] <= r["median"] <= r["max"] and r["median"] > 0
    calls.clear()
    warm: list[int] = []
    r = timed_rate(fn, repeats=2, min_seconds=0.0, warmup=lambda: warm.append(1), calls="calibrate")
    assert warm == [1] and r["calls_per_repeat"] == 1 and len(calls) == 1 + 2  # the calibration call, then 2 x 1
    r = timed_rate(lambda: (time.sleep(0.002), 1)[1], repeats=2, min_seconds=0.01)
    assert r["calls_per_repeat"] is None and all(x < 1 / 0.002 for x in r["rates"])
    assert {"load_1min_before", "load_1min_after", "load_before", "load_after"} <= set(r)
    with pytest.raises(ValueError, match="calls must be"):
        timed_rate(fn, calls="sometimes")
