"""Face tracks across video frames and temporal smoothing of each track's probabilities.

Per-frame predictions flicker: the same face, a few pixels further, can swing between two
close labels. Following each face from frame to frame (a track id) and averaging its
probabilities over time gives a steadier reading, and the id tells who is who.

- :class:`IoUTracker`: greedy matching of this frame's boxes to the tracks' last boxes by
  intersection over union (the highest IoU pair first, then the next, ...), no motion model.
  Faces in a video move little between frames, so IoU alone is enough and costs microseconds;
  a track survives ``max_age`` processed frames without a match (a blink of the detector),
  and ids are never reused, so an id always means one face.
- :class:`ProbSmoother`: an exponential moving average per track,
  ``s = a * s_prev + (1 - a) * p``. ``smooth`` is ``a`` per *source frame interval*
  (``frame_dt`` seconds, 1/fps of the video). When frames are skipped (``frame_step``,
  real-time dropping, a missed detection) the gap is longer and the weight of the past is
  ``smooth ** (gap / frame_dt)``, so the smoothing's time constant in seconds,
  ``-frame_dt / ln(smooth)``, does not depend on how many frames were processed (0.6 at
  25 fps: about 80 ms, a half-life of 1.4 frames: it removes single-frame flicker without
  lagging behind a real change of expression). Without times (``t`` None or NaN, or no
  ``frame_dt``) each update counts as one interval: the plain per-frame EMA.
- :class:`StreamTracker`: both, applied to the face dicts of :meth:`Recognizer.predict`.

Pure numpy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ferkit.errors import ConfigError


def iou_matrix(a: Any, b: Any) -> np.ndarray:
    """IoU (len(a), len(b)) of boxes ``[x, y, w, h]``."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    ax1, ay1, ax2, ay2 = a[:, 0:1], a[:, 1:2], a[:, 0:1] + a[:, 2:3], a[:, 1:2] + a[:, 3:4]
    bx1, by1, bx2, by2 = b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    iw = np.clip(np.minimum(ax2, bx2) - np.maximum(ax1, bx1), 0, None)
    ih = np.clip(np.minimum(ay2, by2) - np.maximum(ay1, by1), 0, None)
    inter = iw * ih
    union = (a[:, 2:3] * a[:, 3:4]) + (b[:, 2] * b[:, 3]) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


class IoUTracker:
    """Track ids for the boxes of consecutive frames, matched greedily by IoU.

    Args:
        iou_threshold: the least IoU for a box to continue a track (0.3: a face may move by
            about a third of its width between processed frames).
        max_age: a track without a matching box is kept for this many :meth:`update` calls
            (processed frames), then dropped; its id is never given out again.
    """

    def __init__(self, iou_threshold: float = 0.3, max_age: int = 10) -> None:
        if not 0.0 <= iou_threshold <= 1.0:
            raise ConfigError(f"iou_threshold must be in [0, 1] (got {iou_threshold})")
        if max_age < 0:
            raise ConfigError(f"max_age must be >= 0 (got {max_age})")
        self.iou_threshold = float(iou_threshold)
        self.max_age = int(max_age)
        self.reset()

    def reset(self) -> None:
        """Forget every track (a new video); ids start again at 0."""
        self.boxes: dict[int, np.ndarray] = {}  # live track id -> last box
        self.missed: dict[int, int] = {}  # live track id -> updates since its last match
        self.next_id = 0

    @property
    def active(self) -> list[int]:
        """Ids of the tracks still alive (matched within the last ``max_age`` updates)."""
        return list(self.boxes)

    def update(self, boxes: Any) -> list[int]:
        """The track id of each box ``[x, y, w, h]`` of this frame, in the boxes' order."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        ids = list(self.boxes)
        out = [-1] * len(boxes)
        if ids and len(boxes):
            iou = iou_matrix(np.stack([self.boxes[i] for i in ids]), boxes)
            # greedy: best pair first; stable order on ties (older track, earlier box)
            order = np.argsort(-iou, axis=None, kind="stable")
            used_t: set[int] = set()
            for flat in order:
                ti, di = divmod(int(flat), len(boxes))
                if iou[ti, di] < self.iou_threshold or iou[ti, di] <= 0:
                    break
                if ti in used_t or out[di] != -1:
                    continue
                used_t.add(ti)
                out[di] = ids[ti]
        for di, tid in enumerate(out):
            if tid == -1:
                tid = out[di] = self.next_id
                self.next_id += 1
            self.boxes[tid] = boxes[di].copy()
            self.missed[tid] = 0
        matched = set(out)
        for tid in ids:
            if tid not in matched:
                self.missed[tid] += 1
                if self.missed[tid] > self.max_age:
                    del self.boxes[tid], self.missed[tid]
        return out


class ProbSmoother:
    """Exponential moving average of each track's probability vector (see the module docstring).

    Args:
        smooth: weight of the past per ``frame_dt`` seconds, in [0, 1); 0 returns the input.
        frame_dt: the source's frame interval in seconds (1 / fps); None: every update is one
            interval, whatever the times.
    """

    def __init__(self, smooth: float = 0.6, frame_dt: float | None = None) -> None:
        if not 0.0 <= smooth < 1.0:
            raise ConfigError(f"smooth must be in [0, 1) (got {smooth})")
        self.smooth = float(smooth)
        self.frame_dt = float(frame_dt) if frame_dt and frame_dt > 0 and math.isfinite(frame_dt) else None
        self.reset()

    def reset(self) -> None:
        """Forget every track's state."""
        self.state: dict[int, tuple[np.ndarray, float]] = {}  # track id -> (smoothed probs, time of last update)

    def weight(self, gap: float | None) -> float:
        """The weight of the previous estimate after ``gap`` seconds (None: one interval)."""
        if self.smooth == 0.0:
            return 0.0
        if gap is None or self.frame_dt is None or not math.isfinite(gap) or gap <= 0:
            return self.smooth
        return self.smooth ** (gap / self.frame_dt)

    def update(self, track_ids: Sequence[int], probs: Any, t: float | None = None) -> np.ndarray:
        """Smoothed probabilities (N, K) for this frame's faces: row i continues track ``track_ids[i]``.

        ``t`` is the frame's time in seconds. A negative id (an untracked face) is returned as is.
        """
        p = np.array(probs, np.float64, copy=True)
        if p.ndim != 2:
            p = p.reshape(len(track_ids), -1) if len(track_ids) else p.reshape(0, 0)
        for i, tid in enumerate(track_ids):
            tid = int(tid)
            if tid < 0:
                continue
            prev = self.state.get(tid)
            if prev is not None and prev[0].shape == p[i].shape and self.smooth > 0:
                gap = None if t is None or prev[1] is None else float(t) - prev[1]
                a = self.weight(gap)
                p[i] = a * prev[0] + (1.0 - a) * p[i]
                total = p[i].sum()
                if total > 0:
                    p[i] /= total
            self.state[tid] = (p[i].copy(), None if t is None or not math.isfinite(float(t)) else float(t))
        return p

    def retain(self, track_ids: Sequence[int]) -> None:
        """Drop the state of every track not in ``track_ids`` (the tracker's live ones)."""
        keep = {int(i) for i in track_ids}
        for tid in [t for t in self.state if t not in keep]:
            del self.state[tid]


class StreamTracker:
    """Track ids and smoothed probabilities for the face dicts of one video's frames.

    Each face dict (as :meth:`Recognizer.predict` returns) gains ``track_id``, ``probs_smooth``
    ({label: p}) and ``label_smooth``. Make one per video, or :meth:`reset` between videos.
    """

    def __init__(self, labels: Sequence[str], smooth: float = 0.6, frame_dt: float | None = None,
                 iou_threshold: float = 0.3, max_age: int = 10) -> None:
        self.labels = tuple(labels)
        self.tracker = IoUTracker(iou_threshold, max_age)
        self.smoother = ProbSmoother(smooth, frame_dt)

    def reset(self, frame_dt: float | None = None) -> None:
        """A new video (its frame interval ``frame_dt`` in seconds, if known)."""
        self.tracker.reset()
        self.smoother = ProbSmoother(self.smoother.smooth, frame_dt)

    @property
    def n_tracks(self) -> int:
        """How many distinct tracks this video has had so far."""
        return self.tracker.next_id

    def update(self, faces: list[dict[str, Any]], t: float | None = None) -> list[dict[str, Any]]:
        """Adds ``track_id``, ``probs_smooth`` and ``label_smooth`` to each face dict (in place) and returns them."""
        ids = self.tracker.update([f["box"] for f in faces])
        probs = np.array([[f["probs"][lab] for lab in self.labels] for f in faces], np.float64).reshape(
            len(faces), len(self.labels))
        sm = self.smoother.update(ids, probs, t)
        self.smoother.retain(self.tracker.active)
        for f, tid, row in zip(faces, ids, sm):
            f["track_id"] = int(tid)
            f["probs_smooth"] = {lab: float(v) for lab, v in zip(self.labels, row)}
            f["label_smooth"] = self.labels[int(np.argmax(row))]
        return faces
