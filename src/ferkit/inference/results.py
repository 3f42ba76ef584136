"""The result table of ``Recognizer.analyze``: one row per face per frame, in column groups.

Column groups (also in ``df.attrs["column_groups"]``), in this order:

- ``input``: ``input`` (path or ``<array k>`` / ``webcam:i``), ``frame`` (0 for a photo),
  ``time_s`` (seconds into the video; NaN for a photo), ``error`` ("" or why the input could
  not be read).
- ``face``: ``face`` (index in the frame, best detector score first), ``face_found`` (False on
  the one row a frame without a face gets), ``x``, ``y``, ``w``, ``h`` (box in pixels),
  ``face_score``.
- ``landmarks``: ``right_eye_x``, ``right_eye_y``, ``left_eye_x``, ... ``mouth_left_y``
  (RetinaFace's five points, named from the subject's side; NaN when the detector has none).
- ``probs``: one column per label of the model, in ``Recognizer.labels`` order.
- ``prediction``: ``label`` (the most probable) and ``uncertainty`` (normalised entropy: 0 = sure,
  1 = no idea; a method's own measure where it has one, e.g. APSM's variance, which is unbounded).
- ``track``: ``track_id``, the face's id across the frames of one video or webcam (stable while
  the face stays in view, never reused within the input; see :mod:`ferkit.inference.track`);
  -1 for photos, frames without a face, or when tracking is off.
- ``smooth``: ``smooth_<label>`` per label, the track's probabilities averaged over time (an
  exponential moving average, ``smooth`` per source frame), and ``label_smooth``, their most
  probable label; NaN and "" when the face is not tracked. The ``probs`` columns stay the raw
  per-frame probabilities.

Rows of frames without a face (or unreadable inputs) have NaN in the face, landmark and
probability columns and an empty label.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ferkit.errors import InputError
from ferkit.inference.detect import LANDMARK_NAMES

INPUT_COLUMNS = ("input", "frame", "time_s", "error")
FACE_COLUMNS = ("face", "face_found", "x", "y", "w", "h", "face_score")
LANDMARK_COLUMNS = tuple(f"{n}_{c}" for n in LANDMARK_NAMES for c in "xy")
PREDICTION_COLUMNS = ("label", "uncertainty")
TRACK_COLUMNS = ("track_id",)
SMOOTH_PREFIX = "smooth_"


def smooth_columns(labels: tuple[str, ...]) -> list[str]:
    """The ``smooth`` group: ``smooth_<label>`` per label, then ``label_smooth``."""
    return [SMOOTH_PREFIX + lab for lab in labels] + ["label_smooth"]


def column_groups(labels: tuple[str, ...]) -> dict[str, list[str]]:
    return {"input": list(INPUT_COLUMNS), "face": list(FACE_COLUMNS), "landmarks": list(LANDMARK_COLUMNS),
            "probs": list(labels), "prediction": list(PREDICTION_COLUMNS), "track": list(TRACK_COLUMNS),
            "smooth": smooth_columns(labels)}


def _track_cells(f: dict | None, labels: tuple[str, ...]) -> dict[str, Any]:
    """The track and smooth cells of one face dict (untracked: -1, NaN, "")."""
    sm = None if f is None else f.get("probs_smooth")
    tid = -1 if f is None or f.get("track_id") is None else int(f["track_id"])
    return {"track_id": tid,
            **{SMOOTH_PREFIX + lab: (float("nan") if sm is None else float(sm[lab])) for lab in labels},
            "label_smooth": "" if sm is None else f.get("label_smooth", "")}


def frame_rows(name: str, frame: int, time_s: float, faces: list[dict], labels: tuple[str, ...],
               error: str = "") -> list[dict[str, Any]]:
    """Table rows for one frame's predictions (one flagged row when there is no face)."""
    base = {"input": name, "frame": int(frame), "time_s": float(time_s), "error": error}
    nan = float("nan")
    if not faces:
        row = {**base, "face": -1, "face_found": False, **{c: nan for c in FACE_COLUMNS[2:]},
               **{c: nan for c in LANDMARK_COLUMNS}, **{lab: nan for lab in labels}, "label": "", "uncertainty": nan,
               **_track_cells(None, labels)}
        return [row]
    rows = []
    for i, f in enumerate(faces):
        x, y, w, h = f["box"]
        lm = f.get("landmarks")
        lmc = ({c: nan for c in LANDMARK_COLUMNS} if lm is None else
               {c: float(lm[j // 2][j % 2]) for j, c in enumerate(LANDMARK_COLUMNS)})
        rows.append({**base, "face": i, "face_found": True, "x": x, "y": y, "w": w, "h": h,
                     "face_score": f["face_score"], **lmc, **{lab: f["probs"][lab] for lab in labels},
                     "label": f["label"], "uncertainty": f["uncertainty"], **_track_cells(f, labels)})
    return rows


def make_frame(rows: list[dict[str, Any]], labels: tuple[str, ...], **attrs: Any) -> pd.DataFrame:
    groups = column_groups(labels)
    cols = [c for g in groups.values() for c in g]
    df = pd.DataFrame(rows, columns=cols)
    if len(df):
        df["track_id"] = df["track_id"].fillna(-1)  # rows made without tracking information
        df["label_smooth"] = df["label_smooth"].fillna("")
        df = df.astype({"frame": "int64", "face": "int64", "face_found": "bool", "track_id": "int64"})
    df.attrs["column_groups"] = groups
    df.attrs.update(attrs)
    return df


def _clean(v: Any) -> Any:
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, (np.floating,)):
        return None if np.isnan(v) else float(v)
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.bool_,)):
        return bool(v)
    return v


def to_records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Nested JSON records: one per input frame with its ``faces`` list, each face like predict()'s
    (tracked video faces also carry ``track_id``, ``probs_smooth`` and ``label_smooth``)."""
    groups = df.attrs.get("column_groups") or column_groups(())
    labels = groups["probs"]
    out: list[dict[str, Any]] = []
    for (name, frame), g in df.groupby(["input", "frame"], sort=False):
        first = g.iloc[0]
        rec = {"input": name, "frame": int(frame), "time_s": _clean(first["time_s"]), "error": first["error"] or None,
               "faces": []}
        for _, r in g[g["face_found"]].iterrows():
            lm = None if pd.isna(r[LANDMARK_COLUMNS[0]]) else [
                [float(r[f"{n}_x"]), float(r[f"{n}_y"])] for n in LANDMARK_NAMES]
            rec["faces"].append({"box": [float(r[c]) for c in "xywh"], "face_score": float(r["face_score"]),
                                 "landmarks": lm, "probs": {lab: float(r[lab]) for lab in labels},
                                 "label": r["label"], "uncertainty": float(r["uncertainty"])})
            if "track_id" in r.index and int(r["track_id"]) >= 0:
                rec["faces"][-1].update(
                    track_id=int(r["track_id"]),
                    probs_smooth={lab: float(r[SMOOTH_PREFIX + lab]) for lab in labels},
                    label_smooth=r["label_smooth"])
        out.append(rec)
    return out


def write_table(df: pd.DataFrame, out: str | Path) -> Path:
    """``.csv``: the table as is; ``.json``: nested records (see :func:`to_records`)."""
    path = Path(out)
    ext = path.suffix.lower()
    if ext not in (".csv", ".json"):
        raise InputError(f"--out must end in .csv or .json (got {path.name})")
    path.parent.mkdir(parents=True, exist_ok=True)
    if ext == ".csv":
        df.to_csv(path, index=False)
    else:
        payload = {"model": df.attrs.get("model"), "labels": df.attrs.get("column_groups", {}).get("probs"),
                   "detector": df.attrs.get("detector"), "results": to_records(df)}
        path.write_text(json.dumps(payload, indent=1, default=_clean) + "\n")
    return path


def summary_lines(df: pd.DataFrame, top: int = 3) -> list[str]:
    """A short human-readable line per face (and per frame without a face) for the terminal."""
    labels = (df.attrs.get("column_groups") or {}).get("probs", [])
    lines = []
    for _, r in df.iterrows():
        where = r["input"] if pd.isna(r["time_s"]) else f"{r['input']} frame {r['frame']} ({r['time_s']:.2f}s)"
        if r["error"]:
            lines.append(f"{where}: error: {r['error']}")
        elif not r["face_found"]:
            lines.append(f"{where}: no face found")
        else:
            ranked = sorted(((lab, r[lab]) for lab in labels), key=lambda kv: -kv[1])[:top]
            probs = "  ".join(f"{lab} {p:.2f}" for lab, p in ranked)
            box = ",".join(str(int(round(r[c]))) for c in "xywh")
            track = ""
            if "track_id" in r.index and int(r["track_id"]) >= 0:
                track = f"  track {int(r['track_id'])} {r['label_smooth']} (smoothed)"
            lines.append(f"{where}: face {r['face']} [{box}] {r['label']}  ({probs})  "
                         f"uncertainty {r['uncertainty']:.2f}{track}")
    return lines
