"""Classification, calibration and selective-prediction metrics on predicted probabilities.

Everything here is plain numpy so the trainer, ``ferkit evaluate`` and the analyses share one
definition of each number (no scikit-learn at run time; the tests check agreement with it).

Conventions, the same in every function:

- arguments are ``(probs, labels)`` -- predictions first -- where ``probs`` is (N, K) and rows
  are class probabilities; functions that only need the top-1 class also accept (N,) integer
  predictions in place of ``probs``;
- rows whose label is ``-1`` (no label, see :class:`ferkit.data.types.FaceDataset`) are left
  out before anything is computed;
- the predicted class is ``argmax`` of a row (ties go to the lower class index).

Zero divisions never give NaN: the precision of a class that is never predicted is 0, the recall
of a class with no support is 0, and an F1 whose precision and recall are both 0 is 0 (what
scikit-learn gives with ``zero_division=0``). Averages exclude classes for which the number is
undefined rather than counting them as 0: ``macro_f1`` averages the classes that occur in the
labels or in the predictions (scikit-learn's default), ``mean_class_accuracy`` the classes with
support (scikit-learn's ``balanced_accuracy_score``), so a class missing from a small split does
not drag the average down.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ferkit.errors import InputError

PROB_EPS = 1e-12


# ---- input handling ---------------------------------------------------------------------------
def _as_labels(labels: Any) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {y.shape}")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise ValueError("labels must be integer class indices (-1 = no label)")
    return y.astype(np.int64)


def _prepare(probs: Any, labels: Any, num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """Validated ``(probs or preds, labels, K)`` with the label -1 rows removed."""
    p = np.asarray(probs)
    y = _as_labels(labels)
    if p.ndim not in (1, 2) or p.shape[0] != y.shape[0]:
        raise ValueError(f"probs {p.shape} and labels {y.shape} do not match: "
                         "expected (N, K) or (N,) and (N,)")
    if p.ndim == 2:
        if num_classes is not None and p.shape[1] != num_classes:
            raise ValueError(f"probs have {p.shape[1]} columns but there are {num_classes} classes")
        num_classes = p.shape[1]
        p = p.astype(np.float64, copy=False)
        if not np.all(np.isfinite(p)):
            raise ValueError("probs contain NaN or infinite values")
    else:
        p = _as_labels(p)
        if num_classes is None:
            num_classes = int(max(p.max(initial=-1), y.max(initial=-1)) + 1)
        if p.size and (p.min() < 0 or p.max() >= num_classes):
            raise ValueError(f"predicted class indices must lie in [0, {num_classes})")
    if y.size and (y.min() < -1 or y.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}) or be -1 (no label); "
                         f"got range [{y.min()}, {y.max()}]")
    keep = y >= 0
    return p[keep], y[keep], int(num_classes)


def _preds(p: np.ndarray) -> np.ndarray:
    return p.argmax(1) if p.ndim == 2 else p


def _need_probs(p: np.ndarray, what: str) -> None:
    if p.ndim != 2:
        raise ValueError(f"{what} needs (N, K) probabilities, not (N,) predictions")


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num, den = np.asarray(num, np.float64), np.asarray(den, np.float64)
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den > 0)


# ---- classification ---------------------------------------------------------------------------
def confusion_matrix(probs: Any, labels: Any, num_classes: int | None = None) -> np.ndarray:
    """(K, K) int64 counts, rows = true class, columns = predicted class."""
    p, y, k = _prepare(probs, labels, num_classes)
    return np.bincount(y * k + _preds(p), minlength=k * k).reshape(k, k).astype(np.int64)


def precision_recall_f1(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class precision, recall, F1 and support from a confusion matrix (0 where undefined)."""
    cm = np.asarray(cm, np.int64)
    tp = np.diag(cm).astype(np.float64)
    support, predicted = cm.sum(1), cm.sum(0)
    precision, recall = _safe_div(tp, predicted), _safe_div(tp, support)
    f1 = _safe_div(2 * tp, support + predicted)  # = 2PR / (P + R), without the 0/0
    return {"precision": precision, "recall": recall, "f1": f1, "support": support, "predicted": predicted}


def accuracy(probs: Any, labels: Any) -> float:
    """Fraction of labelled rows whose top-1 class is the label."""
    p, y, _ = _prepare(probs, labels)
    return float(np.mean(_preds(p) == y)) if y.size else 0.0


def macro_f1(probs: Any, labels: Any, num_classes: int | None = None) -> float:
    """Unweighted mean F1 over the classes present in the labels or the predictions."""
    scores = precision_recall_f1(confusion_matrix(probs, labels, num_classes))
    seen = (scores["support"] + scores["predicted"]) > 0
    return float(scores["f1"][seen].mean()) if seen.any() else 0.0


def mean_class_accuracy(probs: Any, labels: Any, num_classes: int | None = None) -> float:
    """Mean per-class recall over the classes with support (the "mean accuracy" of FER papers)."""
    scores = precision_recall_f1(confusion_matrix(probs, labels, num_classes))
    has = scores["support"] > 0
    return float(scores["recall"][has].mean()) if has.any() else 0.0


# ---- probabilistic ----------------------------------------------------------------------------
def nll(probs: Any, labels: Any, eps: float = PROB_EPS) -> float:
    """Mean negative log probability of the true class (probabilities clipped at ``eps``)."""
    p, y, _ = _prepare(probs, labels)
    _need_probs(p, "nll")
    if not y.size:
        return 0.0
    return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], eps, 1.0))))


def brier_score(probs: Any, labels: Any) -> float:
    """Mean over rows of the summed squared difference to the one-hot label (0 best, 2 worst)."""
    p, y, k = _prepare(probs, labels)
    _need_probs(p, "brier_score")
    if not y.size:
        return 0.0
    onehot = np.eye(k)[y]
    return float(np.mean(np.sum((p - onehot) ** 2, axis=1)))


def expected_calibration_error(probs: Any, labels: Any,
                               n_bins: int = 15) -> tuple[float, list[dict[str, Any]]]:
    """Top-1 ECE over ``n_bins`` equal-width confidence bins, and the per-bin table.

    Bin ``b`` holds the rows with ``lower < confidence <= upper`` (the first bin also holds 0).
    ECE = sum over bins of ``count / N * |accuracy - confidence|``. Each table row is
    ``{"lower", "upper", "count", "accuracy", "confidence"}``; accuracy and confidence are the
    bin means, ``None`` for an empty bin (the table goes into JSON as is).
    """
    if n_bins < 1:
        raise ValueError("n_bins must be >= 1")
    p, y, _ = _prepare(probs, labels)
    _need_probs(p, "expected_calibration_error")
    conf = p.max(1)
    correct = (p.argmax(1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.digitize(conf, edges[1:-1], right=True)  # edges[b] < conf <= edges[b + 1]
    count = np.bincount(idx, minlength=n_bins)
    acc = _safe_div(np.bincount(idx, weights=correct, minlength=n_bins), count)
    mean_conf = _safe_div(np.bincount(idx, weights=conf, minlength=n_bins), count)
    n = max(len(y), 1)
    ece = float(np.sum(count / n * np.abs(acc - mean_conf)))
    table = [{"lower": float(edges[b]), "upper": float(edges[b + 1]), "count": int(count[b]),
              "accuracy": float(acc[b]) if count[b] else None,
              "confidence": float(mean_conf[b]) if count[b] else None} for b in range(n_bins)]
    return ece, table


# ---- selective prediction and ranking ---------------------------------------------------------
def _tie_groups(sorted_values: np.ndarray) -> np.ndarray:
    """Group id per position of a sorted array (equal values share an id)."""
    if not sorted_values.size:
        return np.zeros(0, np.int64)
    return np.concatenate([[0], np.cumsum(sorted_values[1:] != sorted_values[:-1])])


def risk_coverage(confidence: Any, correct: Any) -> tuple[np.ndarray, np.ndarray, float]:
    """Risk-coverage curve of selective prediction and its area (AURC, lower is better).

    Rows are accepted from the most to the least confident; at coverage ``i / N`` the risk is
    the error rate among the ``i`` accepted rows. Rows with equal confidence cannot be ordered,
    so within a tie the expected risk over their orderings is used (each tied row counts as the
    tie's mean error), which makes the curve independent of the input order. AURC is the mean
    risk over the ``N`` coverage points (Geifman et al., 2019). Returns ``(coverage, risk, aurc)``.
    """
    conf = np.asarray(confidence, np.float64).ravel()
    ok = np.asarray(correct).ravel().astype(bool)
    if conf.shape != ok.shape:
        raise ValueError(f"confidence {conf.shape} and correct {ok.shape} differ in length")
    if not conf.size:
        raise ValueError("risk_coverage needs at least one row")
    if not np.all(np.isfinite(conf)):
        raise ValueError("confidence contains NaN or infinite values")
    order = np.argsort(-conf, kind="stable")
    err = (~ok[order]).astype(np.float64)
    groups = _tie_groups(conf[order])
    err = (np.bincount(groups, weights=err) / np.bincount(groups))[groups]
    n = np.arange(1, conf.size + 1)
    risk = np.cumsum(err) / n
    return n / conf.size, risk, float(risk.mean())


def average_ranks(values: Any) -> np.ndarray:
    """1-based ranks of ``values``, ties given the mean of the ranks they span."""
    v = np.asarray(values, np.float64).ravel()
    order = np.argsort(v, kind="stable")
    groups = _tie_groups(v[order])
    first = np.flatnonzero(np.r_[True, np.diff(groups) > 0])
    last = np.r_[first[1:], v.size] - 1
    ranks = np.empty(v.size)
    ranks[order] = ((first + last) / 2.0 + 1.0)[groups]
    return ranks


def auroc(scores: Any, positives: Any) -> float:
    """Area under the ROC curve: the probability that a positive scores above a negative.

    Computed from ranks (Mann-Whitney U) with tied scores given averaged ranks, i.e. a tie
    counts one half. Raises ``ValueError`` when there are no positives or no negatives.
    """
    s = np.asarray(scores, np.float64).ravel()
    pos = np.asarray(positives).ravel().astype(bool)
    if s.shape != pos.shape:
        raise ValueError(f"scores {s.shape} and positives {pos.shape} differ in length")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or infinite values")
    n_pos = int(pos.sum())
    n_neg = pos.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"auroc needs positives and negatives (got {n_pos} and {n_neg})")
    ranks = average_ranks(s)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


# ---- everything at once -----------------------------------------------------------------------
def compute_metrics(probs: np.ndarray, labels: np.ndarray, classes: Sequence[str], n_bins: int = 15) -> dict:
    """All the scores of one evaluation as a JSON-serialisable dict.

    Keys: ``accuracy``, ``macro_f1``, ``mean_class_accuracy``, ``nll``, ``ece``, ``brier``,
    ``per_class`` ({class: {precision, recall, f1, support}}), ``confusion_matrix`` (K x K
    lists, rows true, columns predicted), ``n`` (labelled rows scored), ``n_ignored`` (rows with
    label -1), ``classes``, ``n_bins`` and ``reliability`` (the ECE bin table).
    Raises :class:`InputError` when no row has a label.
    """
    classes = [str(c) for c in classes]
    if len(set(classes)) != len(classes):
        raise ValueError(f"class names repeat: {classes}")
    y_all = _as_labels(labels)
    p, y, k = _prepare(probs, y_all, len(classes))
    _need_probs(p, "compute_metrics")
    if not y.size:
        raise InputError(f"no labelled rows to score: all {y_all.size} labels are -1 (or there are no rows)")
    cm = confusion_matrix(p, y, k)
    scores = precision_recall_f1(cm)
    seen = (scores["support"] + scores["predicted"]) > 0
    has = scores["support"] > 0
    ece, table = expected_calibration_error(p, y, n_bins)
    return {
        "n": int(y.size),
        "n_ignored": int(y_all.size - y.size),
        "classes": classes,
        "accuracy": float(np.trace(cm) / y.size),
        "macro_f1": float(scores["f1"][seen].mean()),
        "mean_class_accuracy": float(scores["recall"][has].mean()),
        "nll": nll(p, y),
        "ece": ece,
        "brier": brier_score(p, y),
        "per_class": {c: {"precision": float(scores["precision"][i]), "recall": float(scores["recall"][i]),
                          "f1": float(scores["f1"][i]), "support": int(scores["support"][i])}
                      for i, c in enumerate(classes)},
        "confusion_matrix": cm.tolist(),
        "n_bins": int(n_bins),
        "reliability": table,
    }
