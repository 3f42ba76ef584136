"""Frames of a video file or a webcam, with their index and time, via cv2.VideoCapture.

``frame_step`` keeps every n-th frame; the frames in between are grabbed, not decoded, so a
step of 10 costs about a tenth of the decoding. Times come from the file's frame rate (index /
fps), or from the capture's own clock when the rate is unknown, or for a webcam from the wall
clock since the first frame.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ferkit.errors import InputError

#: nominal frame rate of a webcam that does not report one
WEBCAM_FPS = 30.0


class FpsMeter:
    """Frames processed per second by the wall clock, smoothed so the number is readable.

    The rate over the last ``window`` frames (frames / the time they took): one slow frame
    does not swing it, and the slow first frame (model warm-up) is forgotten after ``window``.
    """

    def __init__(self, window: int = 10) -> None:
        self.window = max(1, int(window))
        self.reset()

    def reset(self, now: float | None = None) -> None:
        """Start measuring from ``now`` (default: the clock now)."""
        self.stamps: deque[float] = deque([time.perf_counter() if now is None else now], maxlen=self.window + 1)

    def tick(self, now: float | None = None) -> float:
        """One more frame done; returns the smoothed rate."""
        self.stamps.append(time.perf_counter() if now is None else now)
        return self.fps

    @property
    def fps(self) -> float:
        span = self.stamps[-1] - self.stamps[0]
        return (len(self.stamps) - 1) / span if span > 0 else 0.0



@dataclass
class VideoFrame:
    index: int  # frame number in the video (0-based), counting skipped frames
    time_s: float
    rgb: np.ndarray


def open_capture(source: str | Path | int) -> cv2.VideoCapture:
    """An opened capture for a file path or a webcam index; InputError if it cannot be opened."""
    if isinstance(source, int):
        logging = getattr(getattr(cv2, "utils", None), "logging", None)
        level = logging.getLogLevel() if logging is not None else None
        if logging is not None:
            logging.setLogLevel(logging.LOG_LEVEL_ERROR)  # a missing camera is reported below, in one line
        try:
            cap = cv2.VideoCapture(source)
        finally:
            if logging is not None:
                logging.setLogLevel(level)
        if not cap.isOpened():
            raise InputError(f"cannot open webcam {source}")
        return cap
    path = Path(source)
    if not path.is_file():
        raise InputError(f"file not found: {path}")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise InputError(f"cannot decode video: {path}")
    return cap


def video_info(source: str | Path) -> dict:
    """``fps``, ``frames`` (0 if unknown), ``width``, ``height`` of a video file."""
    cap = open_capture(source)
    try:
        return {"fps": float(cap.get(cv2.CAP_PROP_FPS) or 0.0), "frames": int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0),
                "width": int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), "height": int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))}
    finally:
        cap.release()


def iter_video(source: str | Path | int, frame_step: int = 1, max_frames: int | None = None) -> Iterator[VideoFrame]:
    """RGB frames 0, step, 2*step, ... of a video file (or webcam index), at most ``max_frames``.

    A file that opens but yields no frame at all is an InputError (not a video OpenCV can read).
    """
    if frame_step < 1:
        raise InputError(f"frame step must be >= 1 (got {frame_step})")
    cap = open_capture(source)
    webcam = isinstance(source, int)
    fps = 0.0 if webcam else float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    t0 = time.monotonic()
    index, kept = 0, 0
    try:
        while max_frames is None or kept < max_frames:
            if index % frame_step:
                if not cap.grab():
                    break
                index += 1
                continue
            pos_ms = cap.get(cv2.CAP_PROP_POS_MSEC)
            ok, bgr = cap.read()
            if not ok or bgr is None:
                break
            if webcam:
                t = time.monotonic() - t0
            elif fps > 0:
                t = index / fps
            else:
                t = float(pos_ms) / 1000.0
            yield VideoFrame(index, float(t), cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            index += 1
            kept += 1
    finally:
        cap.release()
    if index == 0 and not webcam:
        raise InputError(f"cannot decode video: {source} (no frame could be read)")
