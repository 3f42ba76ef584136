"""The classic route (HOG + LBP + SVM, ferkit.classic): features, numpy inference, files, CLI."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from ferkit.classic import (
    FeatureSettings,
    extract_features,
    fit_estimators,
    lbp_codes,
    load_classic,
    model_from_estimators,
    train_classic,
)
from ferkit.errors import ConfigError, InputError
from ferkit.labels import label_set

from synthetic import synthetic_faces

BASIC7 = label_set(7)


def _noisy_faces(n: int, seed: int, k: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic faces with a third of the labels redrawn, so probabilities are far from 0 and 1."""
    x, y = synthetic_faces(n, num_classes=k, seed=seed)
    rng = np.random.default_rng(seed + 100)
    flip = rng.random(n) < 0.33
    y = np.where(flip, rng.integers(0, k, n), y)
    return x, y


def test_feature_lengths_are_documented():
    s = FeatureSettings()
    assert (s.hog_dim, s.lbp_dim, s.dim()) == (900, 360, 1260)  # 5x5 blocks x 2x2 cells x 9; 6x6 cells x 10 codes
    assert FeatureSettings(features=("lbp",), lbp_method="nri_uniform", lbp_grid=4).dim() == 16 * 59
    assert FeatureSettings(features=("hog",), hog_cell=6, hog_block=3).dim() == 6 * 6 * 9 * 9
    x, _ = synthetic_faces(5)
    for s in (FeatureSettings(), FeatureSettings(features=("hog",)), FeatureSettings(features=("lbp",), lbp_grid=3)):
        f = extract_features(x, s)
        assert f.shape == (5, s.dim()) and f.dtype == np.float64 and np.isfinite(f).all()
    lbp = extract_features(x, FeatureSettings(features=("lbp",)))
    np.testing.assert_allclose(lbp.reshape(5, 36, 10).sum(-1), 1.0)  # each cell's histogram sums to 1
    with pytest.raises(ConfigError, match="sift"):
        FeatureSettings(features=("hog", "sift"))


def test_numpy_port_equals_scikit_image():
    """Inference computes the features without scikit-image; they must be scikit-image's exactly."""
    pytest.importorskip("skimage")
    from skimage.feature import local_binary_pattern

    rng = np.random.default_rng(0)
    x = np.concatenate([synthetic_faces(6)[0], rng.integers(0, 256, (6, 48, 48)).astype(np.uint8),
                        np.full((2, 48, 48), 77, np.uint8)])  # flat faces: every LBP comparison a tie
    for kw in ({}, {"hog_cell": 6, "hog_norm": "L1"}, {"hog_cell": 7, "hog_block": 3, "hog_norm": "L2"},
               {"lbp_method": "nri_uniform", "lbp_points": 16, "lbp_radius": 2.0, "hog_norm": "L1-sqrt"}):
        s = FeatureSettings(**kw)
        assert np.abs(extract_features(x, s, "skimage") - extract_features(x, s, "numpy")).max() < 1e-12, kw
    for p, r, method in ((8, 1, "uniform"), (12, 1.5, "uniform"), (8, 1, "nri_uniform")):
        ref = np.stack([local_binary_pattern(im, p, r, method) for im in x])
        assert (lbp_codes(x, p, r, method) == ref).all()


@pytest.mark.parametrize("svm,pca", [("linear", None), ("linear", 12), ("rbf", 20)])
def test_save_load_matches_scikit_learn(tmp_path, svm, pca):
    """numpy inference from the saved arrays = scikit-learn's own scores and probabilities."""
    from ferkit.engine.model_io import load_model

    s = FeatureSettings()
    x, y = _noisy_faces(210, seed=1)
    xt, _ = _noisy_faces(60, seed=2)
    est = fit_estimators(extract_features(x, s), y, svm, None, pca)
    model = model_from_estimators(est, s, BASIC7)
    path = model.save(tmp_path / "m.npz")
    loaded = load_model(str(path))
    assert type(loaded).__name__ == "ClassicModel" and loaded.source == str(path)
    assert loaded.classes == BASIC7 and str(loaded.device) == "cpu" and loaded.metrics == {}
    assert {"image_size", "channels", "mean", "std", "tta_flip"} <= set(loaded.preprocess)

    z = est["scaler"].transform(extract_features(xt, s))
    if est["pca"] is not None:
        z = est["pca"].transform(z)
    ref = est["svm"].predict_proba(z)
    probs, unc = loaded.classify(xt, batch_size=25)
    assert unc is None
    assert probs.shape == (60, 7) and np.abs(probs - ref).max() < 1e-6
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-12)
    assert 0.05 < probs.max(1).mean() < 0.99  # the data are hard enough to test the calibration
    dec = loaded.decision_function(loaded.transform(extract_features(xt, s)))
    for m, cc in enumerate(est["svm"].calibrated_classifiers_):
        assert np.abs(dec[m] - cc.estimator.decision_function(z)).max() < 1e-6
    np.testing.assert_allclose(loaded.predict_probs(xt), probs, atol=1e-12)  # batch size does not matter
    flip = loaded.predict_probs(xt, tta_flip=True)
    np.testing.assert_allclose(flip, 0.5 * (probs + loaded.predict_probs(xt[:, :, ::-1])), atol=1e-12)


def test_other_inputs_and_two_classes(tmp_path):
    """RGB, off-size and tensor faces go through the same conversion as the CNNs'; 2 classes work."""
    import torch

    s = FeatureSettings(features=("hog",))
    x, y = _noisy_faces(80, seed=3, k=2)
    est = fit_estimators(extract_features(x, s), y, "linear")
    model = load_classic(model_from_estimators(est, s, BASIC7[:2]).save(tmp_path / "two.npz"))
    z = est["scaler"].transform(extract_features(x[:10], s))
    assert np.abs(model.predict_probs(x[:10]) - est["svm"].predict_proba(z)).max() < 1e-6
    rgb = np.repeat(x[:4, :, :, None], 3, axis=3)
    np.testing.assert_allclose(model.predict_probs(rgb), model.predict_probs(x[:4]), atol=1e-12)
    tensor = torch.from_numpy(x[:4]).unsqueeze(1)
    np.testing.assert_allclose(model.predict_probs(tensor), model.predict_probs(x[:4]), atol=1e-12)
    big = np.kron(x[:2], np.ones((2, 2), np.uint8))  # 96x96: resized to 48 first
    assert model.predict_probs(big).shape == (2, 2)


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and msg
    return msg


def test_bad_files_are_one_line_input_errors(tmp_path):
    from ferkit.engine.model_io import load_model

    s = FeatureSettings(features=("lbp",))
    x, y = _noisy_faces(60, seed=4)
    good = model_from_estimators(fit_estimators(extract_features(x, s), y), s, BASIC7)
    arrays = dict(good.arrays)

    (tmp_path / "text.npz").write_text("not a zip")
    np.savez(tmp_path / "nometa.npz", a=np.zeros(3))
    np.savez(tmp_path / "other.npz", meta=np.array(json.dumps({"format": "something-else/1"})), **arrays)
    np.savez(tmp_path / "future.npz", meta=np.array(json.dumps({**good.meta, "format": "ferkit-classic/9"})), **arrays)
    np.savez(tmp_path / "missing.npz", meta=np.array(json.dumps(good.meta)),
             **{k: v for k, v in arrays.items() if k != "coef"})
    np.savez(tmp_path / "shapes.npz", meta=np.array(json.dumps(good.meta)), **{**arrays, "coef": np.zeros((3, 7, 5))})
    np.savez(tmp_path / "pickled.npz", meta=np.array([{"format": "ferkit-classic/1"}], dtype=object))
    with zipfile.ZipFile(tmp_path / "emptyzip.npz", "w"):
        pass
    cases = {"text": "cannot read", "nometa": "not a ferkit classic model", "other": "not a ferkit classic model",
             "future": "ferkit-classic/9", "missing": "missing coef", "shapes": "inconsistent",
             "pickled": "cannot read|not a ferkit", "emptyzip": "not a ferkit classic model"}
    for name, pattern in cases.items():
        with pytest.raises(InputError, match=pattern) as exc:
            load_model(tmp_path / f"{name}.npz")
        _one_line(exc)
    with pytest.raises(InputError, match="model not found"):
        load_model(tmp_path / "absent.npz")
    with pytest.raises(InputError, match=".npz"):
        good.save(tmp_path / "model.pkl")
    with pytest.raises(InputError, match="disgust") as exc:
        train_classic(x[:20], np.where(y[:20] == 5, 0, y[:20]), BASIC7)  # no disgust face
    _one_line(exc)


@pytest.fixture(scope="module")
def classic_npz(tmp_path_factory):
    from synthetic import write_fer2013_csv

    folder = tmp_path_factory.mktemp("classic")
    csv = write_fer2013_csv(folder / "fer.csv")
    from ferkit.data import load_dataset

    data = load_dataset("fer2013", csv, "Training", cache=False)
    model, rep = train_classic(data.images, data.labels, data.classes, backend="numpy")
    assert rep.n == len(data) and rep.feature_dim == 1260 and rep.estimators["pca"] is None
    return model.save(folder / "classic.npz"), csv


def test_evaluate_and_recognizer_accept_the_npz(classic_npz, tmp_path):
    import ferkit
    from ferkit.evaluation.evaluate import evaluate_model
    from ferkit.inference.onnx_engine import export_onnx

    path, csv = classic_npz
    m = evaluate_model(path, "fer2013", csv, "PublicTest", tmp_path / "eval.json", options={"cache": False})
    assert m["n"] == 70 and m["accuracy"] > 0.9
    assert (tmp_path / "eval_confusion_matrix.png").is_file() and (tmp_path / "eval_reliability.png").is_file()
    r = ferkit.Recognizer(str(path), detector="none")
    assert r.labels == BASIC7 and r.size == 48 and r.channels == 1
    faces, _ = synthetic_faces(3, seed=9)
    expected = load_classic(path).predict_probs(faces)
    out = r.predict(np.repeat(np.kron(faces[0], np.ones((3, 3), np.uint8))[:, :, None], 3, axis=2))  # RGB, 144 px
    assert len(out) == 1 and out[0]["label"] == BASIC7[int(expected[0].argmax())]
    np.testing.assert_allclose(list(out[0]["probs"].values()), expected[0], atol=1e-9)
    assert 0 <= out[0]["uncertainty"] <= 1
    np.testing.assert_allclose(r.predict_faces(faces), expected, atol=1e-9)
    with pytest.raises(ConfigError, match="CNN") as exc:
        r.cam(faces[0])
    _one_line(exc)
    with pytest.raises(ConfigError, match="only torch models"):
        export_onnx(path, tmp_path / "x.onnx")
    with pytest.raises(ConfigError, match="only torch models"):
        ferkit.Recognizer(str(path), engine="onnx", detector="none")


def test_cli_train_classic_evaluate_predict(tmp_path, fer_csv, capsys):
    import cv2

    from ferkit.cli import main

    out = tmp_path / "m.npz"
    assert main(["train-classic", "--dataset", "fer2013", "--path", str(fer_csv), "--split", "Training",
                 "--out", str(out), "--features", "hog,lbp", "--svm", "linear", "--limit", "150"]) == 0
    cap = capsys.readouterr()
    assert out.is_file() and "wrote" in cap.out and "150 faces" in cap.out and "features" in cap.err
    meta = load_classic(out).meta
    assert meta["training"]["n"] == 150 and meta["training"]["split"] == "Training"
    assert main(["evaluate", "--model", str(out), "--dataset", "fer2013", "--path", str(fer_csv),
                 "--out", str(tmp_path / "e.json")]) == 0
    assert "fer2013/PublicTest: n=70" in capsys.readouterr().out
    face, _ = synthetic_faces(1, seed=5)
    cv2.imwrite(str(tmp_path / "face.png"), np.kron(face[0], np.ones((2, 2), np.uint8)))
    assert main(["predict", str(tmp_path / "face.png"), "--model", str(out), "--detector", "none",
                 "--no-progress"]) == 0
    assert "face.png: face 0" in capsys.readouterr().out
    assert main(["export", str(out), "--out", str(tmp_path / "m.onnx")]) == 2  # nothing to export: one line
    assert capsys.readouterr().err.strip().endswith("only torch models (run directory, model.pt, checkpoint) "
                                                    "export to ONNX")

    bad = [(["--out", str(tmp_path / "m.pkl")], "--out must end in .npz"),
           (["--out", str(out), "--features", "hog,sift"], "sift"),
           (["--out", str(out), "--split", "Nope"], "Nope")]
    for extra, pattern in bad:
        assert main(["train-classic", "--dataset", "fer2013", "--path", str(fer_csv), *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("ferkit: error:") and pattern in err[0], err


def test_bundled_classic_model_if_installed():
    from ferkit.zoo import MODELS, model_card

    name = "fer2013-hoglbp-svm-48g-7"
    if name not in MODELS or not model_card(name)["available"]:
        pytest.skip("the classic model is not bundled")
    import ferkit
    from ferkit.engine.model_io import load_model

    m = load_model(name)
    assert m.classes == BASIC7 and m.preprocess["image_size"] == 48
    card = model_card(name)
    assert card["publictest"]["accuracy"] > 0.3
    faces, _ = synthetic_faces(4)
    np.testing.assert_allclose(ferkit.Recognizer(name, detector="none").predict_faces(faces).sum(1), 1.0)
