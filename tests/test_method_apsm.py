"""APSM: the heads, the sampling, the USL loss, inference on mu, and the end-to-end path."""

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


def _apsm(**cfg):
    torch.manual_seed(0)
    model = build_model("compact", num_classes=7, in_channels=1, image_size=48)
    return get_method("apsm")(model, {"name": "apsm", **cfg}, 7, {})


def test_usl_loss_matches_the_formula(one_thread):
    m = _apsm(pe=False, usl=True)
    mu = torch.randn(5, 512)
    s = torch.randn(5, 512).clamp(-2, 2)
    y = torch.tensor([0, 1, 2, 3, 4])
    m.eval()  # no dropout
    loss, ce = m.loss_terms(mu, s, y)
    v = s.exp().mean(1)
    ce_ref = F.cross_entropy(m.classifier(mu), y, reduction="none")
    torch.testing.assert_close(ce, ce_ref)
    torch.testing.assert_close(loss, ce_ref / (2 * v) + 0.5 * torch.log(v))
    # without USL the per-sample loss is the CE itself
    m2 = _apsm(pe=False, usl=False).eval()
    m2.classifier.load_state_dict(m.classifier.state_dict())
    torch.testing.assert_close(m2.loss_terms(mu, s, y)[0], ce_ref)


def test_usl_warmup_trains_on_ce_while_the_variance_tracks_it(one_thread):
    """Before usl_warmup_epochs the logits get the plain CE gradient and s the USL one; after, full USL."""
    m = _apsm(pe=False, usl=True, usl_warmup_epochs=2).eval()
    y = torch.tensor([0, 1, 2])
    mu0, s0 = torch.randn(3, 512), torch.randn(3, 512).clamp(-2, 2)

    def grads(epoch):
        m.on_epoch_start(epoch)
        mu, s = mu0.clone().requires_grad_(), s0.clone().requires_grad_()
        m.loss_terms(mu, s, y)[0].sum().backward()
        return mu.grad, s.grad

    mu_ce = mu0.clone().requires_grad_()
    F.cross_entropy(m.classifier(mu_ce), y, reduction="sum").backward()
    s_ref = s0.clone().requires_grad_()
    v = s_ref.exp().mean(1)
    ce = F.cross_entropy(m.classifier(mu0), y, reduction="none").detach()
    (ce / (2 * v) + 0.5 * v.log()).sum().backward()
    g_mu, g_s = grads(1)  # epoch 1 < warm-up
    torch.testing.assert_close(g_mu, mu_ce.grad)  # the network sees plain CE
    torch.testing.assert_close(g_s, s_ref.grad)  # the variance learns as under USL
    assert float(g_s.abs().sum()) > 0
    m.zero_grad()
    g_mu2, _ = grads(2)  # epoch 2 >= warm-up: the attenuated loss, whose mu gradient is CE's / (2 v)
    torch.testing.assert_close(g_mu2, g_mu / (2 * v.detach()[:, None]))
    with pytest.raises(ConfigError):
        _apsm(usl_warmup_epochs=-1)


def test_usl_attenuates_high_variance_samples(one_thread):
    """A larger variance lowers the weight of the CE term (1 / 2v), the point of USL."""
    m = _apsm(pe=False).eval()
    mu = torch.randn(1, 512) * 3
    y = torch.tensor([2])
    with torch.no_grad():
        ce = float(F.cross_entropy(m.classifier(mu), y))
    for s_val in (-3.0, 0.0, 2.0):
        with torch.no_grad():
            loss = float(m.loss_terms(mu, torch.full((1, 512), s_val), y)[0])
        v = math.exp(s_val)
        assert loss == pytest.approx(ce / (2 * v) + 0.5 * math.log(v), rel=1e-5)


def test_pe_samples_around_mu_with_sigma(one_thread):
    """z = mu + eps * exp(s/2): with a huge variance the loss varies between calls, with a tiny one not."""
    m = _apsm(pe=True, usl=False).eval()
    mu = torch.randn(64, 512)
    y = torch.randint(0, 7, (64,))
    tiny = torch.full((64, 512), -10.0)
    big = torch.full((64, 512), 4.0)
    a, b = m.loss_terms(mu, tiny, y)[0], m.loss_terms(mu, tiny, y)[0]
    torch.testing.assert_close(a, b, atol=1e-2, rtol=1e-2)
    c, d = m.loss_terms(mu, big, y)[0], m.loss_terms(mu, big, y)[0]
    assert (c - d).abs().mean() > 0.1
    # the reparameterised sample carries gradient to mu and s
    mu_g = mu.clone().requires_grad_()
    s_g = torch.zeros(64, 512, requires_grad=True)
    m.loss_terms(mu_g, s_g, y)[0].mean().backward()
    assert mu_g.grad.abs().sum() > 0 and s_g.grad.abs().sum() > 0


def test_inference_uses_mu_deterministically_and_reports_variance(one_thread):
    m = _apsm().eval()
    x = torch.randn(6, 1, 48, 48)
    with torch.no_grad():
        a, b = m.predict_logits(x), m.predict_logits(x)
        torch.testing.assert_close(a, b)  # no sampling at inference
        mu, s = m.heads(x)
        torch.testing.assert_close(a, m.classifier(mu))
        u = m.uncertainty(x)
    assert u.shape == (6,)
    torch.testing.assert_close(u, s.exp().mean(1))
    assert float(s.min()) >= m.lo and float(s.max()) <= m.hi
    # the log-variance head starts at logvar_init: uncertainty exp(-5) everywhere
    torch.testing.assert_close(u, torch.full((6,), math.exp(-5.0)))


def test_logvar_is_clamped(one_thread):
    m = _apsm(logvar_min=-1.0, logvar_max=1.0).eval()
    with torch.no_grad():
        m.logvar_head.bias.fill_(50.0)
        _, s = m.heads(torch.randn(2, 1, 48, 48))
    assert float(s.max()) == 1.0


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError):
        _apsm(logvar_min=2.0, logvar_max=1.0)
    with pytest.raises(ConfigError):
        _apsm(embed_dim=0)


@pytest.mark.parametrize("pe,usl", [(False, False), (True, False), (False, True), (True, True)])
def test_four_variants_train_and_report_uncertainty(tmp_path, fer_csv, pe, usl):
    import ferkit

    cfg_path = write_config(tmp_path / "apsm.yaml", fer_csv, tmp_path / "runs", train={"epochs": 6},
                            method={"name": "apsm", "pe": pe, "usl": usl, "embed_dim": 64})
    row = Trainer(load_config(cfg_path)).fit()
    assert row["val_accuracy"] > 0.5  # the synthetic bar task is learnable by every variant
    run = tmp_path / "runs" / "apsm"
    rec = ferkit.Recognizer(run, detector="none")
    faces = np.random.default_rng(0).integers(0, 256, (3, 48, 48), dtype=np.uint8)
    res = rec.predict(faces[0])
    assert len(res) == 1
    u_rec = res[0]["uncertainty"]
    p, u = rec.model.classify(faces[:1])
    assert u is not None and u_rec == pytest.approx(float(u[0]), rel=1e-5)
    assert u_rec > 0
