"""A live loop over a webcam or a video file: detect, classify, track, smooth, draw, write, show.

:func:`run_live` is what ``ferkit live`` runs. Unlike :meth:`Recognizer.analyze` (which reads
every requested frame and returns a table), it is built to keep up with the source:

- ``realtime=True`` on a **file** drops frames so that the processed frames keep pace with the
  file's own frame rate: before each frame it jumps to the frame that is "playing" now by the
  wall clock (never going back), so a slow machine shows fewer frames, not a slower video.
  The written video stays time-true: a processed frame is repeated for the frames dropped
  after it.
- ``realtime=True`` on a **webcam** always processes the newest frame: a background thread
  reads the camera continuously and keeps only the latest frame, so OpenCV's frame buffer
  never holds stale frames (otherwise a slow loop falls further and further behind).
- Faces are tracked and their probabilities smoothed over time (:mod:`ferkit.inference.track`);
  each frame is drawn with the boxes, ``#track`` ids, smoothed labels and bars, and the
  processing rate (frames per second by the wall clock, smoothed) in the corner.

A window (``show=True``) needs an OpenCV built with GUI support; ``opencv-python-headless``
(ferkit's dependency) has none, so that is a :class:`~ferkit.errors.ConfigError` that points to
``--out``.
"""

from __future__ import annotations

import math
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ferkit.errors import ConfigError, InputError
from ferkit.inference.track import StreamTracker
from ferkit.inference.video import WEBCAM_FPS, FpsMeter

if TYPE_CHECKING:
    from ferkit.inference.recognizer import Recognizer

VIDEO_CODECS = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG"}
WINDOW = "ferkit live (q: quit)"


@dataclass
class LiveFrame:
    """What :func:`run_live` hands to ``on_frame`` after each processed frame."""

    index: int  # frame number in the source (0-based, counting skipped frames)
    time_s: float  # seconds into the video (webcam: since the first frame)
    rgb: np.ndarray  # the frame as read
    faces: list[dict[str, Any]]  # predict()'s dicts plus track_id, probs_smooth, label_smooth
    image: np.ndarray | None = None  # the annotated frame (RGB)
    fps: float = 0.0  # smoothed processing rate so far
    stats: dict[str, Any] = field(default_factory=dict)


def gui_available() -> bool:
    """Whether this OpenCV was built with a GUI backend (``opencv-python-headless`` has none)."""
    import cv2

    m = re.search(r"^\s*GUI:\s*(\S+)", cv2.getBuildInformation(), re.MULTILINE)
    return not (m and m.group(1).upper() == "NONE")


def _open_window() -> None:
    import cv2

    msg = ("--show needs a window, but {why}; write the annotated video with --out annotated.mp4 instead "
           "(or install opencv-python in place of opencv-python-headless)")
    if not gui_available():
        raise ConfigError(msg.format(why="this OpenCV has no GUI support (opencv-python-headless)"))
    try:
        cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL)
    except cv2.error as exc:
        why = str(exc).strip().splitlines()[-1] if str(exc).strip() else "no display"
        raise ConfigError(msg.format(why=f"none could be opened ({why})")) from None


class _Reader:
    """Frames of a capture by index: ``get(want)`` skips (grabs without decoding) up to frame
    ``want`` and decodes it. Webcam times are the wall clock since the first frame."""

    def __init__(self, cap: Any, fps: float, webcam: bool) -> None:
        self.cap, self.fps, self.webcam = cap, fps, webcam
        self.count = 0  # frames taken from the capture (read or grabbed)
        self.t0: float | None = None

    def get(self, want: int) -> tuple[int, float, np.ndarray] | None:
        import cv2

        cap = self.cap
        while self.count < want:
            if not cap.grab():
                return None
            self.count += 1
        pos_ms = cap.get(cv2.CAP_PROP_POS_MSEC)
        ok, bgr = cap.read()
        if not ok or bgr is None:
            return None
        index = self.count
        self.count += 1
        now = time.monotonic()
        if self.t0 is None:
            self.t0 = now
        if self.webcam:
            t = now - self.t0
        else:
            t = index / self.fps if self.fps > 0 else float(pos_ms) / 1000.0
        return index, float(t), bgr

    def stop(self) -> None:
        pass


class _LatestReader:
    """Reads a capture on a background thread and keeps only the newest frame (real-time webcam):
    ``get(want)`` returns the newest frame whose index is at least ``want``, waiting if needed."""

    def __init__(self, cap: Any) -> None:
        self.cap = cap
        self.count = 0
        self.latest: tuple[int, float, np.ndarray] | None = None
        self.done = False
        self._stop = False
        self._cond = threading.Condition()
        self._t0: float | None = None
        self._thread = threading.Thread(target=self._run, name="ferkit-frames", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop:
                ok, bgr = self.cap.read()
                now = time.monotonic()
                with self._cond:
                    if not ok or bgr is None:
                        break
                    if self._t0 is None:
                        self._t0 = now
                    self.latest = (self.count, now - self._t0, bgr)
                    self.count += 1
                    self._cond.notify_all()
        finally:
            with self._cond:
                self.done = True
                self._cond.notify_all()

    def get(self, want: int) -> tuple[int, float, np.ndarray] | None:
        with self._cond:
            while not self.done and (self.latest is None or self.latest[0] < want):
                self._cond.wait(0.5)
            if self.latest is None or self.latest[0] < want:
                return None
            return self.latest

    def stop(self) -> None:
        self._stop = True
        self._thread.join(timeout=5.0)


def _open_source(source: str | Path | int) -> tuple[Any, float, bool, str]:
    """The capture, its frame rate (webcam: reported or 30), whether it is a webcam, and its name."""
    import cv2

    from ferkit.inference.video import open_capture

    if isinstance(source, bool):
        raise InputError(f"unsupported source {source!r} (give a video file or a webcam index)")
    webcam = isinstance(source, int)
    if not webcam:
        path = Path(source)
        if path.is_dir():
            raise InputError(f"{path} is a folder; live takes one video file or a webcam")
    cap = open_capture(source)
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    if not math.isfinite(fps) or fps <= 0 or fps > 1000:
        fps = WEBCAM_FPS if webcam else 0.0
    return cap, fps, webcam, (f"webcam:{source}" if webcam else str(source))


def _video_writer(path: Path, fps: float, size: tuple[int, int]) -> Any:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*VIDEO_CODECS[path.suffix.lower()]), fps, size)
    if not vw.isOpened():
        raise InputError(f"cannot write video {path}")
    return vw


def run_live(recognizer: Recognizer, source: str | Path | int, *, frame_step: int = 1, realtime: bool = False,
             max_frames: int | None = None, out_video: str | Path | None = None, show: bool = False,
             smooth: float = 0.6, on_frame: Callable[[LiveFrame], Any] | None = None, progress: bool = False,
             iou_threshold: float = 0.3, max_age: int = 10) -> dict[str, Any]:
    """Runs the recognizer live over a video file or webcam and returns what happened.

    Args:
        recognizer: a :class:`~ferkit.inference.recognizer.Recognizer` (anything with ``labels``
            and ``predict(rgb) -> list[dict]``).
        source: a video file path or a webcam index (int).
        frame_step: process at most every n-th frame.
        realtime: drop frames to keep up with the source (see the module docstring).
        max_frames: stop after this many processed frames (a webcam otherwise runs until Ctrl-C,
            ``q`` in the window, or ``on_frame`` returning False).
        out_video: write the annotated frames to this ``.mp4`` (or ``.avi``), at the source's
            frame rate divided by ``frame_step``.
        show: show the annotated frames in a window (needs OpenCV with GUI support).
        smooth: temporal smoothing of each track's probabilities, in [0, 1) (0: off), per source
            frame interval (see :mod:`ferkit.inference.track`).
        on_frame: called with a :class:`LiveFrame` after each processed frame; returning False stops.
        progress: a tqdm line on stderr with the processing rate.
        iou_threshold, max_age: the tracker's settings (:class:`~ferkit.inference.track.IoUTracker`).

    Returns:
        ``frames_read`` (taken from the source), ``frames_processed``, ``frames_skipped`` (read but
        not processed), ``frames_dropped`` (of those, skipped by ``realtime`` beyond ``frame_step``),
        ``frames_written``, ``seconds`` (wall time), ``fps`` (mean processing rate, frames
        processed per wall-clock second), ``source_fps``, ``faces``, ``faces_per_frame``,
        ``tracks`` (distinct track ids), ``source``, ``out_video``, ``interrupted``.
    """
    import cv2

    from ferkit.inference.draw import annotate

    if frame_step < 1:
        raise InputError(f"frame step must be >= 1 (got {frame_step})")
    if max_frames is not None and max_frames < 1:
        raise InputError(f"max frames must be >= 1 (got {max_frames})")
    out_path = None if out_video is None else Path(out_video)
    if out_path is not None and out_path.suffix.lower() not in VIDEO_CODECS:
        raise InputError(f"--out must be a video file ending in {', '.join(VIDEO_CODECS)} (got {out_path.name})")
    tracker = StreamTracker(recognizer.labels, smooth, iou_threshold=iou_threshold, max_age=max_age)
    if show:
        _open_window()
    cap, fps, webcam, name = _open_source(source)
    tracker.reset(frame_dt=1.0 / fps if fps > 0 else None)
    reader: _Reader | _LatestReader = _LatestReader(cap) if (realtime and webcam) else _Reader(cap, fps, webcam)
    out_fps = (fps if fps > 0 else WEBCAM_FPS) / frame_step

    bar = None
    if progress:
        from tqdm import tqdm

        total = None
        if not webcam:
            n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
            total = (min(n, max_frames * frame_step) if max_frames else n) or None
        # delay: as predict's bar, none for a source that ends (or fails) within a second
        bar = tqdm(total=total, unit="frame", dynamic_ncols=True, file=sys.stderr, desc=Path(name).name, delay=1.0)

    meter = FpsMeter()
    writer = None
    pending: tuple[np.ndarray, int] | None = None  # last annotated BGR frame and its output slot
    processed = written = dropped = n_faces = 0
    interrupted = False
    want, prev_index = 0, None
    t_start = time.perf_counter()
    meter.reset(t_start)
    try:
        while max_frames is None or processed < max_frames:
            if realtime and not webcam and fps > 0:  # the frame "playing" now by the wall clock
                want = max(want, int((time.perf_counter() - t_start) * fps))
            got = reader.get(want)
            if got is None:
                break
            index, t, frame = got
            rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            if prev_index is not None:
                dropped += max(0, index - prev_index - frame_step)
            prev_index = index

            faces = tracker.update(recognizer.predict(rgb), t)
            processed += 1
            n_faces += len(faces)
            rate = meter.tick()
            drawn = annotate(rgb, faces, fps=rate) if (out_path is not None or show or on_frame is not None) else None

            if out_path is not None and drawn is not None:
                bgr = cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR)
                if writer is None:
                    writer = _video_writer(out_path, out_fps, (bgr.shape[1], bgr.shape[0]))
                slot = index // frame_step
                if pending is not None:  # the previous frame fills the slots up to this one
                    for _ in range(max(1, slot - pending[1])):
                        writer.write(pending[0])
                        written += 1
                pending = (bgr, slot)
            if show and drawn is not None:
                cv2.imshow(WINDOW, cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
                if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                    break
            if bar is not None:
                bar.update(max(0, min(reader.count, bar.total or reader.count) - bar.n))
                bar.set_postfix(fps=f"{rate:.1f}", faces=len(faces), tracks=tracker.n_tracks, refresh=False)
            if on_frame is not None:
                info = LiveFrame(index, t, rgb, faces, drawn, rate,
                                 {"frames_processed": processed, "tracks": tracker.n_tracks})
                if on_frame(info) is False:
                    break
            want = index + frame_step
    except KeyboardInterrupt:
        interrupted = True
    except BaseException:
        if bar is not None:  # an error ends with its one line, not with a half-drawn bar above it
            bar.leave = False
        raise
    finally:
        seconds = time.perf_counter() - t_start
        reader.stop()
        frames_read = reader.count
        if writer is not None:
            if pending is not None:  # the last frame fills the slots of the frames read after it
                end_slot = -(-frames_read // frame_step) if not webcam else pending[1] + 1
                for _ in range(max(1, end_slot - pending[1])):
                    writer.write(pending[0])
                    written += 1
            writer.release()
        cap.release()
        if bar is not None:
            if frames_read == 0 and not webcam:  # the error below
                bar.leave = False
            bar.close()
        if show:
            cv2.destroyWindow(WINDOW)
            cv2.waitKey(1)
    if frames_read == 0 and not webcam:
        raise InputError(f"cannot decode video: {source} (no frame could be read)")
    return {"source": name, "frames_read": frames_read, "frames_processed": processed,
            "frames_skipped": frames_read - processed, "frames_dropped": dropped, "frames_written": written,
            "seconds": round(seconds, 3), "fps": round(processed / seconds, 2) if seconds > 0 else 0.0,
            "source_fps": round(fps, 3), "faces": n_faces,
            "faces_per_frame": round(n_faces / processed, 3) if processed else 0.0, "tracks": tracker.n_tracks,
            "out_video": None if out_path is None else str(out_path), "interrupted": interrupted}
