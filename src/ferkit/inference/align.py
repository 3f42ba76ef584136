"""Face alignment: a similarity transform from landmarks (and box) to a template, then the crop.

A model sees at test time what it saw in training only if the crop has the training data's
framing. FER2013 faces are *loose* 48x48 grayscale crops (forehead to chin, some hair and
background), not the tight ArcFace 112x112 framing, so the template here is measured on
FER2013 itself (``benchmarks/derive_template.py``, results in ``results/template/``): RetinaFace
was run on 3,000 Training images (upsampled 4x to 192 px and padded by 48 px of gray on each
side so faces touching the border are found), the five landmarks and the box mapped back into
the 48x48 frame and averaged, then averaged with their mirror image (training flips faces).

The transform is least squares (Umeyama 1991): uniform scale, rotation and translation, no
reflection. The default ``joint`` method fits the five landmarks *and* the four box corners to
the template's landmarks and mean box: FER2013 crops were cut from detector boxes, so the box
carries their framing while the landmarks fix the rotation. On 1,500 PublicTest faces
re-detected and re-aligned, the baseline model's accuracy was 60.4 % on the aligned crops against
60.5 % on the originals (59.5 % when the faces were first rotated by up to 20 degrees), its label
agreed on 72 % of the faces (88 % of those it is sure of), and landmarks alone or the box alone
did worse (results/template/template.md). Pixel correlation with
the original is ~0.6, not > 0.8: a 2 px shift of the original alone gives 0.73, and single faces
sit 3-5 px (std) off the mean. Templates are given in a ``side`` x ``side`` frame and scaled to
the output size.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ferkit.errors import ConfigError


@dataclass(frozen=True)
class Template:
    """Five landmark positions and a mean face box in a ``side`` x ``side`` crop frame."""

    name: str
    landmarks: np.ndarray  # (5, 2) x, y in RetinaFace's order (see detect.LANDMARK_NAMES)
    box: tuple[float, float, float, float]  # x, y, w, h
    side: float
    source: str = ""


# Derived by benchmarks/derive_template.py (results/template/template.json); do not edit by hand.
FER2013_TEMPLATE = Template(
    "fer2013",
    np.array([[15.52, 18.36], [32.48, 18.36], [24.0, 28.42], [17.04, 36.41], [30.96, 36.41]], np.float32),
    (5.15, 0.43, 37.71, 48.72),
    48.0,
    "mean RetinaFace landmarks and box on 2938 of 3000 FER2013 Training faces, mirror-averaged",
)

TEMPLATES: dict[str, Template] = {"fer2013": FER2013_TEMPLATE}


def get_template(name: str | Template = "fer2013") -> Template:
    if isinstance(name, Template):
        return name
    try:
        return TEMPLATES[name]
    except KeyError:
        raise ConfigError(f"unknown alignment template '{name}' (known: {', '.join(sorted(TEMPLATES))})") from None


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 similarity (scale, rotation, translation) mapping ``src`` points onto ``dst`` in the
    least-squares sense (Umeyama 1991, reflections excluded)."""
    src = np.asarray(src, np.float64).reshape(-1, 2)
    dst = np.asarray(dst, np.float64).reshape(-1, 2)
    if len(src) != len(dst) or len(src) < 2:
        raise ValueError("umeyama needs two equal sets of at least 2 points")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    var_s = (s**2).sum() / len(src)
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    e = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        e[1, 1] = -1
    r = u @ e @ vt
    scale = (sig * np.diag(e)).sum() / var_s if var_s > 0 else 1.0
    t = mu_d - scale * r @ mu_s
    return np.hstack([scale * r, t[:, None]])


def _corners(box) -> np.ndarray:
    x, y, w, h = (float(v) for v in box)
    return np.array([[x, y], [x + w, y], [x, y + h], [x + w, y + h]], np.float64)


def box_transform(box, template: Template, size: int) -> np.ndarray:
    """The 2x3 scale + translation mapping a face box onto the template's mean box (no landmarks)."""
    x, y, w, h = (float(v) for v in box)
    k = size / template.side
    tx, ty, tw, th = (v * k for v in template.box)
    s = np.sqrt((tw * th) / max(w * h, 1e-6))  # one scale, both sides on average
    cx, cy = x + w / 2, y + h / 2
    return np.array([[s, 0, tx + tw / 2 - s * cx], [0, s, ty + th / 2 - s * cy]], np.float64)


#: How a face is mapped onto the template: ``joint`` (landmarks and the four box corners, one
#: least-squares similarity; the default for RetinaFace), ``landmarks`` (the five landmarks only),
#: ``box`` (the box onto the mean box, no rotation), ``resize`` (the box resized, nothing else).
ALIGN_METHODS = ("joint", "landmarks", "box", "resize")


def face_transform(landmarks: np.ndarray | None, box, size: int, template: str | Template = "fer2013",
                   method: str = "joint") -> np.ndarray:
    """Image -> crop 2x3 matrix for one face (see :data:`ALIGN_METHODS`).

    ``joint`` is the default because FER2013 crops were cut from detector *boxes*: fitting the box
    corners as well as the landmarks reproduces the original framing best, while the landmarks
    still fix the rotation (results/template/template.json). Without landmarks it falls back to
    ``box``; without a box, ``joint`` falls back to ``landmarks``.
    """
    tpl = get_template(template)
    k = size / tpl.side
    if method not in ALIGN_METHODS:
        raise ConfigError(f"unknown alignment method '{method}' (known: {', '.join(ALIGN_METHODS)})")
    if landmarks is None and method in ("joint", "landmarks"):
        method = "box"
    if box is None and method == "joint":
        method = "landmarks"
    if box is None and method in ("box", "resize"):
        raise ValueError("a face needs landmarks or a box to be aligned")
    if method == "landmarks":
        return umeyama(landmarks, tpl.landmarks * k)
    if method == "joint":
        src = np.vstack([np.asarray(landmarks, np.float64).reshape(-1, 2), _corners(box)])
        dst = np.vstack([tpl.landmarks.astype(np.float64), _corners(tpl.box)]) * k
        return umeyama(src, dst)
    if method == "box":
        return box_transform(box, tpl, size)
    x, y, w, h = (float(v) for v in box)
    return np.array([[size / w, 0, -x * size / w], [0, size / h, -y * size / h]], np.float64)


def warp(image: np.ndarray, m: np.ndarray, size: int) -> np.ndarray:
    """``image`` warped by ``m`` into a size x size crop, without aliasing when shrinking a lot.

    When the face is shrunk by more than 2x the warp is done at k times the size (bilinear),
    then reduced by area averaging, which is how FER2013's small crops look (smooth).
    """
    m = np.asarray(m, np.float64)
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    k = int(min(8, max(1, np.floor(1.0 / max(scale, 1e-6)))))
    mk = m * k if k > 1 else m
    out = cv2.warpAffine(image, mk, (size * k, size * k), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if k > 1:
        out = cv2.resize(out, (size, size), interpolation=cv2.INTER_AREA)
    return out


def to_channels(img: np.ndarray, channels: int) -> np.ndarray:
    """uint8 (H, W) for 1 channel (ITU-R BT.601 luma, as training used) or (H, W, 3) for 3."""
    if channels == 1:
        return img if img.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(img[:, :, :3]), cv2.COLOR_RGB2GRAY)
    if channels == 3:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB) if img.ndim == 2 else np.ascontiguousarray(img[:, :, :3])
    raise ValueError(f"unsupported channel count {channels}")


def align_face(image: np.ndarray, landmarks: np.ndarray | None = None, box=None, size: int = 48,
               channels: int = 1, template: str | Template = "fer2013", method: str = "joint") -> np.ndarray:
    """The aligned face crop, uint8 (size, size) or (size, size, 3), framed like ``template``."""
    lm = None if landmarks is None else np.asarray(landmarks, np.float64)
    m = face_transform(lm, box, size, template, method)
    return to_channels(warp(image, m, size), channels)
