"""RUL: the uncertainty branch, the relative mix, the add-up loss, inference, and the end-to-end path."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ferkit.engine.config import load_config
from ferkit.engine.trainer import Trainer
from ferkit.errors import ConfigError
from ferkit.methods import get_method
from ferkit.models import build_model

from synthetic import write_config


def _rul(**cfg):
    torch.manual_seed(0)
    model = build_model("compact", num_classes=7, in_channels=1, image_size=48)
    return get_method("rul")(model, {"name": "rul", **cfg}, 7, {})


def test_mix_weights_are_relative_uncertainties(one_thread):
    mu = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])
    u = torch.tensor([1.0, 3.0, 2.0])
    perm = torch.tensor([1, 2, 0])
    mixed, lam = get_method("rul").mix(mu, u, perm)
    torch.testing.assert_close(lam, torch.tensor([1 / 4, 3 / 5, 2 / 3]))
    ref = torch.stack([0.25 * mu[0] + 0.75 * mu[1], 0.6 * mu[1] + 0.4 * mu[2], (2 / 3) * mu[2] + (1 / 3) * mu[0]])
    torch.testing.assert_close(mixed, ref)
    # a sample paired with itself stays as it is
    mixed, lam = get_method("rul").mix(mu, u, torch.arange(3))
    torch.testing.assert_close(mixed, mu)
    torch.testing.assert_close(lam, torch.full((3,), 0.5))


def test_uncertainty_is_mean_exp_of_the_clamped_branch(one_thread):
    m = _rul(logvar_clamp=2.0)
    s = torch.tensor([[0.0, math.log(3.0)], [5.0, -5.0]])
    torch.testing.assert_close(m.uncertainty_of(s), torch.tensor([2.0, (math.exp(2.0) + math.exp(-2.0)) / 2]))


def test_add_up_loss_formula(one_thread):
    m = _rul()
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 1.0]])
    y_a, y_b = torch.tensor([0, 2]), torch.tensor([1, 2])
    logp = logits.log_softmax(1)
    by_hand = -0.5 * (logp[0, 0] + logp[1, 2]) / 2 - 0.5 * (logp[0, 1] + logp[1, 2]) / 2
    assert float(m.add_up_loss(logits, y_a, y_b)) == pytest.approx(float(by_hand), rel=1e-6)
    # an unlabelled partner (-1) drops out of its term
    by_hand = -0.5 * (logp[0, 0] + logp[1, 2]) / 2 - 0.5 * logp[1, 2]
    assert float(m.add_up_loss(logits, y_a, torch.tensor([-1, 2]))) == pytest.approx(float(by_hand), rel=1e-6)


def test_train_step_mixes_partners_and_sums_both_labels(one_thread):
    m = _rul().eval()  # eval: no dropout, BatchNorm running stats, so the pieces can be recomputed
    m.views = {"train": lambda imgs: imgs.float() / 127.5 - 1}
    images = torch.randint(0, 256, (6, 1, 48, 48), dtype=torch.uint8)
    labels = torch.tensor([0, 1, 2, 3, 4, 5])
    torch.manual_seed(3)
    loss, logs = m.train_step({"images": images, "labels": labels, "index": torch.arange(6)})
    torch.manual_seed(3)
    perm = torch.randperm(6)
    with torch.no_grad():
        f = m.model.embed(images.float() / 127.5 - 1)
        mu = m.mu_head(f)
        u = m.logvar_head(f).clamp(-10, 10).exp().mean(1)
        lam = (u / (u + u[perm]))[:, None]
        logits = m.classifier(lam * mu + (1 - lam) * mu[perm])
        ref = 0.5 * F.cross_entropy(logits, labels) + 0.5 * F.cross_entropy(logits, labels[perm])
    assert float(loss.detach()) == pytest.approx(float(ref), rel=1e-5)
    assert logs["u"] == pytest.approx(float(u.mean()), rel=1e-5)
    assert loss.requires_grad


def test_inference_is_deterministic_on_mu_and_reports_u(one_thread):
    m = _rul()
    m.train()
    with torch.no_grad():  # move the BatchNorm statistics away from their start
        for _ in range(3):
            m.heads(torch.randn(16, 1, 48, 48) * 2 + 0.3)
    m.eval()
    x = torch.randn(5, 1, 48, 48)
    with torch.no_grad():
        a, b = m.predict_logits(x), m.predict_logits(x)
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(a, m.classifier(m.mu_head(m.model.embed(x))))
        u = m.uncertainty(x)
        assert u.shape == (5,) and (u > 0).all()
        torch.testing.assert_close(u, m.uncertainty(x))
        # cam_weights: the exact affine map from pooled features to these logits
        w, bias = m.cam_weights()
        assert w.shape == (7, m.model.feature_dim)
        torch.testing.assert_close(m.model.embed(x) @ w.T + bias, a, rtol=1e-4, atol=1e-4)


def test_bad_options_are_config_errors():
    for bad in ({"embed_dim": 0}, {"head_dropout": 1.0}, {"logvar_clamp": 0}):
        with pytest.raises(ConfigError):
            _rul(**bad)


def test_trains_predicts_with_uncertainty_and_draws_cams(tmp_path, fer_csv):
    import ferkit

    cfg_path = write_config(tmp_path / "rul.yaml", fer_csv, tmp_path / "runs", train={"epochs": 5},
                            method={"name": "rul", "embed_dim": 32})
    row = Trainer(load_config(cfg_path)).fit()
    assert row["val_accuracy"] > 0.5  # chance is 1/7
    run = tmp_path / "runs" / "rul"
    rec = ferkit.Recognizer(run, detector="none")
    faces = np.random.default_rng(0).integers(0, 256, (2, 48, 48), dtype=np.uint8)
    (res,) = rec.predict(faces[0])
    p, u = rec.model.classify(faces[:1])
    assert u is not None and res["uncertainty"] == pytest.approx(float(u[0]), rel=1e-5) and u[0] > 0
    assert rec.predict_faces(faces).shape == (2, 7)
    (cam,) = rec.cam(faces[0])
    assert cam.shape == (48, 48) and cam.max() == pytest.approx(1.0, abs=1e-5)
