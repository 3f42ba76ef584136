"""Issue 6's analyses: uncertainty bins, risk-coverage, error detection, vote agreement, occlusion,
embeddings / silhouette / t-SNE (the analyses experiment end to end is in test_experiments.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from ferkit.errors import ConfigError
from ferkit.evaluation import uncertainty as U
from ferkit.evaluation.embedding import sample_rows, silhouette, tsne_plot
from ferkit.metrics import risk_coverage

from synthetic import synthetic_faces

REPO = Path(__file__).resolve().parents[1]


# ---- accuracy per uncertainty bin -------------------------------------------------------------
def test_accuracy_by_uncertainty_known_answer():
    u = np.arange(100.0)
    ok = u < 50  # the 50 most certain are right, the rest wrong
    t = U.accuracy_by_uncertainty(u, ok, bins=2)
    assert t["count"] == [50, 50] and t["accuracy"] == [1.0, 0.0]
    assert t["mean_uncertainty"] == [pytest.approx(24.5), pytest.approx(74.5)]
    t10 = U.accuracy_by_uncertainty(u, ok, bins=10, strategy="quantile")
    assert t10["count"] == [10] * 10 and sum(t10["count"]) == t10["n"] == 100
    assert t10["accuracy_all"] == 0.5


def test_accuracy_by_uncertainty_counts_add_up_and_handle_ties():
    rng = np.random.default_rng(0)
    u = np.round(rng.exponential(size=503), 1)  # skewed, many ties
    ok = rng.random(503) < 0.7
    for strategy in ("quantile", "uniform"):
        t = U.accuracy_by_uncertainty(u, ok, bins=7, strategy=strategy)
        assert sum(t["count"]) == 503
        assert len(t["edges"]) == len(t["count"]) + 1
        assert np.all(np.diff(t["edges"]) > 0)
        acc = sum(c * a for c, a in zip(t["count"], t["accuracy"]) if c)
        assert acc / 503 == pytest.approx(ok.mean())
    const = U.accuracy_by_uncertainty(np.ones(5), [1, 1, 0, 1, 0])
    assert const["count"] == [5] and const["accuracy"] == [0.6]
    with pytest.raises(ValueError, match="strategy"):
        U.accuracy_by_uncertainty(u, ok, strategy="log")


# ---- error detection, AURC ------------------------------------------------------------------
def _probs(n: int, k: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, k)) * 2
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return p, np.array([rng.choice(k, p=row) for row in p])  # calibrated: labels drawn from p


def test_error_detection_perfect_score_and_baselines():
    p, y = _probs(200)
    wrong = p.argmax(1) != y
    perfect = wrong.astype(float) + 0.01 * np.random.default_rng(1).random(200)
    y_unlabelled = y.copy()
    y_unlabelled[:5] = -1  # left out
    r = U.error_detection(p, y_unlabelled, {"perfect": perfect, "inverted": -perfect})
    assert r["n"] == 195 and r["n_errors"] == int(wrong[5:].sum())
    assert r["auroc"]["perfect"] == 1.0 and r["auroc"]["inverted"] == 0.0
    assert set(r["auroc"]) == {"perfect", "inverted", U.ENTROPY, U.ONE_MINUS_MAX}
    assert 0.5 < r["auroc"][U.ONE_MINUS_MAX] < 1.0  # calibrated probs: max-prob finds errors
    assert r["aurc"]["perfect"] < r["aurc"][U.ENTROPY]
    # no errors at all: AUROC undefined, not a crash
    assert U.error_detection(np.eye(3), [0, 1, 2])["auroc"][U.ENTROPY] is None


def test_aurc_table_oracle_and_random():
    ok = np.array([1, 1, 0, 1, 0, 1, 1, 0], bool)
    t = U.aurc_table({"oracle": (~ok).astype(float), "constant": np.zeros(8)}, ok)
    assert t["aurc"]["oracle"] == pytest.approx(t["oracle_aurc"])
    assert t["aurc"]["constant"] == pytest.approx(t["random_aurc"]) == pytest.approx(3 / 8)
    assert t["aurc"]["oracle"] == pytest.approx(risk_coverage(ok.astype(float), ok)[2])


def test_softmax_entropy_range():
    e = U.softmax_entropy(np.array([[1.0, 0, 0, 0], [0.25] * 4]))
    assert e == pytest.approx([0.0, 1.0], abs=1e-9)


# ---- Spearman / vote agreement ---------------------------------------------------------------
def test_spearman_monotone_and_matches_scipy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=300)
    assert U.spearman(x, np.exp(3 * x)) == pytest.approx(1.0)
    assert U.spearman(x, -x ** 3) == pytest.approx(-1.0)
    assert U.spearman(x, np.ones(300)) is None
    stats = pytest.importorskip("scipy.stats")
    y = np.round(x + rng.normal(size=300), 0)  # many ties
    assert U.spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)


def test_vote_agreement_counts_and_proportions_agree():
    rng = np.random.default_rng(0)
    votes = rng.multinomial(10, rng.dirichlet(np.full(8, 0.3), 150)[0], 150).astype(float)
    votes[:50] = rng.multinomial(10, np.full(8, 1 / 8), 50)  # disagreeing annotators
    ent = U.vote_entropy(votes)
    unc = 2.0 * ent ** 2 + 1.0  # a monotone function of the disagreement
    r = U.vote_agreement(unc, votes)
    assert r["rho"] == pytest.approx(1.0) and r["n"] == 150
    r2 = U.vote_agreement(unc, votes / votes.sum(1, keepdims=True))
    assert r2["rho"] == pytest.approx(1.0)
    votes[3] = 0  # a row without votes is left out
    assert U.vote_agreement(unc, votes)["n"] == 149


# ---- occlusion --------------------------------------------------------------------------------
def test_occlusion_orders_exact_nested_deterministic():
    orders = U.occlusion_orders(20, (48, 48), 8, limit=int(0.5 * 48 * 48), seed=3)
    for f in (0.1, 0.25, 0.5):
        t = int(round(f * 48 * 48))
        assert ((orders < t).sum((1, 2)) == t).all()  # exactly the requested share, every face
    assert ((orders < 200) <= (orders < 400)).all()  # nested
    assert np.array_equal(orders, U.occlusion_orders(20, (48, 48), 8, int(0.5 * 48 * 48), seed=3))
    assert not np.array_equal(orders, U.occlusion_orders(20, (48, 48), 8, int(0.5 * 48 * 48), seed=4))
    # blocks may straddle the border, so border pixels are hidden about as often as central ones
    many = U.occlusion_orders(400, (24, 24), 4, limit=288, seed=0) < 288
    freq = many.mean(0)
    assert abs(freq[0, 0] - 0.5) < 0.12 and abs(freq[12, 12] - 0.5) < 0.12


class BarModel:
    """A stand-in LoadedModel: the class is the brightest row band (how synthetic faces encode it)."""

    def __init__(self, with_uncertainty: bool = False) -> None:
        self.with_uncertainty = with_uncertainty

    def classify(self, images, batch_size=512, tta_flip=None):
        x = np.asarray(images, np.float64)
        step = x.shape[1] // 8
        rows = x[:, :, 4:-4].mean(2)
        score = np.stack([rows[:, step * (k + 1) - 2:step * (k + 1) + 2].mean(1) for k in range(7)], 1) / 20
        p = np.exp(score - score.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        return p, ((x == 128).mean((1, 2)) + 0.1 if self.with_uncertainty else None)


def test_occlusion_sweep_fraction_zero_and_shares():
    images, labels = synthetic_faces(60, seed=2)
    model = BarModel()
    clean_acc = float((model.classify(images)[0].argmax(1) == labels).mean())
    r = U.occlusion_sweep(model, images, labels, fractions=(0.0, 0.2, 0.5), block=8, seed=0)
    assert r["accuracy"][0] == clean_acc > 0.9
    assert r["hidden_share"] == pytest.approx([0.0, 0.2, 0.5], abs=1.0 / (48 * 48))
    assert r["uncertainty_kind"] == "normalised_entropy"
    assert r["mean_uncertainty"] == r["mean_entropy"]
    assert r["mean_entropy"][2] > r["mean_entropy"][0]  # gray blocks lift the other bands' scores
    white = U.occlusion_sweep(model, images, labels, fractions=(0.0, 0.5), block=8, fill=255)
    assert white["accuracy"][1] < white["accuracy"][0]  # white blocks outshine the bar
    assert r == U.occlusion_sweep(model, images, labels, fractions=(0.0, 0.2, 0.5), block=8, seed=0)
    own = U.occlusion_sweep(BarModel(True), images, labels, fractions=(0.0, 0.3), block=8)
    assert own["uncertainty_kind"] == "method"
    assert own["mean_uncertainty"][1] - own["mean_uncertainty"][0] > 0.25  # gray share tracked

    class Recorder(BarModel):
        def classify(self, images, batch_size=512, tta_flip=None):
            self.seen = np.asarray(images)
            return super().classify(images[..., 0])

    rec = Recorder()
    rgb = np.repeat(images[..., None], 3, 3)
    U.occlusion_sweep(rec, rgb, labels, fractions=(0.3,), block=8)
    gray = rec.seen == 128
    assert (gray[..., 0] == gray[..., 2]).all() and gray[..., 0].mean() == pytest.approx(0.3, abs=1 / 2304)


def test_plots_write_pngs(tmp_path):
    rng = np.random.default_rng(0)
    u = rng.exponential(size=300)
    ok = rng.random(300) < np.exp(-u)
    t = U.accuracy_by_uncertainty(u, ok)
    assert U.plot_accuracy_by_uncertainty(t, tmp_path / "bins.png").stat().st_size > 2000
    assert U.plot_risk_coverage({"u": u, "noise": rng.random(300)}, ok, tmp_path / "rc.png").stat().st_size > 2000
    images, labels = synthetic_faces(20, seed=1)
    occ = U.occlusion_sweep(BarModel(True), images, labels, fractions=(0.0, 0.25, 0.5))
    assert U.plot_occlusion(occ, tmp_path / "occ.png").stat().st_size > 2000
    assert U.plot_occlusion({"a": occ, "b": occ}, tmp_path / "occ2.png").stat().st_size > 2000


# ---- silhouette / t-SNE ----------------------------------------------------------------------
def test_silhouette_matches_sklearn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 120)
    x = rng.normal(size=(120, 16)) + 2.0 * np.eye(4, 16)[y]
    for metric in ("euclidean", "cosine"):
        assert silhouette(x, y, sample=None, metric=metric) == pytest.approx(
            metrics.silhouette_score(x, y, metric=metric), abs=1e-6)
    y1 = y.copy()
    y1[0] = 9  # a singleton class scores 0 for its row, as sklearn
    assert silhouette(x, y1, sample=None) == pytest.approx(metrics.silhouette_score(x, y1), abs=1e-6)
    y2 = y.copy()
    y2[:10] = -1  # unlabelled rows are left out
    assert silhouette(x, y2, sample=None) == pytest.approx(metrics.silhouette_score(x[10:], y[10:]), abs=1e-6)
    assert silhouette(x, y, sample=50, seed=1) == silhouette(x, y, sample=50, seed=1)
    assert np.array_equal(sample_rows(y, 50, 1), np.sort(sample_rows(y, 50, 1)))
    with pytest.raises(ValueError, match="2 to n-1 classes"):
        silhouette(x, np.zeros(120))


def test_tsne_plot_and_missing_sklearn(tmp_path, monkeypatch):
    pytest.importorskip("sklearn.manifold")
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 60)
    x = rng.normal(size=(60, 64)) + 4.0 * np.eye(3, 64)[y]
    r = tsne_plot(x, y, ("neutral", "happiness", "surprise"), tmp_path / "t.png", sample=None, threads=1)
    assert Path(r["path"]).stat().st_size > 2000 and r["n"] == 60
    assert r["silhouette"] == pytest.approx(silhouette(x, y, sample=None))
    monkeypatch.setitem(sys.modules, "sklearn.manifold", None)
    with pytest.raises(ConfigError, match="t-SNE needs scikit-learn: pip install scikit-learn"):
        tsne_plot(x, y, ("a", "b", "c"), tmp_path / "t2.png")
