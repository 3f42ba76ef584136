"""The features a classifier sees, how well they separate the classes, and a t-SNE picture of them.

APSM's claim (methods.md section 3, Figure 5) is that its embedding clusters the expressions more
tightly than the baseline's. The picture is t-SNE; the number is the silhouette score of the
features themselves (t-SNE distorts distances, so its 2-D layout is only an illustration).

Silhouette uses **Euclidean** distance: the classifier on top of the features is linear, so
distances in feature space are what it separates, it is scikit-learn's default (the tests check
agreement with ``sklearn.metrics.silhouette_score``), and it is the distance t-SNE preserves.
``metric="cosine"`` is available for direction-only comparisons. scikit-learn is only needed for
t-SNE, imported when asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ferkit.errors import ConfigError, InputError


def embeddings(model: Any, images: np.ndarray | torch.Tensor, batch_size: int = 512) -> np.ndarray:
    """(N, D) features the classifier reads, for uint8 faces, with the model's own preprocessing.

    For APSM that is ``mu`` (inference classifies ``mu``, no sampling); for other methods the
    backbone's pooled embedding (``net.model.embed``). Batched, eval mode, no gradients; each row
    depends only on its image. ``model`` is a :class:`~ferkit.engine.model_io.LoadedModel`.
    """
    from ferkit.engine.batches import images_to_tensor

    net = getattr(model, "net", None)
    if net is None or not hasattr(model, "view"):
        raise InputError("embeddings need a torch model (a run directory, model.pt or checkpoint), not an ONNX file")
    if not hasattr(net, "heads") and not hasattr(getattr(net, "model", None), "embed"):
        raise InputError(f"{type(net).__name__} has no single feature space (an ensemble?): embeddings need one model")
    if not isinstance(images, torch.Tensor):
        images = images_to_tensor(images, int(model.preprocess["channels"]))
    was_training = net.training
    net.eval()
    parts = []
    try:
        with torch.inference_mode():
            for i in range(0, len(images), batch_size):
                x = model.view(images[i:i + batch_size].to(model.device))
                f = net.heads(x)[0] if hasattr(net, "heads") else net.model.embed(x)
                parts.append(f.float().cpu().numpy())
    finally:
        net.train(was_training)
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


def sample_rows(labels: Any, sample: int | None, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most ``sample`` labelled rows (label >= 0), drawn without replacement.

    Silhouette is O(N^2) in memory and time and t-SNE slower still, so both run on a seeded
    random subset; the same seed and labels give the same rows.
    """
    y = np.asarray(labels).astype(np.int64).ravel()
    idx = np.flatnonzero(y >= 0)
    if sample is not None and len(idx) > int(sample):
        idx = np.sort(np.random.default_rng(seed).choice(idx, int(sample), replace=False))
    return idx


def _distances(x: np.ndarray, metric: str) -> np.ndarray:
    if metric == "cosine":
        norm = np.linalg.norm(x, axis=1, keepdims=True)
        x = np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)
        return np.clip(1.0 - x @ x.T, 0.0, 2.0)
    if metric == "euclidean":
        sq = (x * x).sum(1)
        d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (x @ x.T), 0.0)
        np.fill_diagonal(d2, 0.0)
        return np.sqrt(d2)
    raise ValueError(f"metric must be 'euclidean' or 'cosine', not {metric!r}")


def silhouette(features: Any, labels: Any, sample: int | None = 2000, seed: int = 0,
               metric: str = "euclidean") -> float:
    """Mean silhouette coefficient of ``features`` grouped by ``labels``, in [-1, 1] (higher = tighter,
    better separated classes).

    For each row: ``a`` = mean distance to the other rows of its class, ``b`` = the smallest mean
    distance to another class, ``s = (b - a) / max(a, b)``; a row alone in its class scores 0
    (scikit-learn's conventions). Rows labelled -1 are left out; at most ``sample`` rows are used
    (:func:`sample_rows`). Raises ``ValueError`` with fewer than two classes.
    """
    x = np.asarray(features, np.float64)
    y = np.asarray(labels).astype(np.int64).ravel()
    if x.ndim != 2 or len(x) != len(y):
        raise ValueError(f"features {x.shape} and labels {y.shape} do not match: expected (N, D) and (N,)")
    idx = sample_rows(y, sample, seed)
    x, y = x[idx], y[idx]
    classes, y = np.unique(y, return_inverse=True)
    if not 2 <= len(classes) <= len(y) - 1:
        raise ValueError(f"silhouette needs 2 to n-1 classes, got {len(classes)} classes in {len(y)} rows")
    d = _distances(x, metric)
    onehot = np.eye(len(classes))[y]
    sums = d @ onehot  # (n, C): summed distance from each row to each class
    sizes = onehot.sum(0)
    own = sizes[y]
    a = np.divide(sums[np.arange(len(y)), y], own - 1, out=np.zeros(len(y)), where=own > 1)
    mean_other = sums / sizes
    mean_other[np.arange(len(y)), y] = np.inf
    b = mean_other.min(1)
    s = np.divide(b - a, np.maximum(a, b), out=np.zeros(len(y)), where=np.maximum(a, b) > 0)
    s[own <= 1] = 0.0
    return float(s.mean())


def tsne_plot(features: Any, labels: Any, classes: Sequence[str], path: str | Path, seed: int = 0,
              sample: int | None = 2000, title: str = "t-SNE of the features", perplexity: float = 30.0,
              metric: str = "euclidean", threads: int | None = None) -> dict[str, Any]:
    """A 2-D t-SNE scatter of the features coloured by class, the silhouette score in the title.

    Runs on the same seeded subset as :func:`silhouette` (at most ``sample`` labelled rows);
    features wider than 50 are first reduced to 50 dimensions by PCA (usual t-SNE practice: it
    removes noise and makes it several times faster). The silhouette is of the features, not of
    the 2-D map. ``threads`` caps the OpenMP threads of scikit-learn's t-SNE (through threadpoolctl):
    on a machine whose cores are busy, its spinning threads can make it 100 times slower than one
    thread. Returns ``{"path", "silhouette", "n", "metric", "perplexity"}``.
    """
    try:
        from sklearn.manifold import TSNE
    except ImportError:
        raise ConfigError("t-SNE needs scikit-learn: pip install scikit-learn") from None
    from ferkit.evaluation.plots import new_figure, save_figure

    x = np.asarray(features, np.float64)
    y = np.asarray(labels).astype(np.int64).ravel()
    idx = sample_rows(y, sample, seed)
    x, y = x[idx], y[idx]
    sil = silhouette(x, y, sample=None, metric=metric)
    if x.shape[1] > 50:
        xc = x - x.mean(0)
        _, _, vt = np.linalg.svd(xc, full_matrices=False)
        x = xc @ vt[:50].T
    perp = float(min(perplexity, max(1.0, (len(x) - 1) / 3.0)))
    tsne = TSNE(n_components=2, perplexity=perp, init="pca", random_state=seed)
    if threads:
        from threadpoolctl import threadpool_limits  # a scikit-learn dependency

        with threadpool_limits(int(threads)):
            xy = tsne.fit_transform(x)
    else:
        xy = tsne.fit_transform(x)

    fig = new_figure((6.2, 5.4))
    ax = fig.add_subplot()
    cmap = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c",
            "#ccb974", "#64b5cd", "#1b9e77"]
    for k in np.unique(y):
        pts = xy[y == k]
        name = str(classes[k]) if k < len(classes) else str(k)
        ax.scatter(pts[:, 0], pts[:, 1], s=6, alpha=0.7, color=cmap[k % len(cmap)], label=f"{name} ({len(pts)})",
                   linewidths=0)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(loc="best", fontsize=7, markerscale=2.0, frameon=True)
    ax.set_title(f"{title}\nsilhouette ({metric}, features) = {sil:.4f}, n = {len(y)}", fontsize=10)
    out = save_figure(fig, path)
    return {"path": str(out), "silhouette": sil, "n": int(len(y)), "metric": metric, "perplexity": perp}
