"""How fast a model runs here: classifier faces/s and end-to-end photos/s (``ferkit benchmark``).

Two numbers a user choosing a model wants on their own machine:

* **classifier**: uint8 face crops at the model's crop size in, probabilities out (its own flip
  setting, so a flip-averaged model runs twice per face), in batches; the median rate of several
  timed passes after a warm-up;
* **end to end**: ``Recognizer.predict`` on 640x480 photos (the shipped examples letterboxed),
  detection, alignment and classification, with the time of each stage.

Each timing records the 1-minute load average before and after, since a busy machine (other
jobs on the same cores) is the most common reason for a slow figure.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np


def _load_1min() -> float | None:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def _loadavg() -> list[float] | None:
    return [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None


def timed_rate(fn: Callable[[], int], repeats: int = 5, min_seconds: float = 0.5, *,
               warmup: int | Callable[[], Any] = 1, calls: int | str = "until") -> dict[str, Any]:
    """Items per second of ``fn`` (which returns how many items it processed): the one timer of
    ``ferkit benchmark`` and the speed benchmarks, so their rates are measured alike.

    ``warmup``: untimed calls of ``fn`` first (or a function to call instead). Each of the
    ``repeats`` timings then runs ``fn``: ``calls="until"`` as often as it takes to last at least
    ``min_seconds``; ``calls="calibrate"`` k times, k fixed once from one more untimed call so a
    timing lasts about ``min_seconds``; an int, that many times. Returns the median, min and max
    rate, each timing's rate, the calls per timing (None for "until") and the load averages around
    the timings (a busy machine is the usual reason for a slow figure): ``load_1min_*`` the 1-minute
    one, ``load_*`` all three.
    """
    if callable(warmup):
        warmup()
    else:
        for _ in range(warmup):
            fn()
    k: int | None = None
    if calls == "calibrate":
        t0 = time.perf_counter()
        fn()
        k = max(1, math.ceil(min_seconds / max(time.perf_counter() - t0, 1e-6)))
    elif isinstance(calls, int):
        k = max(1, calls)
    elif calls != "until":
        raise ValueError(f"calls must be 'until', 'calibrate' or a count, not {calls!r}")
    rates = []
    load, loads = _load_1min(), _loadavg()
    for _ in range(max(1, repeats)):
        n, t0 = 0, time.perf_counter()
        if k is None:
            while True:
                n += fn()
                dt = time.perf_counter() - t0
                if dt >= min_seconds:
                    break
        else:
            for _ in range(k):
                n += fn()
            dt = time.perf_counter() - t0
        rates.append(n / dt)
    return {"median": statistics.median(rates), "min": min(rates), "max": max(rates), "repeats": len(rates),
            "rates": rates, "calls_per_repeat": k, "load_1min_before": load, "load_1min_after": _load_1min(),
            "load_before": loads, "load_after": _loadavg()}


#: what ``ferkit benchmark`` reports of a timing
SUMMARY_KEYS = ("median", "min", "max", "repeats", "load_1min_before", "load_1min_after")


def letterbox(img: np.ndarray, w: int = 640, h: int = 480) -> np.ndarray:
    """``img`` scaled to fit ``w`` x ``h`` on a grey canvas (the size of a webcam or phone preview)."""
    import cv2

    s = min(w / img.shape[1], h / img.shape[0])
    small = cv2.resize(img, (round(img.shape[1] * s), round(img.shape[0] * s)), interpolation=cv2.INTER_AREA)
    out = np.full((h, w, 3), 114, np.uint8)
    y, x = (h - small.shape[0]) // 2, (w - small.shape[1]) // 2
    out[y:y + small.shape[0], x:x + small.shape[1]] = small
    return out


def classifier_speed(recognizer: Any, batch: int = 256, faces: int = 1024, repeats: int = 5) -> dict[str, Any]:
    """Faces/s of the recognizer's classifier on random uint8 crops at its crop size."""
    size, channels = recognizer.size, recognizer.channels
    shape = (faces, size, size) + (() if channels == 1 else (3,))
    crops = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)

    def run() -> int:
        for i in range(0, faces, batch):
            recognizer.model.classify(crops[i:i + batch], batch_size=batch, tta_flip=recognizer.tta_flip,
                                      tta_crop=recognizer.tta_crop)
        return faces

    rate = timed_rate(run, repeats)
    return {"batch": batch, "crop": f"{size}x{size} {'gray' if channels == 1 else 'RGB'}",
            **{k: rate[k] for k in SUMMARY_KEYS}}


def end_to_end_speed(recognizer: Any, photos: list[np.ndarray], repeats: int = 5) -> dict[str, Any]:
    """Photos/s of ``recognizer.predict`` and the milliseconds of each stage per photo."""
    def run() -> int:
        for p in photos:
            recognizer.predict(p)
        return len(photos)

    rate = {k: v for k, v in timed_rate(run, repeats).items() if k in SUMMARY_KEYS}
    stages = {"detect": 0.0, "align": 0.0, "classify": 0.0}
    for p in photos:
        a = time.perf_counter()
        found = recognizer.detector.detect(p)
        b = time.perf_counter()
        crops = recognizer._crops(p, found)
        c = time.perf_counter()
        recognizer._classify(crops)
        d = time.perf_counter()
        stages["detect"] += b - a
        stages["align"] += c - b
        stages["classify"] += d - c
    faces = sum(len(recognizer.predict(p)) for p in photos)
    return {"photos": len(photos), "faces": faces, "size": f"{photos[0].shape[1]}x{photos[0].shape[0]}",
            "ms_per_photo": {k: round(1000 * v / len(photos), 2) for k, v in stages.items()}, **rate}


def benchmark(recognizer: Any, batch: int = 256, repeats: int = 5) -> dict[str, Any]:
    """Both measurements for one recognizer, with what they ran on."""
    import torch

    from ferkit import examples
    from ferkit.inference.sources import load_image

    photos = [letterbox(load_image(examples.path(n))) for n in examples.names()]
    return {"model": recognizer.model.source, "engine": recognizer.engine, "detector": recognizer.detector.name,
            "classifier": classifier_speed(recognizer, batch=batch, repeats=repeats),
            "end_to_end": end_to_end_speed(recognizer, photos, repeats=repeats),
            "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset)")}
