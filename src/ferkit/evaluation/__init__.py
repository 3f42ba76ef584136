"""Evaluation: metrics on predicted probabilities, their plots, metrics files and run reports.

The metrics (numpy only) are imported eagerly; the plotting, I/O and report functions load
matplotlib and pandas, so they are imported on first use (the trainer imports the metrics
without paying for matplotlib).
"""

from __future__ import annotations

from typing import Any

from ferkit.metrics import (
    accuracy,
    auroc,
    brier_score,
    compute_metrics,
    confusion_matrix,
    expected_calibration_error,
    macro_f1,
    mean_class_accuracy,
    nll,
    precision_recall_f1,
    risk_coverage,
)

_LAZY = {
    "plot_confusion_matrix": "ferkit.evaluation.plots",
    "plot_reliability_diagram": "ferkit.evaluation.plots",
    "plot_curves": "ferkit.evaluation.plots",
    "Curve": "ferkit.evaluation.plots",
    "write_metrics": "ferkit.evaluation.io",
    "read_metrics": "ferkit.evaluation.io",
    "make_report": "ferkit.evaluation.report",
    "read_log": "ferkit.evaluation.report",
}

__all__ = [
    "accuracy", "auroc", "brier_score", "compute_metrics", "confusion_matrix", "expected_calibration_error",
    "macro_f1", "mean_class_accuracy", "nll", "precision_recall_f1", "risk_coverage", *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ferkit.evaluation' has no attribute {name!r}")
