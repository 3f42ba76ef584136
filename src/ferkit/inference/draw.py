"""Drawing predictions on a copy of the image: box, label and score, top-3 bars, uncertainty.

A tracked video face (one with ``track_id`` and ``probs_smooth``, see
:mod:`ferkit.inference.track`) is drawn with its id and its *smoothed* label and bars, which
is what a viewer wants to read: the raw per-frame label flickers. A processing rate can be
drawn in the top-left corner.
"""

from __future__ import annotations

import cv2
import numpy as np

_BOX = (40, 220, 40)
_TEXT_BG = (0, 0, 0)
_BAR = (255, 190, 40)
_WHITE = (255, 255, 255)


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float, thick: int) -> tuple[int, int, int]:
    """White text on a black band at ``org`` (top-left); returns the band's right edge, top and height."""
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    x, y = org
    h, w = img.shape[:2]
    x = int(min(max(0, x), max(0, w - tw - 4)))
    y = int(min(max(0, y), max(0, h - th - base - 4)))
    cv2.rectangle(img, (x, y), (x + tw + 4, y + th + base + 4), _TEXT_BG, -1)
    cv2.putText(img, text, (x + 2, y + th + 2), cv2.FONT_HERSHEY_SIMPLEX, scale, _WHITE, thick, cv2.LINE_AA)
    return x + tw + 4, y, th + base + 4


def _panel_origin(img: np.ndarray, rows: list[str], box: tuple[int, int, int, int], scale: float, thick: int,
                  extra_w: int) -> tuple[int, int]:
    """Top-left of a face's panel so that all of it lies inside the image: under the box when it
    fits there, else above the box, else against the bottom edge; shifted left at the right edge."""
    sizes = [cv2.getTextSize(t, cv2.FONT_HERSHEY_SIMPLEX, scale, thick) for t in rows]
    width = max(tw for (tw, _), _ in sizes) + 4 + extra_w
    height = sum(th + base + 4 for (_, th), base in sizes)
    h, w = img.shape[:2]
    x, y, _, bh = box
    top = y + bh + 2
    if top + height > h:
        top = y - height - 2 if y - height - 2 >= 0 else h - height
    return int(min(max(0, x), max(0, w - width))), int(max(0, top))


def overlay_cams(rgb: np.ndarray, cams: list[np.ndarray], alpha: float = 0.45) -> np.ndarray:
    """``rgb`` with class activation maps (float (H, W) in [0, 1]) blended in as a JET heat map."""
    if not cams:
        return rgb
    heat = np.clip(np.max(np.stack(cams), axis=0), 0, 1)
    color = cv2.cvtColor(cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    a = (alpha * (heat > 0.02))[:, :, None]
    return (rgb * (1 - a) + color * a).round().astype(np.uint8)


def _scale(img: np.ndarray) -> tuple[float, float, int]:
    unit = max(img.shape[:2]) / 640.0
    return unit, max(0.35, 0.5 * unit), max(1, int(round(unit)))


def draw_fps(img: np.ndarray, fps: float) -> np.ndarray:
    """Writes ``fps`` (frames processed per second) in the top-left corner of ``img``, in place."""
    _, scale, thick = _scale(img)
    _text(img, f"{fps:.1f} fps", (0, 0), scale, thick)
    return img


def annotate(rgb: np.ndarray, results: list[dict], top: int = 3, cams: list[np.ndarray] | None = None,
             fps: float | None = None) -> np.ndarray:
    """A copy of ``rgb`` with each face's box, ``label p``, the top-``top`` probabilities as bars,
    the uncertainty and the landmarks drawn on it (and the class activation maps, if given).

    Tracked faces show ``#id`` and their smoothed label and bars; ``fps`` is drawn in the corner.
    """
    img = np.ascontiguousarray(overlay_cams(rgb, cams) if cams else rgb.copy())
    unit, scale, thick = _scale(img)
    for r in results:
        x, y, bw, bh = (int(round(v)) for v in r["box"])
        cv2.rectangle(img, (x, y), (x + bw, y + bh), _BOX, max(1, thick + 1))
        for px, py in r.get("landmarks") or []:
            cv2.circle(img, (int(round(px)), int(round(py))), max(1, thick + 1), (255, 60, 60), -1)
        tid = r.get("track_id")
        tracked = r.get("probs_smooth") is not None and tid is not None and tid >= 0
        probs = r["probs_smooth"] if tracked else r["probs"]
        label = r["label_smooth"] if tracked else r["label"]
        head = f"#{r['track_id']} " if tracked else ""
        _text(img, f"{head}{label} {probs[label]:.2f}", (x, y - int(22 * unit) - 4), scale, thick)
        # panel under the box (above it where the image ends): top-k bars and the uncertainty
        bar_len = int(70 * unit)
        ranked = sorted(probs.items(), key=lambda kv: -kv[1])[:top]
        rows = [f"{name[:10]} {p:.2f}" for name, p in ranked] + [f"uncertainty {r['uncertainty']:.2f}"]
        px, yy = _panel_origin(img, rows, (x, y, bw, bh), scale * 0.8, thick, bar_len + 4)
        for (_, p), text in zip(ranked, rows):
            x1, ty, hh = _text(img, text, (px, yy), scale * 0.8, thick)
            cv2.rectangle(img, (x1, ty), (x1 + bar_len + 4, ty + hh), _TEXT_BG, -1)
            cv2.rectangle(img, (x1 + 2, ty + 3), (x1 + 2 + max(1, int(bar_len * p)), ty + hh - 3), _BAR, -1)
            yy = ty + hh
        _text(img, rows[-1], (px, yy), scale * 0.8, thick)
    if fps is not None:
        draw_fps(img, fps)
    return img
