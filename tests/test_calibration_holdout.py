"""Held-out selection split of Training, temperature scaling, and crops at the training resolution."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ferkit.engine.config import load_config
from ferkit.engine.data import load_run_data
from ferkit.engine.model_io import load_model
from ferkit.engine.trainer import Trainer
from ferkit.errors import ConfigError
from ferkit.evaluation.calibration import fit_temperature, fold_temperature
from ferkit.methods import get_method
from ferkit.models import build_model

from synthetic import write_config


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.mark.parametrize("true_t", [0.5, 2.5])
def test_fit_temperature_recovers_the_generating_temperature(true_t: float) -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (20000, 7))
    # labels drawn from softmax(logits / T): the NLL-optimal temperature is T itself
    p = _softmax(logits / true_t)
    labels = (rng.random((20000, 1)) > p.cumsum(1)).sum(1)
    assert fit_temperature(logits, labels) == pytest.approx(true_t, rel=0.05)


def test_fit_temperature_on_two_views_calibrates_their_average() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(0, 4, (5000, 5))
    b = a + rng.normal(0, 1, a.shape)
    labels = rng.integers(0, 5, 5000)  # labels unrelated to the logits: calibration means T -> large
    t = fit_temperature([a, b], labels)
    assert t > 10
    with pytest.raises(ConfigError):
        fit_temperature([a, b[:10]], labels)


def test_fold_temperature_scales_the_logits_exactly() -> None:
    torch.manual_seed(0)
    method = get_method("ce")(build_model("compact", 7), {"name": "ce"}, 7, {})
    method.eval()
    x = torch.randn(4, 1, 48, 48)
    with torch.no_grad():
        before = method.predict_logits(x)
        fold_temperature(method, 2.0)
        after = method.predict_logits(x)
    torch.testing.assert_close(after, before / 2.0)
    apsm = get_method("apsm")(build_model("compact", 7), {"name": "apsm"}, 7, {})
    with pytest.raises(ConfigError, match="own inference head"):
        fold_temperature(apsm, 2.0)


def test_holdout_split_is_stratified_seed_independent_and_never_trained_on(tmp_path, fer_csv) -> None:
    cfg = load_config(write_config(tmp_path / "h.yaml", fer_csv, tmp_path / "runs"),
                      ["data.holdout=0.2", "data.val_split=holdout"])
    train, val, _ = load_run_data(cfg)
    full, _, _ = load_run_data(load_config(write_config(tmp_path / "f.yaml", fer_csv, tmp_path / "runs")))
    assert len(train) + len(val) == len(full) and len(val) == round(0.2 * len(full))
    rows = {im.tobytes() for im in np.asarray(train.images)}
    assert not any(im.tobytes() in rows for im in np.asarray(val.images))
    share = np.bincount(val.labels, minlength=7) / len(val)
    np.testing.assert_allclose(share, np.bincount(full.labels, minlength=7) / len(full), atol=0.03)
    cfg1 = load_config(write_config(tmp_path / "h1.yaml", fer_csv, tmp_path / "runs", seed=1),
                       ["data.holdout=0.2", "data.val_split=holdout"])
    _, val1, _ = load_run_data(cfg1)
    np.testing.assert_array_equal(np.asarray(val1.images), np.asarray(val.images))
    with pytest.raises(ConfigError, match="needs data.holdout"):
        load_run_data(load_config(write_config(tmp_path / "x.yaml", fer_csv, tmp_path / "runs"),
                                  ["data.val_split=holdout"]))
    with pytest.raises(ConfigError, match="config key 'data.holdout'"):
        load_config(write_config(tmp_path / "y.yaml", fer_csv, tmp_path / "runs"), ["data.holdout=abc"])


def test_exported_model_records_the_crop_size_the_recognizer_uses(tmp_path, fer_csv) -> None:
    from ferkit.inference.recognizer import Recognizer

    cfg = load_config(write_config(tmp_path / "c.yaml", fer_csv, tmp_path / "runs", train={"epochs": 1}),
                      ["data.image_size=64"])
    Trainer(cfg).fit()
    model = load_model(tmp_path / "runs" / "c")
    assert model.preprocess["image_size"] == 64 and model.preprocess["crop_size"] == 48
    rec = Recognizer(str(tmp_path / "runs" / "c" / "model.pt"), detector="haar")
    assert rec.size == 48
    face = np.random.default_rng(0).integers(0, 255, (48, 48), np.uint8)
    np.testing.assert_allclose(rec.predict_faces([face]), model.predict_probs(face[None]), atol=1e-5)
