"""MixMatch: sharpening and MixUp by hand, the loss from its parts, the ramp, a run."""

from __future__ import annotations

import pytest
import torch

from ferkit.engine.trainer import Trainer
from ferkit.errors import ConfigError
from ferkit.methods.mixmatch import mixup, sharpen

from ssl_helpers import make_method, ssl_run_config, tiny_batch


def test_sharpen_by_hand():
    p = torch.tensor([[0.6, 0.3, 0.1]])
    expected = torch.tensor([[0.36, 0.09, 0.01]]) / 0.46  # T = 0.5 squares, then renormalises
    torch.testing.assert_close(sharpen(p, 0.5), expected)
    torch.testing.assert_close(sharpen(p, 1.0), p)
    assert sharpen(p, 0.01).argmax().item() == 0 and float(sharpen(p, 0.01).max()) > 0.999


def test_mixup_keeps_the_larger_share_on_the_own_row():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])
    t = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    perm = torch.tensor([2, 0, 1])
    for lam in (0.3, 0.7):  # lam' = max(lam, 1 - lam) = 0.7 either way
        mx, mt = mixup(x, t, lam, perm)
        torch.testing.assert_close(mx, 0.7 * x + 0.3 * x[perm])
        torch.testing.assert_close(mt, 0.7 * t + 0.3 * t[perm])


def test_ramp_and_loss_from_its_parts(one_thread):
    m = make_method("mixmatch", lambda_u=10.0, ramp_epochs=4).train()
    assert [m.ramp(e) for e in (0, 1, 4, 9)] == [0.0, 2.5, 10.0, 10.0]
    m.on_epoch_start(2)
    torch.manual_seed(0)
    loss, logs = m.train_step(tiny_batch())
    assert logs["lambda_u"] == 5.0 and 0.5 <= logs["lam"] <= 1.0
    assert float(loss.detach()) == pytest.approx(logs["loss_x"] + 5.0 * logs["loss_u"], rel=1e-5)
    # the guess is made without a gradient: only the mixed forward trains
    loss.backward()
    assert all(p.grad is not None for p in m.model.parameters() if p.requires_grad)


@pytest.mark.parametrize("bad", [{"k": 0}, {"temperature": 0}, {"alpha": -1}])
def test_bad_options_are_config_errors(bad):
    with pytest.raises(ConfigError):
        make_method("mixmatch", **bad)


def test_mixmatch_trains_end_to_end(tmp_path, fer_csv):
    row = Trainer(ssl_run_config(tmp_path, fer_csv, {"name": "mixmatch", "ramp_epochs": 2, "lambda_u": 10.0})).fit()
    assert row["val_accuracy"] > 0.3  # chance is 1/7; the path is what this checks, not the method
    assert row["train_lambda_u"] == 10.0 and "pl_above_precision" in row


def test_unlabelled_loss_is_squared_error_and_the_guess_has_no_gradient(one_thread, monkeypatch):
    from ferkit.methods import mixmatch

    m = make_method("mixmatch", ramp_epochs=0).train()
    seen = {"embed_grad": [], "mixed": None, "logits": None}
    real_mixup, real_embed = mixmatch.mixup, m.model.embed

    def record_mixup(*args):
        seen["mixed"] = real_mixup(*args)
        return seen["mixed"]

    def record_embed(x):
        seen["embed_grad"].append(torch.is_grad_enabled())
        return real_embed(x)

    monkeypatch.setattr(mixmatch, "mixup", record_mixup)
    monkeypatch.setattr(m.model, "embed", record_embed)
    m.model.register_forward_hook(lambda mod, inp, out: seen.__setitem__("logits", out.detach().float()))
    torch.manual_seed(0)
    batch = tiny_batch()
    loss, logs = m.train_step(batch)
    assert seen["embed_grad"][0] is False  # the label guess runs under no_grad
    nb = batch["images"].shape[0]
    _, mixed_t = seen["mixed"]
    expected = (seen["logits"][nb:].softmax(1) - mixed_t[nb:]).pow(2).mean()  # L2, not L1
    assert logs["loss_u"] == pytest.approx(float(expected), rel=1e-5)
    l1 = (seen["logits"][nb:].softmax(1) - mixed_t[nb:]).abs().mean()
    assert abs(float(l1) - logs["loss_u"]) > 1e-3  # the two differ enough to tell apart
