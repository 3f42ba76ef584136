"""Writing and reading evaluation results: the metrics JSON and its two PNGs.

The JSON is written atomically (a temporary file in the same folder, then ``os.replace``), so a
reader -- ``ferkit report``, a benchmark script, a second ``ferkit evaluate`` -- never sees a
half-written file. NaN and infinities become ``null`` so the file is strict JSON.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ferkit.atomic import atomic_write_text
from ferkit.errors import InputError

CONFUSION_PNG = "confusion_matrix.png"
RELIABILITY_PNG = "reliability.png"


def to_jsonable(obj: Any) -> Any:
    """``obj`` with numpy values, tuples and paths turned into JSON types; NaN/inf -> None."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json_atomic(obj: Any, path: str | Path) -> Path:
    """Write ``obj`` as indented JSON to ``path`` via a temporary file and ``os.replace``."""
    text = json.dumps(to_jsonable(obj), indent=2, allow_nan=False) + "\n"
    return atomic_write_text(path, text)


def plot_paths(out_json: str | Path, plot_dir: str | Path | None = None) -> tuple[Path, Path]:
    """Where :func:`write_metrics` puts the confusion-matrix and reliability PNGs.

    Beside the JSON they are prefixed with its stem (``eval/fer2013_PublicTest.json`` ->
    ``eval/fer2013_PublicTest_confusion_matrix.png``), so several evaluations can share one
    folder; in an explicit ``plot_dir`` they are plainly ``confusion_matrix.png`` and
    ``reliability.png``.
    """
    out_json = Path(out_json)
    if plot_dir is not None:
        return Path(plot_dir) / CONFUSION_PNG, Path(plot_dir) / RELIABILITY_PNG
    return (out_json.with_name(f"{out_json.stem}_{CONFUSION_PNG}"),
            out_json.with_name(f"{out_json.stem}_{RELIABILITY_PNG}"))


def write_metrics(metrics: Mapping[str, Any], out_json: str | Path, probs: np.ndarray, labels: np.ndarray,
                  classes: Sequence[str], plot_dir: str | Path | None = None) -> list[Path]:
    """Write the metrics JSON and its confusion-matrix and reliability PNGs; return the three paths.

    The JSON gets a ``plots`` entry with the PNG paths relative to the JSON's folder (absolute
    when they are elsewhere on another drive). See :func:`plot_paths` for the PNG names.
    """
    from ferkit.evaluation.plots import plot_confusion_matrix, plot_reliability_diagram
    from ferkit.metrics import confusion_matrix

    out_json = Path(out_json)
    cm_path, rel_path = plot_paths(out_json, plot_dir)
    cm = metrics.get("confusion_matrix")
    if cm is None:
        cm = confusion_matrix(probs, labels, len(classes))
    plot_confusion_matrix(cm, classes, cm_path)
    plot_reliability_diagram(probs, labels, rel_path, n_bins=int(metrics.get("n_bins", 15)))
    record = dict(metrics)
    record["plots"] = {"confusion_matrix": _relative(cm_path, out_json.parent),
                       "reliability": _relative(rel_path, out_json.parent)}
    write_json_atomic(record, out_json)
    return [out_json, cm_path, rel_path]


def _relative(path: Path, base: Path) -> str:
    try:
        return Path(os.path.relpath(path.resolve(), base.resolve())).as_posix()
    except ValueError:  # another drive on Windows
        return str(path.resolve())


def read_metrics(path: str | Path) -> dict[str, Any]:
    """A metrics JSON written by :func:`write_metrics` (:class:`InputError` when unreadable)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"metrics file not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read metrics file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise InputError(f"metrics file {path} does not hold a JSON object")
    return data
