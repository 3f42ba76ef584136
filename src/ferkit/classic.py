"""The classic route: hand-made HOG and LBP features with an SVM, as a model ferkit can load.

The textbook pipeline (../shared/docs/methods.md section 1) before deep networks, and the
cheapest baseline in the model zoo::

    48x48 gray face -> HOG (gradient-orientation histograms, block-normalised)
                    ++ uniform LBP histograms on a grid of cells
                    -> standardise -> optional PCA -> SVM -> calibrated probabilities

**Features.** HOG as ``skimage.feature.hog`` (9 orientations, 8x8-pixel cells, 2x2-cell blocks,
L2-Hys: 900 numbers at 48 px); LBP as ``skimage.feature.local_binary_pattern(P=8, R=1,
"uniform")`` (10 codes), histogrammed on a 6x6 grid of cells and normalised per cell (360
numbers). :meth:`FeatureSettings.dim` gives the length for any setting.

**Classifiers** (``svm=``), both wrapped in ``CalibratedClassifierCV(method="sigmoid", cv=3)``
(a Platt sigmoid per class on the one-vs-rest scores, rows normalised to sum to 1):

* ``linear`` (default): ``LinearSVC`` (primal solver, C=0.001), one per fold, averaged
  (``ensemble=True``). On all 28,709 FER2013 Training faces it fits in about 4 minutes on one
  CPU thread and the file is 0.22 MB: the bundled ``fer2013-hoglbp-svm-48g-7``.
* ``rbf``: ``SVC(kernel="rbf")`` on 150 PCA components, fitted once on everything and calibrated
  on cross-validated scores (``ensemble=False``; what scikit-learn 1.9 recommends instead of the
  deprecated ``probability=True``). More accurate per training face (on 5,000 FER2013 faces it
  matches the linear model trained on all of them) but libsvm's cost grows about quadratically
  with the faces and the file holds the support vectors (7 MB at 5,000 faces): for smaller
  datasets or ``limit``.

Other choices are options of :func:`train_classic`: ``pca`` before either SVM and ``c`` (also
``ferkit train-classic --pca/--c``), the feature settings (cell sizes, block norm, LBP radius,
``nri_uniform``).

**Files without pickle.** ferkit never unpickles a user's file, so a model is an ``.npz`` of
plain arrays (``np.load(allow_pickle=False)``) with a JSON ``meta`` entry (format tag
``ferkit-classic/1``, labels, preprocessing, feature settings, metrics). Inference recomputes
everything from those arrays in numpy: the features (a port of scikit-image's HOG and LBP that
reproduces them bit for bit, tested against scikit-image), the scaler and PCA, the SVM decision
function (for ``rbf`` the kernel expansion and scikit-learn's one-vs-one to one-vs-rest
transform) and the calibration. scikit-learn and scikit-image are needed only to train
(``pip install 'ferkit[classic]'``).
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ferkit.errors import ConfigError, InputError

FORMAT = "ferkit-classic/1"
FEATURES = ("hog", "lbp")
SVM_KINDS = ("linear", "rbf")
HOG_NORMS = ("L1", "L1-sqrt", "L2", "L2-Hys")
LBP_METHODS = ("uniform", "nri_uniform")
#: default PCA components per classifier (None: no PCA)
DEFAULT_PCA: dict[str, int | None] = {"linear": None, "rbf": 150}
#: default SVM regularisation. linear: chosen on FER2013 Training alone (fit on 19,000 faces, scored on the
#: other 9,709: C=0.0003 45.4 %, 0.001 45.6 %, 0.003 45.0 %); rbf: scikit-learn's usual range, not tuned
DEFAULT_C = {"linear": 0.001, "rbf": 3.0}


# ---- features -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FeatureSettings:
    """How a face becomes a feature vector (saved with the model, so inference computes the same)."""

    features: tuple[str, ...] = FEATURES
    image_size: int = 48
    hog_orientations: int = 9
    hog_cell: int = 8  # pixels per cell (side)
    hog_block: int = 2  # cells per block (side)
    hog_norm: str = "L2-Hys"
    lbp_points: int = 8
    lbp_radius: float = 1.0
    lbp_method: str = "uniform"
    lbp_grid: int = 6  # cells per side for the LBP histograms

    def __post_init__(self) -> None:
        feats = tuple(self.features)
        object.__setattr__(self, "features", feats)
        unknown = [f for f in feats if f not in FEATURES]
        if not feats or unknown or len(set(feats)) != len(feats):
            raise ConfigError(f"features must be a non-empty list of {', '.join(FEATURES)} (got {','.join(feats)})")
        if self.hog_norm not in HOG_NORMS:
            raise ConfigError(f"unknown HOG block norm '{self.hog_norm}' ({', '.join(HOG_NORMS)})")
        if self.lbp_method not in LBP_METHODS:
            raise ConfigError(f"unknown LBP method '{self.lbp_method}' ({', '.join(LBP_METHODS)})")
        if "hog" in feats and self.image_size // self.hog_cell < self.hog_block:
            raise ConfigError(f"HOG needs at least {self.hog_block} cells of {self.hog_cell} px per side "
                              f"(image size {self.image_size})")
        if "lbp" in feats and not 1 <= self.lbp_grid <= self.image_size:
            raise ConfigError(f"LBP grid must be 1..{self.image_size} cells per side (got {self.lbp_grid})")

    @property
    def lbp_bins(self) -> int:
        p = self.lbp_points
        return p + 2 if self.lbp_method == "uniform" else p * (p - 1) + 3

    @property
    def hog_dim(self) -> int:
        cells = self.image_size // self.hog_cell
        blocks = cells - self.hog_block + 1
        return blocks * blocks * self.hog_block * self.hog_block * self.hog_orientations

    @property
    def lbp_dim(self) -> int:
        return self.lbp_grid * self.lbp_grid * self.lbp_bins

    def dim(self) -> int:
        """Length of the feature vector: HOG (blocks^2 x cells-per-block^2 x orientations) + LBP (grid^2 x bins)."""
        return sum(self.hog_dim if f == "hog" else self.lbp_dim for f in self.features)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["features"] = list(self.features)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureSettings:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: (tuple(v) if k == "features" else v) for k, v in d.items() if k in known})


def hog_features(images: np.ndarray, s: FeatureSettings) -> np.ndarray:
    """HOG of a batch (N, H, W) float64, identical to ``skimage.feature.hog`` image by image.

    scikit-image (0.22 to 0.26) sums each cell's magnitudes pixel by pixel in single precision
    and divides by the cell's area in single precision; that rounding is reproduced, so the
    features agree to ~1e-15, not just roughly.
    """
    x = np.asarray(images, np.float64)
    n, h, w = x.shape
    g_row = np.zeros_like(x)
    g_col = np.zeros_like(x)
    g_row[:, 1:-1, :] = x[:, 2:, :] - x[:, :-2, :]
    g_col[:, :, 1:-1] = x[:, :, 2:] - x[:, :, :-2]
    mag = np.hypot(g_col, g_row)
    ori = np.rad2deg(np.arctan2(g_row, g_col)) % 180
    o, c, b = s.hog_orientations, s.hog_cell, s.hog_block
    per = 180.0 / o
    ends = per * np.arange(o, dtype=np.float64)
    starts = per * (np.arange(o, dtype=np.float64) + 1)
    bins = np.clip(np.searchsorted(ends, ori, side="right") - 1, 0, o - 1)
    mag = np.where((ori >= ends[bins]) & (ori < starts[bins]), mag, 0.0)  # an angle in no bin adds nothing
    ncr, ncc = h // c, w // c
    hist = np.zeros((n, ncr, ncc, o), np.float32)
    for dy in range(c):  # row by row, then column by column within the cell, as scikit-image adds
        for dx in range(c):
            m = mag[:, dy:dy + ncr * c:c, dx:dx + ncc * c:c][..., None]
            k = bins[:, dy:dy + ncr * c:c, dx:dx + ncc * c:c][..., None]
            cur = np.take_along_axis(hist, k, -1)
            np.put_along_axis(hist, k, (cur.astype(np.float64) + m).astype(np.float32), -1)
    hist64 = (hist / np.float32(c * c)).astype(np.float64)
    win = np.lib.stride_tricks.sliding_window_view(hist64, (b, b), axis=(1, 2))  # (n, br, bc, o, b, b)
    blocks = np.ascontiguousarray(win.transpose(0, 1, 2, 4, 5, 3))  # (n, br, bc, b, b, o) as skimage
    eps = 1e-5
    axes = (3, 4, 5)
    if s.hog_norm == "L1":
        out = blocks / (np.abs(blocks).sum(axes, keepdims=True) + eps)
    elif s.hog_norm == "L1-sqrt":
        out = np.sqrt(blocks / (np.abs(blocks).sum(axes, keepdims=True) + eps))
    else:
        out = blocks / np.sqrt((blocks ** 2).sum(axes, keepdims=True) + eps ** 2)
        if s.hog_norm == "L2-Hys":
            out = np.minimum(out, 0.2)
            out = out / np.sqrt((out ** 2).sum(axes, keepdims=True) + eps ** 2)
    return out.reshape(n, -1)


def lbp_codes(images: np.ndarray, points: int = 8, radius: float = 1.0, method: str = "uniform") -> np.ndarray:
    """LBP codes (N, H, W) int of a batch, identical to ``skimage.feature.local_binary_pattern``.

    Same sampling (bilinear, zero outside the image, offsets rounded to 5 decimals), the same
    floating-point operations in the same order, and scikit-image's definition of "uniform"
    (at most two 0/1 changes along the P samples, not counting the wrap-around pair).
    """
    x = np.asarray(images, np.float64)
    n, h, w = x.shape
    p = int(points)
    r = float(np.float32(radius))  # scikit-image takes the radius as a C float
    ang = 2 * np.pi * np.arange(p, dtype=np.double) / p
    rp = np.round(-r * np.sin(ang), 5)
    cp = np.round(r * np.cos(ang), 5)
    pad = int(np.ceil(max(np.abs(rp).max(), np.abs(cp).max()))) + 1
    padded = np.zeros((n, h + 2 * pad, w + 2 * pad))
    padded[:, pad:pad + h, pad:pad + w] = x
    rows, cols = np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64)
    signs = np.empty((p, n, h, w), bool)
    for i in range(p):
        rr, cc = rows + rp[i], cols + cp[i]
        minr, maxr, minc, maxc = (np.floor(rr).astype(np.int64), np.ceil(rr).astype(np.int64),
                                  np.floor(cc).astype(np.int64), np.ceil(cc).astype(np.int64))
        dr = (rr - minr)[:, None]
        dc = (cc - minc)[None, :]

        def at(ri: np.ndarray, ci: np.ndarray) -> np.ndarray:
            dri, dci = ri - np.arange(h), ci - np.arange(w)
            if (dri == dri[0]).all() and (dci == dci[0]).all():  # a constant shift: a slice
                return padded[:, pad + dri[0]:pad + dri[0] + h, pad + dci[0]:pad + dci[0] + w]
            return padded[:, (ri + pad)[:, None], (ci + pad)[None, :]]

        top = (1 - dc) * at(minr, minc) + dc * at(minr, maxc)
        bottom = (1 - dc) * at(maxr, minc) + dc * at(maxr, maxc)
        signs[i] = (1 - dr) * top + dr * bottom - x >= 0
    ones = signs.sum(0)
    changes = (signs[:-1] != signs[1:]).sum(0)
    if method == "uniform":
        return np.where(changes <= 2, ones, p + 1)
    if method != "nri_uniform":
        raise ConfigError(f"unknown LBP method '{method}' ({', '.join(LBP_METHODS)})")
    first_one = np.argmax(signs, 0)
    first_zero = np.argmax(~signs, 0)
    rot = np.where(first_one == 0, ones - first_zero, p - first_one)
    code = 1 + (ones - 1) * p + rot
    code = np.where(ones == 0, 0, np.where(ones == p, p * (p - 1) + 1, code))
    return np.where(changes <= 2, code, p * (p - 1) + 2)


def lbp_histograms(codes: np.ndarray, s: FeatureSettings) -> np.ndarray:
    """Per-cell LBP code histograms (N, grid^2 x bins), each cell's normalised to sum to 1."""
    n, h, w = codes.shape
    g, nb = s.lbp_grid, s.lbp_bins
    row_cell = (np.arange(h) * g) // h
    col_cell = (np.arange(w) * g) // w
    cell = row_cell[:, None] * g + col_cell[None, :]
    area = np.bincount(cell.ravel(), minlength=g * g).astype(np.float64)
    idx = (np.arange(n)[:, None, None] * (g * g) + cell[None]) * nb + codes.astype(np.int64)
    hist = np.bincount(idx.ravel(), minlength=n * g * g * nb).reshape(n, g * g, nb).astype(np.float64)
    return (hist / area[None, :, None]).reshape(n, -1)


def _skimage_features(x: np.ndarray, s: FeatureSettings) -> list[np.ndarray]:
    """The same features computed image by image with scikit-image itself (the reference)."""
    try:
        from skimage.feature import hog, local_binary_pattern
    except ImportError as exc:
        raise InputError(f"the scikit-image backend needs scikit-image ({exc.name} is missing): "
                         "pip install 'ferkit[classic]'") from None
    parts = []
    for f in s.features:
        if f == "hog":
            parts.append(np.stack([hog(im, orientations=s.hog_orientations, pixels_per_cell=(s.hog_cell,) * 2,
                                       cells_per_block=(s.hog_block,) * 2, block_norm=s.hog_norm) for im in x]))
        else:
            with warnings.catch_warnings():  # float input: our pixels are whole numbers unless resized
                warnings.simplefilter("ignore", UserWarning)
                codes = np.stack([local_binary_pattern(im, s.lbp_points, s.lbp_radius, s.lbp_method) for im in x])
            parts.append(lbp_histograms(codes.astype(np.int64), s))
    return parts


def extract_features(images: np.ndarray, s: FeatureSettings, backend: str = "numpy",
                     chunk: int = 1024) -> np.ndarray:
    """Feature vectors (N, s.dim()) float64 for gray faces (N, size, size) (uint8 or float, 0-255).

    ``backend="numpy"``: ferkit's batched port (what inference uses); ``"skimage"``: scikit-image
    image by image (the reference definition; training can use it, see :func:`train_classic`).
    """
    if backend not in ("numpy", "skimage"):
        raise ConfigError(f"unknown feature backend '{backend}' (numpy, skimage)")
    x = np.asarray(images)
    if x.ndim != 3 or x.shape[1:] != (s.image_size, s.image_size):
        raise InputError(f"features need gray faces (N, {s.image_size}, {s.image_size}) (got shape {x.shape})")
    out = np.empty((len(x), s.dim()), np.float64)
    for i in range(0, len(x), chunk):
        xb = np.asarray(x[i:i + chunk], np.float64)
        if backend == "skimage":
            parts = _skimage_features(xb, s)
        else:
            parts = [hog_features(xb, s) if f == "hog" else
                     lbp_histograms(lbp_codes(xb, s.lbp_points, s.lbp_radius, s.lbp_method), s) for f in s.features]
        out[i:i + len(xb)] = np.concatenate(parts, 1)
    return out


def as_gray_faces(images: np.ndarray | torch.Tensor, size: int) -> np.ndarray:
    """(N, size, size) gray pixel values 0-255 from uint8 (N,H,W) / (N,H,W,3) or a (N,C,H,W) tensor.

    Colour and size are converted as the CNN models' inputs are (BT.601 luma, antialiased
    bilinear resize), so a classic model sees the same face a CNN would.
    """
    if not isinstance(images, torch.Tensor):
        arr = np.asarray(images)
        if arr.ndim == 2:
            arr = arr[None]
        if arr.ndim == 3 and arr.shape[1:] == (size, size):
            return arr
        if arr.ndim not in (3, 4):
            raise InputError(f"faces must be (N, H, W) or (N, H, W, 3) (got shape {arr.shape})")
        from ferkit.engine.batches import images_to_tensor

        images = images_to_tensor(arr, 1)
    t = images
    if t.ndim != 4:
        raise InputError(f"a face tensor must be (N, C, H, W) (got shape {tuple(t.shape)})")
    if t.shape[1] != 1:
        from ferkit.augment import to_channels

        t = to_channels(t.float(), 1)
    if t.shape[-2:] != (size, size):
        from ferkit.augment import build_augment

        t = build_augment("eval", size, 1)(t.float() / 255.0) * 255.0
    return t[:, 0].cpu().numpy()


# ---- inference ------------------------------------------------------------------------------------
def _expit(z: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-z)) without overflow warnings (as scipy.special.expit)."""
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    e = np.exp(z[~pos])
    out[~pos] = e / (1.0 + e)
    return out


class ClassicModel:
    """A fitted HOG/LBP + SVM model with :class:`~ferkit.engine.model_io.LoadedModel`'s inference API,
    computed in numpy from the arrays of its ``.npz`` file (no scikit-learn, no scikit-image)."""

    has_uncertainty = False

    def __init__(self, meta: dict[str, Any], arrays: dict[str, np.ndarray], source: str = "") -> None:
        self.meta = meta
        self.arrays = {k: np.asarray(v) for k, v in arrays.items()}
        self.settings = FeatureSettings.from_dict(meta["features"])
        self.classes: tuple[str, ...] = tuple(meta["classes"])
        size = self.settings.image_size
        self.preprocess: dict[str, Any] = {"image_size": size, "channels": 1, "mean": 0.0, "std": 1.0,
                                           "tta_flip": bool(meta.get("preprocess", {}).get("tta_flip", False))}
        self.metrics: dict[str, Any] = dict(meta.get("metrics", {}))
        self.source = source
        self.device = torch.device("cpu")
        self.svm: str = meta["svm"]["kind"]

    def __repr__(self) -> str:
        return (f"ClassicModel({self.svm} SVM on {'+'.join(self.settings.features)}, {len(self.classes)} classes, "
                f"{self.settings.dim()} features, source={self.source!r})")

    # -- the pieces, exposed for tests and analyses
    def features(self, images: np.ndarray | torch.Tensor) -> np.ndarray:
        """Raw feature vectors (N, D) of faces in any form :meth:`predict_probs` takes."""
        return extract_features(as_gray_faces(images, self.settings.image_size), self.settings)

    def transform(self, feats: np.ndarray) -> np.ndarray:
        """Standardised (and PCA-projected) features, as the SVM saw them in training."""
        a = self.arrays
        x = (np.asarray(feats, np.float64) - a["scaler_mean"]) / a["scaler_scale"]
        if "pca_components" in a:
            x = x @ a["pca_components"].T - a["pca_mean"][None] @ a["pca_components"].T
            if "pca_scale" in a:
                x = x / a["pca_scale"]
        return x

    def decision_function(self, z: np.ndarray) -> np.ndarray:
        """One-vs-rest SVM scores (M, N, K') of transformed features, one slice per fold model
        (K' = 1 for two classes), as the estimators' ``decision_function`` gives them."""
        a = self.arrays
        if self.svm == "linear":
            return np.einsum("nd,mkd->mnk", z, a["coef"]) + a["intercept"][:, None, :]
        return self._rbf_ovr(z)[None]

    def _rbf_ovr(self, z: np.ndarray) -> np.ndarray:
        """``SVC(kernel="rbf").decision_function`` (shape "ovr"): libsvm's one-vs-one scores,
        then scikit-learn's votes plus squashed summed confidences."""
        a = self.arrays
        sv = a["support_vectors"]
        gamma = float(self.meta["svm"]["gamma"])
        kern = np.exp(-gamma * ((z * z).sum(1)[:, None] + (sv * sv).sum(1)[None, :] - 2.0 * (z @ sv.T)))
        nsv = a["n_support"].astype(np.int64)
        start = np.concatenate([[0], np.cumsum(nsv)])
        coef, rho = a["dual_coef"], -a["intercept"]
        k = len(nsv)
        dec, pair = np.empty((len(z), k * (k - 1) // 2)), 0
        for i in range(k):
            for j in range(i + 1, k):
                si, sj = slice(start[i], start[i + 1]), slice(start[j], start[j + 1])
                dec[:, pair] = kern[:, si] @ coef[j - 1, si] + kern[:, sj] @ coef[i, sj] - rho[pair]
                pair += 1
        if k == 2:
            return -dec  # scikit-learn flips the binary sign
        votes, conf, pair = np.zeros((len(z), k)), np.zeros((len(z), k)), 0
        for i in range(k):
            for j in range(i + 1, k):
                conf[:, i] += dec[:, pair]
                conf[:, j] -= dec[:, pair]
                votes[:, i] += dec[:, pair] >= 0
                votes[:, j] += dec[:, pair] < 0
                pair += 1
        return votes + conf / (3 * (np.abs(conf) + 1))

    def probs_from_transformed(self, z: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (N, K) from :meth:`transform`'s output, as
        ``CalibratedClassifierCV(method="sigmoid").predict_proba``: a Platt sigmoid per class,
        rows normalised to sum to 1, averaged over the fold models."""
        a = self.arrays
        k = len(self.classes)
        dec = self.decision_function(z)
        total = np.zeros((len(z), k))
        for m in range(dec.shape[0]):
            p = _expit(-(a["calib_a"][m] * dec[m] + a["calib_b"][m]))
            if k == 2:
                p = np.concatenate([1.0 - p, p], 1)
            else:
                den = p.sum(1, keepdims=True)
                p = np.divide(p, den, out=np.full_like(p, 1.0 / k), where=den != 0)
            total += p
        return total / dec.shape[0]

    # -- the LoadedModel API
    def classify(self, images: np.ndarray | torch.Tensor, batch_size: int = 512,
                 tta_flip: bool | None = None, tta_crop: float | None = None) -> tuple[np.ndarray, None]:
        """Probabilities (N, K) and None (an SVM has no uncertainty of its own: the Recognizer then
        reports the normalised entropy), for uint8 faces (N,H,W), (N,H,W,3) or a (N,C,H,W) tensor.
        No multi-crop averaging: HOG cells and LBP grids are laid on the whole face."""
        if tta_crop:
            raise InputError("multi-crop averaging (tta_crop) is for networks; the classic HOG/LBP model "
                             "has none (set it to 0)")
        x = as_gray_faces(images, self.settings.image_size)
        flip = self.preprocess.get("tta_flip", False) if tta_flip is None else tta_flip
        parts = []
        for i in range(0, len(x), max(1, int(batch_size))):
            xb = x[i:i + batch_size]
            p = self.probs_from_transformed(self.transform(extract_features(xb, self.settings)))
            if flip:
                flipped = np.ascontiguousarray(xb[:, :, ::-1])
                p = 0.5 * (p + self.probs_from_transformed(self.transform(extract_features(flipped, self.settings))))
            parts.append(p)
        return (np.concatenate(parts) if parts else np.zeros((0, len(self.classes)))), None

    def predict_probs(self, images: np.ndarray | torch.Tensor, batch_size: int = 512,
                      tta_flip: bool | None = None, tta_crop: float | None = None) -> np.ndarray:
        """Probabilities (N, K) in ``classes`` order, as :meth:`LoadedModel.predict_probs`."""
        return self.classify(images, batch_size, tta_flip, tta_crop)[0]

    # -- files
    def save(self, path: str | Path) -> Path:
        """Write the model as an ``.npz`` of arrays plus JSON ``meta`` (atomically; no pickle)."""
        from ferkit.atomic import atomic_write

        path = Path(path)
        if path.suffix.lower() != ".npz":
            raise InputError(f"a classic model is saved as .npz (got {path.name})")
        payload = {**self.arrays, "meta": np.array(json.dumps(self.meta, default=float))}
        return atomic_write(path, lambda fh: np.savez_compressed(fh, **payload))


#: arrays each classifier's file must hold
_REQUIRED = {"linear": ("scaler_mean", "scaler_scale", "coef", "intercept", "calib_a", "calib_b"),
             "rbf": ("scaler_mean", "scaler_scale", "support_vectors", "dual_coef", "intercept", "n_support",
                     "calib_a", "calib_b")}


def load_classic(path: str | Path) -> ClassicModel:
    """A :class:`ClassicModel` from its ``.npz`` (``allow_pickle=False``); InputError for anything else."""
    import zipfile

    path = Path(path)
    if not path.is_file():
        raise InputError(f"model not found: {path}")
    if not zipfile.is_zipfile(path):
        raise InputError(f"cannot read {path}: not an .npz archive (a ferkit classic model is one)")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise InputError(f"cannot read {path} as a ferkit classic model (.npz): {str(exc).splitlines()[0]}") from None
    try:
        meta = json.loads(str(arrays.pop("meta")))
        if not str(meta.get("format", "")).startswith("ferkit-classic/"):
            raise ValueError
    except (KeyError, ValueError, AttributeError):
        raise InputError(f"{path} is not a ferkit classic model (no '{FORMAT}' meta entry)") from None
    if meta["format"] != FORMAT:
        raise InputError(f"{path} has format {meta['format']!r}; this ferkit reads {FORMAT!r}")
    kind = meta.get("svm", {}).get("kind")
    missing = [k for k in _REQUIRED.get(kind, ()) if k not in arrays]
    if kind not in _REQUIRED or missing:
        raise InputError(f"{path}: incomplete classic model (svm {kind!r}, missing {', '.join(missing) or 'kind'})")
    try:
        model = ClassicModel(meta, arrays, str(path))
        model.probs_from_transformed(model.transform(np.zeros((1, model.settings.dim()))))  # shapes agree
    except (KeyError, TypeError, ValueError, ConfigError) as exc:
        raise InputError(f"{path}: inconsistent classic model ({str(exc).splitlines()[0]})") from None
    return model


# ---- training -------------------------------------------------------------------------------------
def _require_sklearn() -> None:
    try:
        import sklearn  # noqa: F401
    except ImportError:
        raise InputError("training a classic model needs scikit-learn: pip install 'ferkit[classic]'") from None


def fit_estimators(x: np.ndarray, y: np.ndarray, svm: str = "linear", c: float | None = None,
                   pca: int | None = None, calibration_cv: int = 3, seed: int = 0,
                   max_iter: int = 2000) -> dict[str, Any]:
    """Fit the scikit-learn scaler, PCA (if ``pca``) and SVM on features ``x`` and labels ``y``.

    Returns ``{"scaler", "pca", "svm"}`` (the fitted estimators; ``pca`` may be None).
    """
    _require_sklearn()
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC, LinearSVC

    if svm not in SVM_KINDS:
        raise ConfigError(f"unknown SVM '{svm}' ({', '.join(SVM_KINDS)})")
    c = DEFAULT_C[svm] if c is None else float(c)
    scaler = StandardScaler().fit(x)
    z = scaler.transform(x)
    reducer = None
    if pca:
        if not 0 < int(pca) <= min(z.shape):
            raise ConfigError(f"PCA components must be 1..{min(z.shape)} (got {pca})")
        reducer = PCA(n_components=int(pca), svd_solver="randomized", random_state=seed).fit(z)
        z = reducer.transform(z)
    if svm == "linear":  # one LinearSVC per fold, each calibrated on its held-out third, averaged
        base: Any = LinearSVC(C=c, dual=False, max_iter=max_iter, random_state=seed)
        clf = CalibratedClassifierCV(base, method="sigmoid", cv=calibration_cv, ensemble=True)
    else:  # one SVC on everything, calibrated on cross-validated scores (what replaces probability=True)
        base = SVC(C=c, kernel="rbf", gamma="scale", decision_function_shape="ovr", cache_size=500)
        clf = CalibratedClassifierCV(base, method="sigmoid", cv=calibration_cv, ensemble=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        from sklearn.exceptions import ConvergenceWarning

        warnings.simplefilter("ignore", category=ConvergenceWarning)
        clf.fit(z, y)
    return {"scaler": scaler, "pca": reducer, "svm": clf}


def model_from_estimators(est: dict[str, Any], settings: FeatureSettings, classes: Sequence[str],
                          meta: dict[str, Any] | None = None) -> ClassicModel:
    """A :class:`ClassicModel` holding the fitted estimators' parameters as plain arrays.

    ``classes`` are the names of the labels ``0..K-1`` the estimators were fitted on; the
    estimators' ``classes_`` must be exactly those indices.
    """
    scaler, reducer, clf = est["scaler"], est["pca"], est["svm"]
    k = len(classes)
    if list(np.asarray(clf.classes_).tolist()) != list(range(k)):
        raise InputError(f"the classifier saw labels {clf.classes_.tolist()}, expected 0..{k - 1}")
    arrays: dict[str, np.ndarray] = {"scaler_mean": scaler.mean_.astype(np.float64),
                                     "scaler_scale": scaler.scale_.astype(np.float64)}
    if reducer is not None:
        arrays["pca_components"] = reducer.components_.astype(np.float64)
        arrays["pca_mean"] = reducer.mean_.astype(np.float64)
        if reducer.whiten:
            arrays["pca_scale"] = np.sqrt(reducer.explained_variance_)
    cals = clf.calibrated_classifiers_
    arrays["calib_a"] = np.array([[cal.a_ for cal in cc.calibrators] for cc in cals], np.float64)
    arrays["calib_b"] = np.array([[cal.b_ for cal in cc.calibrators] for cc in cals], np.float64)
    base = cals[0].estimator
    if hasattr(base, "coef_"):
        arrays["coef"] = np.stack([cc.estimator.coef_ for cc in cals]).astype(np.float64)
        arrays["intercept"] = np.stack([np.atleast_1d(cc.estimator.intercept_) for cc in cals]).astype(np.float64)
        svm_meta: dict[str, Any] = {"kind": "linear", "C": float(base.C), "folds": len(cals),
                                    "estimator": "CalibratedClassifierCV(LinearSVC, sigmoid, ensemble=True)"}
    else:
        if len(cals) != 1:
            raise InputError("an rbf model is saved from CalibratedClassifierCV(SVC, ensemble=False)")
        arrays.update(support_vectors=base.support_vectors_.astype(np.float64),
                      dual_coef=np.asarray(base._dual_coef_, np.float64),
                      intercept=np.asarray(base._intercept_, np.float64),
                      n_support=np.asarray(base._n_support, np.int64))
        svm_meta = {"kind": "rbf", "C": float(base.C), "gamma": float(base._gamma),
                    "support_vectors": int(base.support_vectors_.shape[0]),
                    "estimator": "CalibratedClassifierCV(SVC(rbf), sigmoid, ensemble=False)"}
    if reducer is not None:
        svm_meta["pca"] = int(reducer.n_components_)
    full = {"format": FORMAT, "classes": list(classes), "features": settings.to_dict(), "svm": svm_meta,
            "preprocess": {"image_size": settings.image_size, "channels": 1, "tta_flip": False}, "metrics": {}}
    full.update(meta or {})
    return ClassicModel(full, arrays)


@dataclass
class TrainReport:
    """What :func:`train_classic` measured (seconds, counts), for logs and benchmarks."""

    n: int = 0
    feature_dim: int = 0
    feature_s: float = 0.0
    fit_s: float = 0.0
    backend: str = "numpy"
    port_max_abs_diff: float | None = None
    #: the fitted scikit-learn estimators (not saved; for checks against the numpy inference)
    estimators: dict[str, Any] = field(default_factory=dict, repr=False)


def train_classic(images: np.ndarray, labels: np.ndarray, classes: Sequence[str], *,
                  features: Sequence[str] = FEATURES, svm: str = "linear", c: float | None = None,
                  pca: int | None | str = "auto", calibration_cv: int = 3, seed: int = 0,
                  backend: str = "auto", settings: dict[str, Any] | None = None,
                  progress: Callable[[str], None] | None = None) -> tuple[ClassicModel, TrainReport]:
    """Fit a classic model on faces (N, H, W[, 3]) uint8 and labels 0..K-1 (-1 rows are skipped).

    ``backend="auto"`` computes the training features with scikit-image (the reference) when it
    is installed, after checking on the first 64 faces that ferkit's numpy port (what inference
    uses) gives the same numbers; without scikit-image the port is used throughout.
    ``pca="auto"``: :data:`DEFAULT_PCA` for the chosen SVM; 0 or None: no PCA.
    """
    _require_sklearn()
    say = progress or (lambda _msg: None)
    s = FeatureSettings(features=tuple(features), **(settings or {}))
    if svm not in SVM_KINDS:
        raise ConfigError(f"unknown SVM '{svm}' ({', '.join(SVM_KINDS)})")
    labels = np.asarray(labels, np.int64)
    keep = labels >= 0
    k = len(classes)
    counts = np.bincount(labels[keep], minlength=k)
    short = [classes[i] for i in range(k) if counts[i] < max(calibration_cv, 2)]
    if short:
        raise InputError(f"every class needs at least {max(calibration_cv, 2)} labelled faces to train "
                         f"(too few: {', '.join(short)}; counts {counts.tolist()})")
    x = as_gray_faces(np.asarray(images)[keep] if not keep.all() else images, s.image_size)
    y = labels[keep]
    rep = TrainReport(n=int(len(y)), feature_dim=s.dim())
    if backend == "auto":
        try:
            import skimage  # noqa: F401

            backend = "skimage"
        except ImportError:
            backend = "numpy"
    rep.backend = backend
    if backend == "skimage":
        sample = np.asarray(x[:64], np.float64)
        diff = float(np.abs(extract_features(sample, s, "skimage") - extract_features(sample, s, "numpy")).max())
        rep.port_max_abs_diff = diff
        if diff > 1e-9:
            raise InputError(f"ferkit's HOG/LBP port differs from this scikit-image's by {diff:.2e}; "
                             "train with backend='numpy' so training and inference agree")
    say(f"features: {len(y)} faces, {'+'.join(s.features)} ({s.dim()} numbers each, {backend})")
    t0 = time.perf_counter()
    feats = extract_features(x, s, backend)
    rep.feature_s = time.perf_counter() - t0
    say(f"features done in {rep.feature_s:.1f} s; fitting the {svm} SVM")
    n_pca = DEFAULT_PCA[svm] if pca == "auto" else (int(pca) if pca else None)
    t0 = time.perf_counter()
    est = fit_estimators(feats, y, svm, c, n_pca, calibration_cv, seed)
    rep.fit_s = time.perf_counter() - t0
    rep.estimators = est
    say(f"SVM fitted in {rep.fit_s:.1f} s")
    import sklearn

    meta = {"training": {"n": rep.n, "class_counts": counts.tolist(), "feature_backend": backend,
                         "port_max_abs_diff": rep.port_max_abs_diff, "feature_s": round(rep.feature_s, 2),
                         "fit_s": round(rep.fit_s, 2), "seed": seed, "calibration_cv": calibration_cv,
                         "scikit_learn": sklearn.__version__}}
    return model_from_estimators(est, s, classes, meta), rep
