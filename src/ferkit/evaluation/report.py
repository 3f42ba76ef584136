"""``ferkit report RUN_DIR``: curves and tables of a training run, from its ``log.jsonl``.

Nothing about the logged keys is hard-coded beyond the contract's ``kind``/``epoch``/``step``:
every numeric key of the train rows and every numeric ``val_*`` key of the epoch rows gets a
panel, so new methods' logs (``loss_ce``, ``mask_ratio``, ``val_auroc``...) show up untouched.
The log may end in a partial line (a run killed mid-write) or hold repeated rows (a resumed
run appends again from its checkpoint): bad lines are skipped and counted, and the last row of
each step / epoch wins.

Written into ``RUN_DIR/report/``: ``loss.png``, ``val_metrics.png``, ``lr.png``,
``epochs.csv`` (the epoch rows as logged, epochs counted from 0) and ``report.md`` (epochs
counted from 1, as the trainer prints them). A figure whose data is absent is left out.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ferkit.errors import InputError
from ferkit.evaluation.io import plot_paths, read_metrics
from ferkit.evaluation.plots import Curve, auto_smoothing, plot_curves

LOG_NAME = "log.jsonl"
REPORT_DIR = "report"
BEST_KEY = "val_accuracy"
VAL_ORDER = ("val_accuracy", "val_macro_f1", "val_mean_class_accuracy", "val_nll", "val_ece", "val_brier")
NOT_CURVES = {"kind", "epoch", "step", "lr", "time_s", "is_best"}


@dataclass
class RunLog:
    """The rows of one ``log.jsonl``: train rows by step, epoch rows by epoch."""

    path: Path
    train: pd.DataFrame
    epochs: pd.DataFrame
    train_keys: list[str]  # numeric keys of the train rows, in first-seen order
    epoch_keys: list[str]  # numeric keys of the epoch rows, in first-seen order
    skipped: int  # malformed lines


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _numeric_keys(rows: list[dict[str, Any]]) -> list[str]:
    """Keys whose every non-null value is a number (bools are flags, not curves)."""
    keys: dict[str, bool] = {}
    for row in rows:
        for k, v in row.items():
            if v is None:
                keys.setdefault(k, False)
            else:
                keys[k] = keys.get(k, True) and _is_number(v)
    has_value = {k for row in rows for k, v in row.items() if v is not None}
    return [k for k, ok in keys.items() if ok and k in has_value and k != "kind"]


def _frame(rows: list[dict[str, Any]], key: str, numeric: list[str]) -> pd.DataFrame:
    df = pd.DataFrame.from_records(rows)
    if df.empty:
        return df
    for k in numeric:
        df[k] = pd.to_numeric(df[k], errors="coerce").astype(np.float64)
    if key not in df or df[key].isna().any():
        df[key] = np.arange(len(df), dtype=np.float64)
    df = df.drop_duplicates(subset=key, keep="last").sort_values(key, kind="stable").reset_index(drop=True)
    return df.drop(columns=["kind"], errors="ignore")


def read_log(path: str | Path) -> RunLog:
    """Parse a run's ``log.jsonl``; malformed lines are skipped (with one warning) and counted.

    Raises :class:`InputError` when the file is missing or holds no train or epoch row.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"training log not found: {path} "
                         "(is this a run directory written by `ferkit train`?)")
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except OSError as exc:
        raise InputError(f"cannot read training log {path}: {exc}") from None
    train, epochs, skipped = [], [], 0
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            skipped += 1
            continue
        if not isinstance(row, dict) or not isinstance(row.get("kind"), str):
            skipped += 1
        elif row["kind"] == "train":
            train.append(row)
        elif row["kind"] == "epoch":
            epochs.append(row)
        # other kinds are for other readers
    if not train and not epochs:
        extra = f" ({skipped} malformed line(s) skipped)" if skipped else ""
        raise InputError(f"training log {path} is empty: no train or epoch rows{extra}")
    if skipped:
        warnings.warn(f"{path}: skipped {skipped} malformed line(s)", stacklevel=2)
    train_keys, epoch_keys = _numeric_keys(train), _numeric_keys(epochs)
    return RunLog(path, _frame(train, "step", train_keys), _frame(epochs, "epoch", epoch_keys),
                  train_keys, epoch_keys, skipped)


# ---- figures ----------------------------------------------------------------------------------
def _series(df: pd.DataFrame, x: str, y: str, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``df`` where ``x`` and ``y`` are both numbers."""
    if df.empty or x not in df or y not in df:
        return np.zeros(0), np.zeros(0)
    xs = pd.to_numeric(df[x], errors="coerce").to_numpy(np.float64)
    ys = pd.to_numeric(df[y], errors="coerce").to_numpy(np.float64)
    keep = ~np.isnan(xs) & ~np.isnan(ys)
    return xs[keep] + shift, ys[keep]


def _epoch_x(log: RunLog) -> str:
    """Epoch rows are placed at their step when they have one (same axis as the train rows)."""
    return "step" if "step" in log.epoch_keys else "epoch"


def _loss_figure(log: RunLog, out: Path) -> Path | None:
    panels: dict[str, list[Curve]] = {}
    tkeys = [k for k in log.train_keys if k not in NOT_CURVES]
    ex = _epoch_x(log)
    ekeys = [k for k in log.epoch_keys if k.startswith("train_")]
    ekeys += [k for k in log.epoch_keys if k not in NOT_CURVES and not k.startswith(("train_", "val_"))]
    names = list(dict.fromkeys(tkeys + [k.removeprefix("train_") for k in ekeys if k.startswith("train_")]))
    for name in names:
        curves = []
        x, y = _series(log.train, "step", name)
        if y.size:
            weight = auto_smoothing(y.size)
            curves.append(Curve(x, y, f"{name} (per step{', smoothed' if weight else ''})", smooth=weight))
        x, y = _series(log.epochs, ex, f"train_{name}", 1.0 if ex == "epoch" else 0.0)
        if y.size:
            curves.append(Curve(x, y, f"train_{name} (epoch mean)",
                                style={"marker": "o", "markersize": 4, "color": "black", "linewidth": 1.0}))
        if curves:
            panels["train loss" if name == "loss" else f"train {name}"] = curves
    for k in ekeys:
        if not k.startswith("train_"):
            x, y = _series(log.epochs, ex, k, 1.0 if ex == "epoch" else 0.0)
            if y.size:
                panels[k] = [Curve(x, y, None)]
    if not panels:
        return None
    xlabel = "step" if ("step" in log.train_keys or ex == "step") else "epoch"
    logy = {name: "auto" for name in panels if "loss" in name}  # a log axis for losses spanning decades
    return plot_curves(panels, out, xlabel=xlabel, title="Training", logy=logy, ncols=min(2, len(panels)))


def _val_keys(log: RunLog) -> list[str]:
    found = [k for k in log.epoch_keys if k.startswith("val_")]
    return [k for k in VAL_ORDER if k in found] + [k for k in found if k not in VAL_ORDER]


def _val_figure(log: RunLog, out: Path, best: int | None) -> Path | None:
    panels = {}
    for k in _val_keys(log):
        x, y = _series(log.epochs, "epoch", k, 1.0)
        if y.size:
            panels[k.removeprefix("val_")] = [Curve(x, y, None)]
    if not panels:
        return None
    return plot_curves(panels, out, xlabel="epoch", title="Validation",
                       vlines=[best + 1] if best is not None else ())


def _lr_figure(log: RunLog, out: Path) -> Path | None:
    curves = []
    x, y = _series(log.train, "step", "lr")
    if y.size:
        curves.append(Curve(x, y, "per step", style={"drawstyle": "steps-post", "marker": ""}))
    ex = _epoch_x(log)
    x, y = _series(log.epochs, ex, "lr", 1.0 if ex == "epoch" else 0.0)
    if y.size:
        curves.append(Curve(x, y, "end of epoch",
                            style={"marker": "o", "markersize": 4, "linestyle": "none"}))
    if not curves:
        return None
    xlabel = "step" if ("lr" in log.train_keys or ex == "step") else "epoch"
    return plot_curves({"learning rate": curves}, out, xlabel=xlabel)


# ---- markdown ---------------------------------------------------------------------------------
def best_epoch(epochs: pd.DataFrame, key: str = BEST_KEY) -> int | None:
    """The logged (0-based) epoch with the highest ``key``; the first one on a tie."""
    x, y = _series(epochs, "epoch", key)
    return int(x[int(np.argmax(y))]) if y.size else None


def _cell(v: Any, key: str = "") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else ""
    if isinstance(v, (int, np.integer)) or (
            isinstance(v, float) and v.is_integer() and key in {"epoch", "step"}):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return f"{v:.3g}" if key == "lr" else f"{v:.4g}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def markdown_table(header: list[str], rows: Iterable[list[str]]) -> list[str]:
    """Lines of a GitHub markdown table: the first column left-aligned, the others (numbers) right."""
    lines = ["| " + " | ".join(header) + " |", "|:---|" + "".join("---:|" for _ in header[1:])]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def _epoch_table(log: RunLog, best: int | None) -> list[str]:
    df = log.epochs
    cols = [c for c in df.columns]
    first = [c for c in ("epoch", "step", "train_loss") if c in cols]
    vals = _val_keys(log)
    cols = first + vals + [c for c in cols if c not in first and c not in vals]
    rows = []
    for rec in df.to_dict("records"):
        cells = []
        for c in cols:
            v = rec.get(c)
            if c == "epoch" and v is not None and not (isinstance(v, float) and math.isnan(v)):
                text = str(int(v) + 1)
                cells.append(f"**{text}**" if best is not None and int(v) == best else text)
            else:
                cells.append(_cell(v, c))
        rows.append(cells)
    return markdown_table(cols, rows)


def _eval_section(run_dir: Path, report_dir: Path) -> list[str]:
    files = sorted((run_dir / "eval").glob("*.json"))
    if not files:
        return []
    lines = ["", "## Evaluations", ""]
    for f in files:
        lines += [f"### {f.stem}", ""]
        try:
            m = read_metrics(f)
            per_class = m["per_class"]
            if not isinstance(per_class, dict):
                raise TypeError("per_class is not an object")
        except (InputError, KeyError, TypeError) as exc:
            warnings.warn(f"{f}: not a metrics file ({exc})", stacklevel=3)
            lines += [f"`{f.name}` could not be read as a metrics file ({exc}).", ""]
            continue
        where = ", ".join(f"{k} {m[k]}" for k in ("dataset", "split") if m.get(k) is not None)
        keys = ("accuracy", "macro_f1", "mean_class_accuracy", "nll", "ece", "brier")
        head = [f"{k} {m[k]:.4f}" for k in keys if _is_number(m.get(k))]
        lines += [f"{where + ': ' if where else ''}n = {m.get('n', '?')}; " + ", ".join(head), ""]
        rows = []
        for name, s in per_class.items():
            s = s if isinstance(s, dict) else {}
            scores = [f"{s[k]:.4f}" if _is_number(s.get(k)) else "" for k in ("precision", "recall", "f1")]
            rows.append([_cell(name), *scores, _cell(s.get("support"))])
        lines += markdown_table(["class", "precision", "recall", "f1", "support"], rows) + [""]
        for label, png in _eval_pngs(f, m):
            rel = Path(_relpath(png, report_dir)).as_posix()
            lines.append(f"![{f.stem} {label}]({rel})")
        lines.append("")
    return lines


def _eval_pngs(json_path: Path, metrics: dict[str, Any]) -> list[tuple[str, Path]]:
    recorded = metrics.get("plots") if isinstance(metrics.get("plots"), dict) else {}
    defaults = dict(zip(("confusion_matrix", "reliability"), plot_paths(json_path)))
    out = []
    for key in ("confusion_matrix", "reliability"):
        path = (json_path.parent / recorded[key]) if isinstance(recorded.get(key), str) else defaults[key]
        if path.is_file():
            out.append((key.replace("_", " "), path))
    return out


def _relpath(path: Path, base: Path) -> str:
    try:
        return os.path.relpath(path.resolve(), base.resolve())
    except ValueError:
        return str(path.resolve())


def _meta_lines(run_dir: Path) -> list[str]:
    try:
        meta = json.loads((run_dir / "meta.json").read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(meta, dict):
        return []
    parts = [f"{k}: {meta[k]}" for k in ("git_commit", "ferkit", "torch", "device", "num_train", "num_val")
             if meta.get(k) is not None]
    if isinstance(meta.get("classes"), list):
        parts.append("classes: " + ", ".join(map(str, meta["classes"])))
    return [f"- {'; '.join(parts)}"] if parts else []


def make_report(run_dir: str | Path) -> Path:
    """Write the plots, ``epochs.csv`` and ``report.md`` of a run into ``run_dir/report/``.

    Returns the path of ``report.md``. Raises :class:`InputError` when ``run_dir/log.jsonl``
    is missing or has no rows.
    """
    run_dir = Path(run_dir)
    log = read_log(run_dir / LOG_NAME)
    out = run_dir / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    best = best_epoch(log.epochs)
    figures = [("training loss", _loss_figure(log, out / "loss.png")),
               ("validation metrics", _val_figure(log, out / "val_metrics.png", best)),
               ("learning rate", _lr_figure(log, out / "lr.png"))]
    for name in ("loss.png", "val_metrics.png", "lr.png"):  # a figure with no data: no stale PNG
        if all(p is None or p.name != name for _, p in figures):
            (out / name).unlink(missing_ok=True)

    lines = [f"# Run report: {run_dir.resolve().name}", ""]
    n_epochs = len(log.epochs)
    last_step = max([int(v) for df in (log.train, log.epochs) if "step" in df
                     for v in pd.to_numeric(df["step"], errors="coerce").dropna()], default=None)
    summary = f"- `{LOG_NAME}`: {len(log.train)} train rows, {n_epochs} epoch rows"
    if last_step is not None:
        summary += f", last step {last_step}"
    lines.append(summary)
    if log.skipped:
        lines.append(f"- **{log.skipped} malformed line(s) skipped** "
                     "(a run killed mid-write leaves a partial line)")
    lines += _meta_lines(run_dir)
    if best is not None:
        row = log.epochs[log.epochs["epoch"] == best].iloc[0]
        vals = ", ".join(f"{k} {row[k]:.4f}" for k in _val_keys(log) if pd.notna(row.get(k)))
        lines.append(f"- best epoch by {BEST_KEY}: **{best + 1}** ({vals})")
        if "is_best" in log.epochs:
            flagged = log.epochs[log.epochs["is_best"] == True]  # noqa: E712  (column may hold NaN)
            if len(flagged) and int(flagged["epoch"].iloc[-1]) != best:
                lines.append(f"- the trainer's selected checkpoint (`best.pt`) is epoch "
                             f"{int(flagged['epoch'].iloc[-1]) + 1} (its `select_metric` differs)")
    elif n_epochs:
        lines.append(f"- no {BEST_KEY} logged yet")
    lines.append("- epochs are counted from 1 here; `log.jsonl` and `epochs.csv` count from 0")

    shown = [(title, p) for title, p in figures if p is not None]
    if shown:
        lines += ["", "## Curves", ""] + [f"![{title}]({p.name})" for title, p in shown]

    lines += ["", "## Epochs", ""]
    if n_epochs:
        log.epochs.to_csv(out / "epochs.csv", index=False)
        lines += _epoch_table(log, best) + ["", "Data: [epochs.csv](epochs.csv)"]
    else:
        (out / "epochs.csv").unlink(missing_ok=True)
        lines.append("No epoch has finished yet.")
    lines += _eval_section(run_dir, out)

    report = out / "report.md"
    tmp = out / ".report.md.tmp"
    tmp.write_text("\n".join(lines).rstrip() + "\n")
    tmp.replace(report)
    return report
