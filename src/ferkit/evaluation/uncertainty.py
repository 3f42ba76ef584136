"""Analyses of a per-sample uncertainty: is it high where the model is wrong, ambiguous or blind?

These are the checks of issue 6 (APSM, methods.md section 3) written once for any method, so a
baseline's softmax entropy and APSM's ``sigma^2`` go through the same code:

- :func:`accuracy_by_uncertainty`: accuracy per uncertainty bin (the paper's Figure 3 claim,
  "accuracy falls as sigma^2 rises");
- :func:`aurc_table` / :func:`plot_risk_coverage`: selective prediction, rejecting the most
  uncertain faces first (AURC, lower is better);
- :func:`error_detection`: AUROC of each score for telling misclassified faces from the rest,
  against the two scores any classifier has (softmax entropy, 1 - max probability);
- :func:`vote_agreement`: Spearman correlation with the entropy of the annotators' votes (FER+);
- :func:`occlusion_sweep`: mean uncertainty and accuracy as random blocks hide a growing share
  of the face (Figure 4 claim: uncertainty grows roughly linearly with the hidden share).

Convention: every *score* here is uncertainty-like, **higher = less trustworthy** (APSM's
``sigma^2``, an entropy, ``1 - max p``). The functions are plain numpy; the plots use bare
matplotlib figures through :mod:`ferkit.evaluation.plots` (no pyplot state) and write PNGs
atomically.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ferkit.metrics import PROB_EPS, auroc, average_ranks, risk_coverage

#: the names :func:`error_detection` gives its two baseline scores
ENTROPY, ONE_MINUS_MAX = "softmax_entropy", "one_minus_max_prob"


class ClassifyingModel(Protocol):
    """What :func:`occlusion_sweep` needs: ``LoadedModel`` and ``OnnxModel`` both offer it."""

    def classify(self, images: Any, batch_size: int = ..., tta_flip: bool | None = ...,
                 tta_crop: float | None = ...) -> tuple[np.ndarray, np.ndarray | None]: ...


# ---- small shared pieces ----------------------------------------------------------------------
def softmax_entropy(probs: Any) -> np.ndarray:
    """Entropy of each probability row over log K, in [0, 1]: the uncertainty every classifier has,
    so the baseline any method-specific uncertainty must beat."""
    p = np.clip(np.asarray(probs, np.float64), PROB_EPS, 1.0)
    if p.ndim != 2:
        raise ValueError(f"probs must be (N, K), got shape {p.shape}")
    k = p.shape[1]
    return -(p * np.log(p)).sum(1) / np.log(k) if k > 1 else np.zeros(len(p))


def _vector(x: Any, name: str) -> np.ndarray:
    v = np.asarray(x, np.float64).ravel()
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return v


def _same_length(**arrays: np.ndarray) -> None:
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"lengths differ: {lengths}")


def _correct(probs: Any, labels: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(probs, labels, correct) restricted to labelled rows (label -1 = no label)."""
    p = np.asarray(probs, np.float64)
    y = np.asarray(labels).astype(np.int64).ravel()
    if p.ndim != 2 or len(p) != len(y):
        raise ValueError(f"probs {p.shape} and labels {y.shape} do not match: expected (N, K) and (N,)")
    keep = y >= 0
    return p[keep], y[keep], p[keep].argmax(1) == y[keep]


# ---- Figure 3: accuracy per uncertainty bin ---------------------------------------------------
def accuracy_by_uncertainty(uncertainty: Any, correct: Any, bins: int = 10,
                            strategy: str = "quantile") -> dict[str, Any]:
    """Accuracy and mean uncertainty per uncertainty bin, to see whether accuracy falls as it rises.

    ``strategy="quantile"`` gives bins of (nearly) equal counts, so every bar rests on enough faces
    even when the uncertainty is heavily skewed (APSM's ``sigma^2`` mostly sits near its floor);
    repeated quantiles (ties) merge, so there may be fewer bins than asked. ``"uniform"`` gives
    equal-width bins over [min, max] (the paper's axis), some of which may be empty. Bin ``b`` holds
    ``edges[b] <= u < edges[b + 1]``, the last bin also its upper edge, so every row is in one bin.

    Returns ``{"strategy", "edges" (B + 1), "count", "accuracy", "mean_uncertainty" (B each; None
    for an empty bin), "n", "accuracy_all"}``; the counts add up to ``n``.
    """
    u = _vector(uncertainty, "uncertainty")
    ok = np.asarray(correct).ravel().astype(bool)
    _same_length(uncertainty=u, correct=ok)
    if not u.size:
        raise ValueError("accuracy_by_uncertainty needs at least one row")
    if bins < 1:
        raise ValueError("bins must be >= 1")
    if strategy == "quantile":
        edges = np.unique(np.quantile(u, np.linspace(0.0, 1.0, bins + 1)))
    elif strategy == "uniform":
        edges = np.unique(np.linspace(u.min(), u.max(), bins + 1))
    else:
        raise ValueError(f"strategy must be 'quantile' or 'uniform', not {strategy!r}")
    if len(edges) == 1:  # constant uncertainty: one bin holding everything
        edges = np.array([edges[0], edges[0]])
    nb = len(edges) - 1
    idx = np.clip(np.searchsorted(edges, u, side="right") - 1, 0, nb - 1)
    count = np.bincount(idx, minlength=nb)
    hits = np.bincount(idx, weights=ok.astype(np.float64), minlength=nb)
    usum = np.bincount(idx, weights=u, minlength=nb)
    return {
        "strategy": strategy,
        "edges": edges.tolist(),
        "count": count.tolist(),
        "accuracy": [float(hits[b] / count[b]) if count[b] else None for b in range(nb)],
        "mean_uncertainty": [float(usum[b] / count[b]) if count[b] else None for b in range(nb)],
        "n": int(u.size),
        "accuracy_all": float(ok.mean()),
    }


def _edge_labels(edges: Sequence[float]) -> list[str]:
    """``"lo-hi"`` per bin with the fewest significant digits (2 to 8) that tell the edges apart."""
    for digits in range(2, 9):
        text = [f"{e:.{digits}g}" for e in edges]
        if len(set(text)) == len(set(edges)):
            break
    return [f"{text[b]}-{text[b + 1]}" for b in range(len(edges) - 1)]


def plot_accuracy_by_uncertainty(table: Mapping[str, Any], path: str | Path, title: str = "Accuracy by uncertainty",
                                 xlabel: str = "uncertainty") -> Path:
    """Bars of accuracy per bin (left axis) with the bin counts as a line (right axis).

    Bins are drawn side by side, labelled by their range, rather than at their uncertainty values:
    quantile bins of a skewed uncertainty would otherwise be slivers.
    """
    from ferkit.evaluation.plots import new_figure, save_figure

    edges = list(table["edges"])
    acc = [a if a is not None else 0.0 for a in table["accuracy"]]
    count = list(table["count"])
    x = np.arange(len(count))
    fig = new_figure((max(5.5, 0.6 * len(count) + 2.5), 4.2))
    ax = fig.add_subplot()
    ax.bar(x, acc, width=0.8, color="#4c72b0", edgecolor="#1f3b63", linewidth=0.6, label="accuracy")
    ax.axhline(table["accuracy_all"], color="0.35", linestyle="--", linewidth=1.0,
               label=f"overall {table['accuracy_all']:.3f}")
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_xticks(x, _edge_labels(edges), rotation=40,
                  ha="right", rotation_mode="anchor", fontsize=8)
    ax.set_xlabel(f"{xlabel} ({table['strategy']} bins)")
    ax.grid(axis="y", alpha=0.25)
    twin = ax.twinx()
    twin.plot(x, count, "o-", color="#dd8452", linewidth=1.2, markersize=4, label="count")
    twin.set_ylim(0, max(count) * 1.15 if count and max(count) else 1)
    twin.set_ylabel("faces in bin")
    handles = ax.get_legend_handles_labels()
    extra = twin.get_legend_handles_labels()
    ax.legend(handles[0] + extra[0], handles[1] + extra[1], loc="lower left", fontsize=8)
    ax.set_title(f"{title}\nn = {table['n']}", fontsize=10)
    return save_figure(fig, path)


# ---- Figure 3: risk-coverage ------------------------------------------------------------------
def aurc_table(scores: Mapping[str, Any], correct: Any) -> dict[str, Any]:
    """AURC of each score (reject the highest scores first), with the oracle and random references.

    The oracle AURC (errors rejected first) is the best any score could reach at this accuracy and
    the random one (the error rate) the worst sensible; a score's AURC only means something
    between the two, since AURC also falls when accuracy rises.
    """
    ok = np.asarray(correct).ravel().astype(bool)
    out: dict[str, Any] = {"aurc": {}}
    for name, s in scores.items():
        s = _vector(s, name)
        _same_length(**{name: s, "correct": ok})
        out["aurc"][name] = risk_coverage(-s, ok)[2]
    out["oracle_aurc"] = risk_coverage(ok.astype(np.float64), ok)[2] if ok.size else None
    out["random_aurc"] = float(1.0 - ok.mean()) if ok.size else None
    out["n"] = int(ok.size)
    return out


def plot_risk_coverage(scores: Mapping[str, Any], correct: Any, path: str | Path,
                       title: str = "Risk-coverage", correct_by_score: Mapping[str, Any] | None = None) -> Path:
    """Risk (error rate among accepted faces) against coverage for several scores on one axis.

    Each score rejects its highest values first; the legend gives each curve's AURC. The oracle
    curve and the overall error rate are drawn for reference when all curves share one ``correct``.
    ``correct_by_score`` lets curves of different models (each with its own correctness) share the
    figure: ``{name: correct}`` overrides ``correct`` for that score.
    """
    from ferkit.evaluation.plots import new_figure, save_figure

    fig = new_figure((5.6, 4.4))
    ax = fig.add_subplot()
    for name, s in scores.items():
        ok = np.asarray((correct_by_score or {}).get(name, correct)).ravel().astype(bool)
        cov, risk, aurc = risk_coverage(-_vector(s, name), ok)
        ax.plot(cov, risk, linewidth=1.4, label=f"{name} (AURC {aurc:.4f})")
    if not correct_by_score:
        ok = np.asarray(correct).ravel().astype(bool)
        cov, risk, aurc = risk_coverage(ok.astype(np.float64), ok)
        ax.plot(cov, risk, ":", color="0.3", linewidth=1.2, label=f"oracle (AURC {aurc:.4f})")
        ax.axhline(1 - ok.mean(), color="0.6", linestyle="--", linewidth=1.0, label=f"random ({1 - ok.mean():.4f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("coverage (share of faces accepted)")
    ax.set_ylabel("risk (error rate among accepted)")
    ax.grid(alpha=0.25)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(title, fontsize=10)
    return save_figure(fig, path)


# ---- beyond the paper: error detection and annotator agreement --------------------------------
def error_detection(probs: Any, labels: Any, scores: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """AUROC of each score for detecting misclassified faces (positives = errors), and its AURC.

    A method's uncertainty earns its keep only if it finds errors better than what the softmax
    already offers, so ``softmax_entropy`` and ``one_minus_max_prob`` (from ``probs``) are always
    added. ``scores`` are higher-is-more-likely-wrong, one per row of ``probs``; rows labelled -1
    are left out. AUROC is None when there are no errors or no correct rows (it is undefined).
    """
    y_all = np.asarray(labels).astype(np.int64).ravel()
    p, _, ok = _correct(probs, y_all)
    keep = y_all >= 0
    table: dict[str, np.ndarray] = {}
    for name, s in (scores or {}).items():
        s = _vector(s, name)
        _same_length(**{name: s, "labels": y_all})
        table[name] = s[keep]
    table[ENTROPY] = softmax_entropy(p)
    table[ONE_MINUS_MAX] = 1.0 - p.max(1)
    errors = ~ok
    defined = 0 < int(errors.sum()) < errors.size
    return {
        "n": int(ok.size),
        "n_errors": int(errors.sum()),
        "accuracy": float(ok.mean()) if ok.size else None,
        "auroc": {k: (auroc(s, errors) if defined else None) for k, s in table.items()},
        "aurc": aurc_table(table, ok)["aurc"] if ok.size else {},
    }


def spearman(x: Any, y: Any) -> float | None:
    """Spearman's rho: Pearson correlation of average ranks (ties share their mean rank, as scipy).

    None when either side is constant (the correlation is undefined).
    """
    rx, ry = average_ranks(_vector(x, "x")), average_ranks(_vector(y, "y"))
    _same_length(x=rx, y=ry)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = np.sqrt((rx * rx).sum() * (ry * ry).sum())
    return float((rx * ry).sum() / den) if den > 0 else None


def vote_entropy(vote_dist: Any) -> np.ndarray:
    """Entropy (over log K, in [0, 1]) of each row of annotator votes or vote proportions: how much the
    annotators disagreed (0: all chose one class)."""
    v = np.asarray(vote_dist, np.float64)
    if v.ndim != 2 or (v < 0).any():
        raise ValueError(f"vote_dist must be (N, K) non-negative counts or proportions, got shape {v.shape}")
    # sorted rows: votes that are permutations of each other (8-2-0 and 2-0-8) get bit-identical
    # entropies, so they tie in the ranks instead of being ordered by rounding noise
    v = np.sort(v, axis=1)
    total = v.sum(1, keepdims=True)
    return softmax_entropy(np.divide(v, total, out=np.full_like(v, 1.0 / v.shape[1]), where=total > 0))


def vote_agreement(uncertainty: Any, vote_dist: Any) -> dict[str, Any]:
    """Spearman rho between a model's uncertainty and how much the annotators disagreed.

    ``vote_dist`` is (N, K): the votes (counts) or their proportions, e.g. FER+'s ten votes over the
    eight emotions. Disagreement is the entropy of each row; rows without a vote are left out. A
    rank correlation, because uncertainty scales differ between methods (``sigma^2`` vs entropy)
    and only their ordering of the faces should matter.
    Returns ``{"rho", "n", "mean_vote_entropy"}``.
    """
    u = _vector(uncertainty, "uncertainty")
    v = np.asarray(vote_dist, np.float64)
    _same_length(uncertainty=u, vote_dist=v)
    has = v.sum(1) > 0 if v.ndim == 2 else np.ones(len(u), bool)
    ent = vote_entropy(v[has])
    return {"rho": spearman(u[has], ent), "n": int(has.sum()),
            "mean_vote_entropy": float(ent.mean()) if ent.size else None}


# ---- Figure 4: occlusion ----------------------------------------------------------------------
def occlusion_order(shape: tuple[int, int], block: int, rng: np.random.Generator, limit: int) -> np.ndarray:
    """(H, W) int array: the order in which random ``block`` x ``block`` squares hide the pixels.

    Squares are dropped one after another at uniformly random positions (their top-left corner in
    ``[-(block - 1), side - 1]``, clipped to the image, so border pixels are as likely to be hidden
    as central ones); each newly hidden pixel gets the next number, in raster order within its
    square. Hiding the pixels numbered below ``n`` hides exactly ``n`` pixels, and a larger ``n``
    hides a superset (nested occlusions, so the curve over fractions is not noisy from redrawing).
    Pixels still visible once ``limit`` are hidden keep the value ``H * W``.
    """
    h, w = shape
    order = np.full((h, w), h * w, np.int64)
    hidden = 0
    while hidden < limit:
        r, c = rng.integers(-(block - 1), h), rng.integers(-(block - 1), w)
        r0, c0 = max(r, 0), max(c, 0)
        region = order[r0:r + block, c0:c + block]
        new = region == h * w
        k = int(new.sum())
        region[new] = hidden + np.arange(k)
        hidden += k
    return order


def occlusion_orders(n: int, shape: tuple[int, int], block: int, limit: int, seed: int = 0) -> np.ndarray:
    """(n, H, W): :func:`occlusion_order` for ``n`` faces from one generator seeded with ``seed``,
    so the same seed, count and ``limit`` always hide the same pixels."""
    rng = np.random.default_rng(seed)
    if not n:
        return np.zeros((0, *shape), np.int64)
    return np.stack([occlusion_order(shape, block, rng, limit) for _ in range(n)])


def occlusion_sweep(model: ClassifyingModel, images: np.ndarray, labels: Any,
                    fractions: Sequence[float] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5), block: int | None = None,
                    fill: int = 128, seed: int = 0, batch_size: int = 512) -> dict[str, Any]:
    """Mean uncertainty and accuracy as random square blocks hide a growing share of each face.

    The images are aligned face crops (FER2013-style), so the whole image counts as face: a
    fraction ``f`` hides ``round(f * H * W)`` pixels, exactly, under squares of side ``block`` (default
    a sixth of the side, 8 px on a 48 px face, about an eye) at random positions (see
    :func:`occlusion_order`). Blocks are filled with mid-gray ``fill`` = 128, which the usual
    normalisation (mean 0.5) maps to about 0, so a hidden pixel carries no signal rather than an
    extreme black. Each face's blocks are drawn once and the fractions nest (the 20 % occlusion
    contains the 10 % one); the same ``seed`` gives the same blocks.

    ``model.classify`` gives the probabilities and the method's uncertainty; a model without its
    own uncertainty is measured by the normalised softmax entropy (as ``Recognizer`` reports it),
    which is also always reported as ``mean_entropy``. Accuracy counts labelled rows only.
    Returns ``{"fractions", "hidden_share" (achieved), "accuracy", "mean_uncertainty",
    "mean_entropy", "uncertainty_kind", "linear_r" (Pearson r of mean uncertainty vs fraction),
    "block", "fill", "seed", "n"}``.
    """
    from ferkit.inference.recognizer import normalised_entropy

    imgs = np.asarray(images)
    if imgs.ndim not in (3, 4) or imgs.dtype != np.uint8:
        raise ValueError(f"images must be uint8 (N, H, W) or (N, H, W, 3), got {imgs.dtype} {imgs.shape}")
    y = np.asarray(labels).astype(np.int64).ravel()
    _same_length(images=imgs, labels=y)
    fr = [float(f) for f in fractions]
    if any(not 0.0 <= f <= 1.0 for f in fr):
        raise ValueError(f"fractions must lie in [0, 1], got {fr}")
    h, w = imgs.shape[1:3]
    block = int(block) if block else max(1, round(min(h, w) / 6))
    targets = [int(round(f * h * w)) for f in fr]
    orders = occlusion_orders(len(imgs), (h, w), block, max(targets), seed)
    keep = y >= 0
    out: dict[str, Any] = {"fractions": fr, "hidden_share": [], "accuracy": [], "mean_uncertainty": [],
                           "mean_entropy": [], "uncertainty_kind": None, "block": block, "fill": int(fill),
                           "seed": int(seed), "n": int(len(imgs)), "n_labelled": int(keep.sum())}
    for t in targets:
        mask = orders < t
        x = imgs.copy()
        x[mask] = fill  # (N, H, W) mask also covers every channel of (N, H, W, 3)
        probs, unc = model.classify(x, batch_size=batch_size)
        ent = normalised_entropy(probs)
        out["uncertainty_kind"] = "normalised_entropy" if unc is None else "method"
        u = ent if unc is None else np.asarray(unc, np.float64)
        out["hidden_share"].append(float(mask.mean()) if mask.size else 0.0)
        out["accuracy"].append(float((probs.argmax(1)[keep] == y[keep]).mean()) if keep.any() else None)
        out["mean_uncertainty"].append(float(u.mean()) if u.size else None)
        out["mean_entropy"].append(float(ent.mean()) if ent.size else None)
    mu = np.array([m if m is not None else np.nan for m in out["mean_uncertainty"]])
    ok = np.isfinite(mu)
    out["linear_r"] = (float(np.corrcoef(np.array(fr)[ok], mu[ok])[0, 1])
                       if ok.sum() > 2 and np.ptp(mu[ok]) > 0 and np.ptp(np.array(fr)[ok]) > 0 else None)
    return out


def plot_occlusion(results: Mapping[str, Mapping[str, Any]] | Mapping[str, Any], path: str | Path,
                   title: str = "Occlusion") -> Path:
    """Accuracy (left axis, solid) and mean uncertainty (right axis, dashed) against the hidden share.

    ``results`` is one :func:`occlusion_sweep` result or ``{name: result}`` to compare models; each
    model gets its own panel, because uncertainties of different kinds (APSM's ``sigma^2``, an
    entropy in [0, 1]) have scales that would flatten each other on one axis.
    """
    from ferkit.evaluation.plots import new_figure, save_figure

    runs = {"": results} if "fractions" in results else dict(results)
    fig = new_figure((4.6 * len(runs) + 0.6, 4.2))
    axes = fig.subplots(1, len(runs), squeeze=False, gridspec_kw={"wspace": 0.6})[0]
    for ax, (name, r) in zip(axes, runs.items()):
        x = 100 * np.asarray(r["hidden_share"], np.float64)
        ax.plot(x, [a if a is not None else np.nan for a in r["accuracy"]], "o-", color="#4c72b0", linewidth=1.4,
                markersize=4, label="accuracy")
        kind = "sigma^2" if r.get("uncertainty_kind") == "method" else "normalised entropy"
        lin = f" (r = {r['linear_r']:.3f})" if r.get("linear_r") is not None else ""
        twin = ax.twinx()
        twin.plot(x, [m if m is not None else np.nan for m in r["mean_uncertainty"]], "s--", color="#dd8452",
                  linewidth=1.2, markersize=4, label=f"mean {kind}{lin}")
        ax.set_xlabel("face hidden by random blocks (%)")
        ax.set_ylabel("accuracy (solid)")
        ax.set_ylim(0, 1)
        twin.set_ylabel(f"mean {kind} (dashed)")
        ax.grid(alpha=0.25)
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = twin.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, loc="lower left", fontsize=7)
        ax.set_title(f"{name + ': ' if name else ''}blocks {r['block']} px, fill {r['fill']}, n = {r['n']}",
                     fontsize=9)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)
