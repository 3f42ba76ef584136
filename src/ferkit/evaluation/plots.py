"""PNG plots of evaluations and training runs: confusion matrix, reliability diagram, curves.

Figures are built as bare :class:`matplotlib.figure.Figure` objects on the Agg canvas, never
through ``pyplot``: nothing touches the global backend or pyplot's figure registry (so this is
safe on a headless server, in a notebook and from threads, and no figure is left open). Every
function writes its PNG atomically (a temporary file, then ``os.replace``), creates the parent
folders and returns the path written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ferkit.atomic import atomic_write
from ferkit.metrics import expected_calibration_error

DPI = 120


def new_figure(figsize: tuple[float, float]) -> Figure:
    """A figure on its own Agg canvas (no pyplot, no global state)."""
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str | Path, dpi: int = DPI) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically and release its artists."""
    try:
        return atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=dpi, bbox_inches="tight"))
    finally:
        fig.clear()


# ---- confusion matrix -------------------------------------------------------------------------
def plot_confusion_matrix(cm: Any, classes: Sequence[str], path: str | Path, normalize: bool = True,
                          title: str = "Confusion matrix", cmap: str = "Blues", dpi: int = DPI) -> Path:
    """Heat map of a confusion matrix (rows true, columns predicted).

    With ``normalize`` the colours are row fractions (the recall of each true class, so
    frequent and rare classes read alike) and each cell shows the percentage over its count;
    otherwise colours and numbers are counts. The y labels carry each class's support.
    """
    cm = np.asarray(cm, np.int64)
    k = len(classes)
    if cm.shape != (k, k):
        raise ValueError(f"confusion matrix {cm.shape} does not match {k} classes")
    support = cm.sum(1)
    frac = np.divide(cm, support[:, None], out=np.zeros(cm.shape), where=support[:, None] > 0)
    values = frac if normalize else cm.astype(np.float64)
    vmax = 1.0 if normalize else max(float(cm.max()), 1.0)

    fig = new_figure((max(4.5, 0.75 * k + 2.8), max(3.8, 0.65 * k + 2.0)))
    ax = fig.add_subplot()
    im = ax.imshow(values, cmap=cmap, vmin=0.0, vmax=vmax, interpolation="nearest")
    cbar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    cbar.set_label("fraction of true class" if normalize else "count")
    if k <= 30:
        size = 9 if k <= 8 else max(5, 9 - (k - 8) // 3)
        for i in range(k):
            for j in range(k):
                text = f"{frac[i, j]:.0%}\n{cm[i, j]}" if normalize else f"{cm[i, j]}"
                colour = "white" if values[i, j] > 0.55 * vmax else "black"
                ax.text(j, i, text, ha="center", va="center", fontsize=size, color=colour)
    ax.set_xticks(range(k), [str(c) for c in classes], rotation=40, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(k), [f"{c} ({n})" for c, n in zip(classes, support)])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (support)")
    total = int(cm.sum())
    acc = float(np.trace(cm) / total) if total else 0.0
    ax.set_title(f"{title}\nn = {total}, accuracy = {acc:.2%}", fontsize=10)
    return save_figure(fig, path, dpi)


# ---- reliability diagram ----------------------------------------------------------------------
def plot_reliability_diagram(probs: Any, labels: Any, path: str | Path, n_bins: int = 15,
                             title: str = "Reliability diagram", dpi: int = DPI) -> Path:
    """Accuracy per top-1 confidence bin against the diagonal, with the bin counts below.

    Red hatched bars show the gap between a bin's accuracy and its mean confidence (above the
    blue bar: over-confident). The lower panel is the histogram of confidences with the mean
    confidence and the accuracy marked. Rows labelled -1 are left out.
    """
    ece, table = expected_calibration_error(probs, labels, n_bins)
    width = 1.0 / n_bins
    lower = np.array([b["lower"] for b in table])
    count = np.array([b["count"] for b in table])
    filled = count > 0
    acc = np.array([b["accuracy"] if b["count"] else 0.0 for b in table])
    conf = np.array([b["confidence"] if b["count"] else 0.0 for b in table])
    n = int(count.sum())
    mean_conf = float((conf * count).sum() / n) if n else 0.0
    overall_acc = float((acc * count).sum() / n) if n else 0.0

    fig = new_figure((5.2, 6.0))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1], "hspace": 0.08})
    top.bar(lower[filled], acc[filled], width=width, align="edge", color="#4c72b0", edgecolor="#1f3b63",
            linewidth=0.6, label="accuracy")
    top.bar(lower[filled], (conf - acc)[filled], bottom=acc[filled], width=width, align="edge",
            color="#dd4444", alpha=0.25, edgecolor="#b22222", hatch="//", linewidth=0.6,
            label="gap to mean confidence")
    top.plot([0, 1], [0, 1], "--", color="0.35", linewidth=1.0, label="perfect calibration")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.set_aspect("auto")
    top.grid(alpha=0.25)
    top.legend(loc="upper left", fontsize=8)
    top.set_title(f"{title}\nECE = {ece:.4f} ({n_bins} bins), n = {n}", fontsize=10)

    bottom.bar(lower, count, width=width, align="edge", color="0.55", edgecolor="0.3", linewidth=0.5)
    bottom.axvline(mean_conf, color="#dd4444", linestyle="--", linewidth=1.0,
                   label=f"mean conf {mean_conf:.3f}")
    bottom.axvline(overall_acc, color="#4c72b0", linestyle=":", linewidth=1.2,
                   label=f"accuracy {overall_acc:.3f}")
    bottom.set_xlabel("confidence (top-1 probability)")
    bottom.set_ylabel("count")
    bottom.grid(alpha=0.25)
    bottom.legend(loc="upper left", fontsize=7)
    return save_figure(fig, path, dpi)


# ---- curves -----------------------------------------------------------------------------------
@dataclass
class Curve:
    """One line of a panel. ``smooth`` is an EMA weight in [0, 1); when > 0 the smoothed line is
    drawn over the raw values, which stay visible but faint. ``style`` goes to ``Axes.plot``."""

    x: Sequence[float]
    y: Sequence[float]
    label: str | None = None
    smooth: float = 0.0
    style: dict[str, Any] = field(default_factory=dict)


def smooth(values: Sequence[float], weight: float) -> np.ndarray:
    """Debiased exponential moving average (TensorBoard's smoothing); NaNs pass through."""
    v = np.asarray(values, np.float64)
    if weight <= 0 or v.size < 2:
        return v.copy()
    out = np.full(v.shape, np.nan)
    avg = norm = 0.0
    for i, x in enumerate(v):
        if not np.isfinite(x):
            continue
        avg = weight * avg + (1 - weight) * x
        norm = weight * norm + (1 - weight)
        out[i] = avg / norm
    return out


def auto_smoothing(n: int) -> float:
    """An EMA weight averaging about n / 20 points (none for short series)."""
    return float(np.clip(1.0 - 20.0 / max(n, 1), 0.0, 0.98))


def _want_log(curves: Sequence[Curve]) -> bool:
    ys = np.concatenate([np.asarray(c.y, np.float64) for c in curves]) if curves else np.zeros(0)
    ys = ys[np.isfinite(ys)]
    return bool(ys.size and ys.min() > 0 and ys.max() / ys.min() > 30)


def plot_curves(panels: Mapping[str, Curve | Sequence[Curve]], path: str | Path, xlabel: str = "epoch",
                title: str | None = None, ncols: int | None = None,
                logy: bool | str | Mapping[str, bool | str] = False,
                vlines: Sequence[float] = (), integer_x: bool | None = None, dpi: int = DPI) -> Path:
    """A grid of line plots, one panel per key of ``panels`` (its title), each with its curves.

    ``logy``: ``True``/``False`` for every panel, or ``"auto"`` for a log axis on panels whose
    positive values span more than a factor 30 (losses early in training), or a mapping from
    panel name to one of those (panels not named: linear). ``vlines``: x
    positions marked with a dotted line on every panel (the best epoch). ``integer_x``: integer
    x ticks only (default: when ``xlabel`` is "epoch" or "step"). Non-finite values leave gaps.
    """
    items = [(name, [c] if isinstance(c, Curve) else list(c)) for name, c in panels.items()]
    if not items:
        raise ValueError("plot_curves needs at least one panel")
    ncols = ncols or min(3, len(items))
    nrows = -(-len(items) // ncols)
    fig = new_figure((4.4 * ncols, 3.1 * nrows + (0.4 if title else 0.0)))
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax, (name, curves) in zip(axes, items):
        labelled = False
        for c in curves:
            x = np.asarray(c.x, np.float64)
            y = np.asarray(c.y, np.float64)
            y = np.where(np.isfinite(y), y, np.nan)
            if c.smooth > 0 and y.size > 1:
                raw = ax.plot(x, y, alpha=0.25, linewidth=0.8, **c.style)
                style = {**c.style, "color": raw[0].get_color()}
                style.pop("marker", None)
                ax.plot(x, smooth(y, c.smooth), label=c.label, linewidth=1.6, **style)
            else:
                style = {"marker": "o", "markersize": 3.5} if y.size <= 60 else {}
                ax.plot(x, y, label=c.label, **{**style, **c.style})
            labelled |= bool(c.label)
        for v in vlines:
            ax.axvline(v, color="0.4", linestyle=":", linewidth=1.0)
        mode = logy.get(name, False) if isinstance(logy, Mapping) else logy
        if mode is True or (mode == "auto" and _want_log(curves)):
            ax.set_yscale("log")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(xlabel)
        if integer_x or (integer_x is None and xlabel in ("epoch", "step")):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if labelled:
            ax.legend(fontsize=8)
    for ax in axes[len(items):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path, dpi)
