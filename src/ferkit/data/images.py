"""Image decoding shared by the readers: OpenCV first, PIL as a fallback, never torchvision.

Decoding runs in a small thread pool (OpenCV releases the GIL), and a file that cannot be
decoded is reported back instead of raised, so each reader decides whether to skip or fail.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from ferkit.errors import InputError

Box = tuple[int, int, int, int]  # x, y, w, h


#: the most pixels a decoded image may have (the server's limit too); FERKIT_MAX_PIXELS overrides it.
#: 50 megapixels is a 8660 x 5773 photo; a 17000 x 17000 PNG would take 2 GB decoded.
DEFAULT_MAX_PIXELS = 50_000_000


def max_image_pixels() -> int:
    """The pixel limit in force: ``FERKIT_MAX_PIXELS`` (an integer) or :data:`DEFAULT_MAX_PIXELS`."""
    raw = os.environ.get("FERKIT_MAX_PIXELS", "").strip()
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(float(raw))
    except ValueError:
        raise InputError(f"FERKIT_MAX_PIXELS must be a number of pixels, not {raw!r}") from None
    if value <= 0:
        raise InputError(f"FERKIT_MAX_PIXELS must be positive, not {raw!r}")
    return value


def check_pixels(width: int, height: int, name: str, max_pixels: int | None = None) -> None:
    """InputError when a ``width`` x ``height`` image is over the limit (before it is decoded)."""
    limit = max_image_pixels() if max_pixels is None else int(max_pixels)
    if width * height > limit:
        raise InputError(f"{name}: image is {width}x{height} = {width * height / 1e6:.1f} megapixels, over the "
                         f"limit of {limit / 1e6:g} (set FERKIT_MAX_PIXELS to raise it)")


def header_size(path: str | os.PathLike[str]) -> tuple[int, int] | None:
    """(width, height) from the file's header without decoding its pixels; None if Pillow cannot tell."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                return im.size
    except Image.DecompressionBombError:  # over Pillow's own bomb limit, so certainly over ours
        return _declared_size(path) or (1 << 16, 1 << 16)
    except Exception:  # noqa: BLE001 - not an image Pillow reads: OpenCV may still decode it
        return None


def _declared_size(path: str | os.PathLike[str]) -> tuple[int, int] | None:
    """(width, height) that the header of an image past Pillow's bomb limit declares, so that the
    error names its real size: Image.open refuses such a file, so each format's opener reads the
    header itself (no pixels are decoded)."""
    try:
        with open(path, "rb") as fh:
            prefix = fh.read(16)
            for fmt in Image.ID:
                factory, accept = Image.OPEN[fmt]
                ok = True if accept is None else accept(prefix)
                if not ok or isinstance(ok, str):
                    continue
                fh.seek(0)
                try:
                    return factory(fh, str(path)).size
                except Exception:  # noqa: BLE001, S112 - not this format: try the next
                    continue
    except OSError:
        return None
    return None


def read_image(path: str | os.PathLike[str], gray: bool, max_pixels: int | None = None) -> np.ndarray | None:
    """uint8 (H,W) if ``gray`` else RGB (H,W,3); None if the file is not a decodable image.

    An image over the pixel limit (:func:`max_image_pixels`) is an InputError, raised before decoding.
    """
    size = header_size(path)
    if size is not None:
        check_pixels(size[0], size[1], str(path), max_pixels)
    try:
        buf = np.fromfile(str(path), dtype=np.uint8)  # fromfile + imdecode: non-ASCII paths work
    except OSError:
        return None
    img = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE if gray else cv2.IMREAD_COLOR) if buf.size else None
    if img is not None:
        return img if gray else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    try:  # formats OpenCV lacks (GIF, some TIFF flavours)
        with Image.open(path) as im:
            rgb = pil_to_rgb(im)
            return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if gray else rgb
    except Exception:  # noqa: BLE001 - any decoder failure means "not an image" here
        return None


def pil_to_rgb(im: Image.Image) -> np.ndarray:
    """RGB uint8 (H, W, 3) from any PIL image, as OpenCV decodes the same file.

    ``convert("RGB")`` clips 16- and 32-bit grayscale (modes I;16, I, F) at 255, which turns a
    16-bit PNG white; here such images keep their top 8 bits (OpenCV's ``IMREAD_COLOR``).
    """
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im)
        if im.mode == "F":
            a = np.clip(a, 0, 255) if a.size and a.max() > 1.0 else np.clip(a * 255.0, 0, 255)
        elif a.size and (im.mode.startswith("I;16") or a.max() > 255):
            a = np.clip(a, 0, 65535) >> 8  # 16-bit range: keep the high byte
        gray = np.asarray(a, dtype=np.uint8)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    return np.asarray(im.convert("RGB"))


def fit(img: np.ndarray, size: int, box: Box | None = None, center_crop: float = 1.0) -> np.ndarray:
    """Crop (face ``box`` clipped to the image, or a centred square fraction) and resize to size x size.

    Area interpolation when shrinking (no aliasing), bilinear when enlarging.
    """
    h, w = img.shape[:2]
    if box is not None:
        x, y, bw, bh = (int(round(v)) for v in box)
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + bw, w), min(y + bh, h)
        if x1 > x0 and y1 > y0:
            img = img[y0:y1, x0:x1]
    if center_crop < 1.0:
        h, w = img.shape[:2]
        side = max(1, int(round(min(h, w) * center_crop)))
        y0, x0 = (h - side) // 2, (w - side) // 2
        img = img[y0:y0 + side, x0:x0 + side]
    h, w = img.shape[:2]
    if (h, w) == (size, size):
        return np.ascontiguousarray(img)
    interp = cv2.INTER_AREA if h >= size and w >= size else cv2.INTER_LINEAR
    return cv2.resize(img, (size, size), interpolation=interp)


def decode_many(paths: Sequence[str | Path], size: int, gray: bool, boxes: Sequence[Box] | None = None,
                center_crop: float = 1.0, workers: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Decode and fit every path: (uint8 images of the readable ones, bool mask of which were readable)."""
    n = len(paths)
    shape = (n, size, size) if gray else (n, size, size, 3)
    out = np.zeros(shape, np.uint8)
    ok = np.zeros(n, bool)

    def one(i: int) -> None:
        try:
            img = read_image(paths[i], gray)
        except InputError:  # over the pixel limit: skipped like an unreadable file
            return
        if img is None or img.size == 0:
            return
        out[i] = fit(img, size, None if boxes is None else boxes[i], center_crop)
        ok[i] = True

    workers = workers or min(8, os.cpu_count() or 1)
    if n < 64 or workers == 1:
        for i in range(n):
            one(i)
    else:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(one, range(n), chunksize=64))
    if ok.all():
        return out, ok
    keep = np.flatnonzero(ok)  # compact in place: no second full-size copy for big datasets
    for j, i in enumerate(keep):
        if i != j:
            out[j] = out[i]
    return out[:len(keep)], ok
