"""FER+ : FER2013's images with the ten-annotator votes of ``fer2013new.csv`` (Barsoum et al. 2016).

Targets follow microsoft/FERPlus ``src/ferplus.py`` (``_process_data`` / ``_process_target``):

* Outliers: a class with a single vote gets 0 votes (every mode), before anything else.
* ``majority``: the class with more than half of the remaining votes; otherwise "unknown".
* ``probability`` / ``crossentropy``: the top-voted classes are taken greedily (ties together)
  until they hold >= 75% of the votes or 3 classes; unknown / NF stop the scan (and are left
  out if an emotion came first). Fewer than 50% of the votes covered or more than 3 classes
  -> "unknown". ``soft_targets`` = those votes normalised over the 8 emotions; the trainer
  draws one label per step from it for ``probability`` (PLD) and uses it as the soft target
  for ``crossentropy`` (CEL).
* ``multi_target``: every class with >= 30% of the votes; under 50% covered -> "unknown".
  ``soft_targets`` = the 0/1 mask of accepted emotions (the FER+ code's epsilon smoothing,
  0.001, is left to the loss).
* A row is dropped when its processed target peaks on unknown or NF (first-max ``argmax``,
  as the FER+ code), and counted in ``meta["dropped"]``: ``not_face`` (NF peak), ``unknown``
  (the unknown column peaks), ``no_consensus`` (forced to unknown by the mode's rule above),
  and ``blank_name`` (rows with an empty image name, which FER+ never exported).
* ``mode`` applies to Training rows only; PublicTest / PrivateTest rows are always filtered
  with the ``majority`` rule, as FER+'s train.py builds its validation and test readers, so
  the evaluation set is the same whatever the training mode.
* ``labels`` is the strict-majority class (the ``majority`` rule) or -1 when there is none
  (possible for Training rows kept by the other modes). The raw votes stay in
  ``meta["votes"]`` (int16, N x 10, FERPLUS_COLUMNS order) and each row's csv row number in
  ``meta["row"]``. Rows whose votes do not sum to 10 (one in the real file sums to 9) are
  kept, since every rule works on proportions, and counted in ``meta["votes_not_10"]``.

Files: ``fer2013_path=`` and ``votes_path=`` win when given. Otherwise ``path`` may be the
FER2013 csv (the votes file is then ``fer2013new.csv`` beside it or in ``../ferplus/``), the
votes file (the csv is then looked for beside it or in ``../fer2013/``), or a folder holding
both, directly or in ``fer2013/`` and ``ferplus/`` sub-folders (the csv being ``fer2013.csv``,
``fer2013.csv.gz`` or else the first other ``fer2013*.csv[.gz]``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from ferkit.data._common import pick_split, read_csv, require_file
from ferkit.data.fer2013 import SIDE, SPLIT_ALIASES, load_csv
from ferkit.data.registry import register_dataset
from ferkit.data.types import FaceDataset
from ferkit.errors import ConfigError, InputError
from ferkit.labels import CANONICAL, FERPLUS_COLUMNS

MODES = ("majority", "probability", "crossentropy", "multi_target")
VOTES_NAME = "fer2013new.csv"
UNKNOWN, NOT_FACE = FERPLUS_COLUMNS.index("unknown"), FERPLUS_COLUMNS.index("NF")
N_EMO = len(CANONICAL)


def process_votes(votes: list[float] | np.ndarray, mode: str) -> tuple[np.ndarray, bool]:
    """(normalised 10-vector, forced_unknown): FER+'s ``_process_data`` for one row, same rules."""
    raw = [float(v) for v in votes]
    size = len(raw)
    unknown = np.zeros(size)
    unknown[UNKNOWN] = 1.0
    for i in range(size):  # outlier removal: single votes do not count
        if raw[i] < 1.0 + sys.float_info.epsilon:
            raw[i] = 0.0
    total = sum(raw)
    emo = [0.0] * size
    if mode == "majority":
        top = max(raw)
        if top > 0.5 * total:
            emo[int(np.argmax(raw))] = top
        else:
            return unknown, True
    elif mode in ("probability", "crossentropy"):
        part, count, valid = 0.0, 0, True
        while part < 0.75 * total and count < 3 and valid:
            top = max(raw)
            for i in range(size):
                if raw[i] == top:
                    emo[i] = top
                    raw[i] = 0.0
                    part += emo[i]
                    count += 1
                    if i >= UNKNOWN:  # unknown / NF tie with the max: stop here
                        valid = False
                        if sum(emo) > top:  # emotions came first: leave unknown / NF out
                            emo[i] = 0.0
                            count -= 1
                        break
        if sum(emo) <= 0.5 * total or count > 3:
            return unknown, True
    elif mode == "multi_target":
        for i in range(size):
            if raw[i] >= 0.3 * total:
                emo[i] = raw[i]
        if sum(emo) <= 0.5 * total:
            return unknown, True
    else:
        raise ConfigError(f"ferplus mode must be one of {', '.join(MODES)}, not {mode!r}")
    out = np.asarray(emo, np.float64)
    return out / out.sum(), False


def targets(votes: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: (kept-peak index 0-9, forced_unknown flag, 8-emotion target) under ``mode``.

    Works on the distinct vote patterns only (a few thousand for the 32k FER+ rows).
    """
    uniq, inverse = np.unique(votes, axis=0, return_inverse=True)
    peak = np.empty(len(uniq), np.int64)
    forced = np.empty(len(uniq), bool)
    tgt = np.zeros((len(uniq), N_EMO), np.float32)
    for j, row in enumerate(uniq):
        dist, forced[j] = process_votes(row, mode)
        peak[j] = int(np.argmax(dist))
        if peak[j] < UNKNOWN:
            emo = dist[:N_EMO]
            tgt[j] = (emo > 0) if mode == "multi_target" else emo / emo.sum()
    inverse = inverse.reshape(-1)
    return peak[inverse], forced[inverse], tgt[inverse]


def _first(candidates: list[Path]) -> Path | None:
    return next((c for c in candidates if c.is_file()), None)


def _csv_in(folder: Path) -> Path | None:
    named = _first([folder / "fer2013.csv", folder / "fer2013.csv.gz"])
    if named:
        return named
    others = sorted(p for p in folder.glob("fer2013*.csv*") if p.is_file()
                    and not p.name.startswith("fer2013new") and p.name.endswith((".csv", ".csv.gz")))
    return others[0] if others else None


def resolve_files(path: str | os.PathLike[str] | None, fer2013_path: str | os.PathLike[str] | None = None,
                  votes_path: str | os.PathLike[str] | None = None) -> tuple[Path, Path]:
    """(FER2013 csv, votes csv) by the rules in the module docstring."""
    csv = Path(fer2013_path).expanduser() if fer2013_path else None
    votes = Path(votes_path).expanduser() if votes_path else None
    if path is not None and str(path) != "":
        p = Path(path).expanduser()
        if p.is_dir():
            dirs = [p, p / "fer2013", p / "ferplus"]
            votes = votes or _first([d / VOTES_NAME for d in dirs])
            csv = csv or next((c for d in dirs if d.is_dir() and (c := _csv_in(d))), None)
            where = f"in {p}"
        elif p.name.lower().startswith("fer2013new"):
            votes = votes or p
            csv = csv or next((c for d in (p.parent, p.parent.parent / "fer2013") if d.is_dir()
                               and (c := _csv_in(d))), None)
            where = f"beside {p}"
        else:
            csv = csv or p
            votes = votes or _first([p.parent / VOTES_NAME, p.parent.parent / "ferplus" / VOTES_NAME]) \
                or p.parent / VOTES_NAME
            where = f"beside {p}"
    else:
        where = "(no path given)"
    if csv is None:
        raise InputError(f"ferplus: no FER2013 csv found {where}; give fer2013_path=")
    if votes is None:
        raise InputError(f"ferplus: no FER+ votes file {VOTES_NAME} found {where}; give votes_path=")
    return require_file(csv, "FER2013 csv"), require_file(votes, "FER+ votes file")


def read_votes(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(votes int16 N x 10, blank-name mask, Usage or None) from ``fer2013new.csv``."""
    df = read_csv(path, ["Image name", *FERPLUS_COLUMNS], "FER+ votes file", optional=["Usage"],
                  dtype={"Image name": str, "Usage": str})
    raw = df[list(FERPLUS_COLUMNS)]
    try:
        votes = raw.to_numpy(dtype=np.float64)
    except (TypeError, ValueError):
        votes = np.full(raw.shape, np.nan)
    bad = ~np.isfinite(votes).all(axis=1) | (votes < 0).any(axis=1) | (votes != np.round(votes)).any(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(f"FER+ votes file {path}: row {i} (line {i + 2}) has votes that are not "
                         f"non-negative integers: {raw.iloc[i].tolist()}")
    blank = df["Image name"].fillna("").astype(str).str.strip().to_numpy() == ""
    usage = df["Usage"].fillna("").astype(str).str.strip().to_numpy() if "Usage" in df else None
    return votes.astype(np.int16), blank, usage


@register_dataset("ferplus")
def read_ferplus(path: str | os.PathLike[str] | None, split: str | None = None, *, cache: bool = True,
                 mode: str = "majority", fer2013_path: str | os.PathLike[str] | None = None,
                 votes_path: str | os.PathLike[str] | None = None, image_size: int = SIDE) -> FaceDataset:
    """FER+: 8 classes (CANONICAL), grayscale (N, 48, 48); targets per ``mode`` (module docstring).

    ``split`` as for fer2013 (Training / PublicTest / PrivateTest or train / val / test; None =
    all rows). The images come from the fer2013 reader's cache entry, so FER2013 and FER+ share
    one parse; the votes file is small and read each call.
    """
    if mode not in MODES:
        raise ConfigError(f"ferplus mode must be one of {', '.join(MODES)}, not {mode!r}")
    usage_name = pick_split(split, SPLIT_ALIASES, "ferplus")
    csv, votes_file = resolve_files(path, fer2013_path, votes_path)
    full = load_csv(csv, image_size, cache)
    votes, blank, vote_usage = read_votes(votes_file)
    if len(votes) != len(full):
        raise InputError(f"row counts differ: FER2013 csv {csv} has {len(full)} rows but FER+ votes file "
                         f"{votes_file} has {len(votes)} (row i of one must be row i of the other)")
    usage = full.meta["usage"]
    if vote_usage is not None and any(usage):
        differ = np.flatnonzero(usage != vote_usage.astype(usage.dtype))
        if len(differ):
            i = int(differ[0])
            raise InputError(f"FER2013 csv and FER+ votes file disagree at row {i}: Usage {usage[i]!r} vs "
                             f"{vote_usage[i]!r} ({len(differ)} rows differ; are they the same release?)")
    if usage_name is None:
        rows = np.arange(len(full))
    else:
        rows = np.flatnonzero(usage == usage_name)
        if not len(rows):
            found = ", ".join(f"{u} {n}" for u, n in zip(*np.unique(usage, return_counts=True))) or "none"
            raise InputError(f"FER2013 csv {csv} has no {usage_name} rows (rows by Usage: {found})")

    v = votes[rows]
    train_rows = usage[rows] == "Training"
    peak_m, forced_m, _ = targets(v, "majority")
    if mode == "majority":
        peak, forced, tgt = peak_m, forced_m, None
    else:
        peak, forced, tgt = targets(v, mode)
        # evaluation rows: the majority rule decides which rows exist (FER+ train.py)
        peak = np.where(train_rows, peak, peak_m)
        forced = np.where(train_rows, forced, forced_m)
        if (~train_rows).any():
            onehot = np.eye(N_EMO, dtype=np.float32)[np.minimum(peak_m, N_EMO - 1)]
            empty = tgt.sum(axis=1) == 0
            tgt = np.where((~train_rows & empty)[:, None], onehot, tgt)
    is_blank = blank[rows]
    keep = ~is_blank & (peak < UNKNOWN)
    dropped = {
        "blank_name": int(is_blank.sum()),
        "not_face": int((~is_blank & (peak == NOT_FACE)).sum()),
        "unknown": int((~is_blank & (peak == UNKNOWN) & ~forced).sum()),
        "no_consensus": int((~is_blank & (peak == UNKNOWN) & forced).sum()),
    }
    labels = np.where(peak_m < UNKNOWN, peak_m, -1)[keep].astype(np.int64)
    sums = v.sum(axis=1)
    kept_rows = rows[keep]
    meta = {
        "target_mode": mode,
        "dropped": dropped,
        "rows_read": int(len(rows)),
        "votes_not_10": int((sums != 10).sum()),
        "votes_not_10_rows": rows[sums != 10].tolist()[:10],
        "no_majority_kept": int((labels < 0).sum()),
        "votes": v[keep],
        "row": kept_rows.astype(np.int64),
        "usage": usage[kept_rows],
        "all_zero_images": int(full.meta["all_zero"][kept_rows].sum()),
        "fer2013_csv": str(csv),
        "votes_file": str(votes_file),
    }
    if "cache" in full.meta:
        meta["cache"] = full.meta["cache"]
    images = np.asarray(full.images[kept_rows])
    soft = None if tgt is None else np.ascontiguousarray(tgt[keep], np.float32)
    return FaceDataset(images, labels, CANONICAL, soft, usage_name or "", str(votes_file), meta)
