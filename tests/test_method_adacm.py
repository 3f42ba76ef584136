"""Ada-CM: margin schedules, margins from the EMA model, above/below routing, the InfoNCE formula, a run."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ferkit.engine.trainer import Trainer
from ferkit.errors import ConfigError
from ferkit.methods.adacm import class_margins, schedule_factor
from ferkit.methods.semisupervised import multiview_info_nce

from ssl_helpers import make_method, ssl_run_config, tiny_batch


# ---- the schedules and the margins -------------------------------------------------------
def test_schedule_factors_are_the_reports_formulas():
    for t in (1, 2, 5, 30):
        assert schedule_factor("sigmoid", t) == pytest.approx(1 / (1 + math.exp(-t)))
        assert schedule_factor("ratio", t) == pytest.approx(1 / (1 + (t + 1) / t))
        assert schedule_factor("half_ratio", t) == pytest.approx(1 / (1 + (t + 1) / (2 * t)))
        assert schedule_factor("exp_log2", t) == pytest.approx(1 / (1 + math.exp(math.log2(t + 1))))
    assert schedule_factor("sigmoid", 2, gamma=3.0) == pytest.approx(1 / (1 + 3.0 ** -2))
    with pytest.raises(ConfigError):
        schedule_factor("linear", 1)
    with pytest.raises(ConfigError):
        make_method("adacm", schedule="linear")


def _probs_with_margins():
    # class 0: rows 0, 1 correct (0.99, 0.97) -> T_0 = 0.98; row 2 predicted 0 but labelled 1: ignored
    # class 1: row 3 correct at 0.85; class 2: nothing correct -> the floor
    probs = torch.tensor([[0.99, 0.005, 0.005], [0.97, 0.02, 0.01], [0.5, 0.3, 0.2], [0.1, 0.85, 0.05],
                          [0.6, 0.1, 0.3]])
    labels = torch.tensor([0, 0, 1, 1, 2])
    return probs, labels


def test_margins_by_hand_from_correct_rows_only():
    probs, labels = _probs_with_margins()
    for t in (1, 3, 10):
        m = class_margins(probs, labels, t, 3)
        f = 1 / (1 + math.exp(-t))
        expected = [max(0.8, 0.97 * 0.98 * f), max(0.8, 0.97 * 0.85 * f), 0.8]
        assert m.tolist() == pytest.approx(expected, abs=1e-6)
    assert class_margins(probs, labels, 10, 3, floor=0.5).tolist() == pytest.approx(
        [0.97 * 0.98 / (1 + math.exp(-10)), 0.97 * 0.85 / (1 + math.exp(-10)), 0.5], abs=1e-6)


@pytest.mark.parametrize("schedule", ["sigmoid", "ratio", "half_ratio", "exp_log2"])
def test_margins_never_below_the_floor_and_follow_the_schedule(schedule):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(400, 7)) * 4
    probs = torch.from_numpy(logits).softmax(1)
    labels = torch.from_numpy(np.where(rng.random(400) < 0.7, logits.argmax(1), rng.integers(0, 7, 400)))
    conf, pred = probs.max(1)
    prev = None
    for t in range(1, 31):
        m = class_margins(probs, labels, t, 7, schedule=schedule)
        assert float(m.min()) >= 0.8 - 1e-7
        f = schedule_factor(schedule, t)
        for c in range(7):
            sel = (pred == c) & (labels == c)
            assert float(m[c]) == pytest.approx(max(0.8, 0.97 * float(conf[sel].mean()) * f), abs=1e-6)
        if schedule == "sigmoid" and prev is not None:
            assert bool((m >= prev - 1e-7).all())  # raised over epochs
        prev = m
    if schedule != "sigmoid":  # as written in the report these stay below 0.8 / 0.97: a fixed 0.8
        assert torch.allclose(prev, torch.full((7,), 0.8))


class _Fixed(nn.Module):
    """A stand-in EMA model: fixed logits per row, whatever the view did to the image."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits
        self.seen = 0

    def predict_logits(self, x):
        out = self.logits[self.seen:self.seen + x.shape[0]]
        self.seen += x.shape[0]
        return out


def test_margins_come_from_the_ema_model_on_the_labelled_rows(one_thread):
    m = make_method("adacm", num_classes=3, margin_floor=0.5)
    probs, labels = _probs_with_margins()
    images = torch.zeros(5, 1, 48, 48, dtype=torch.uint8)
    ema = _Fixed(probs.log())
    m.ema_model = lambda: ema
    m.labelled_data = lambda: (images, labels)
    assert m.margins.tolist() == [0.5, 0.5, 0.5]  # the first epoch uses the floor
    row = m.on_epoch_end(2)  # after 3 epochs
    assert [row[f"margin/{c}"] for c in ("neutral", "happiness", "surprise")] == [0.5, 0.5, 0.5]  # in use
    torch.testing.assert_close(m.margins, class_margins(probs, labels, 3, 3, floor=0.5))
    assert ema.seen == 5
    # without EMA the live model is used (and left in training mode)
    m.ema_model = lambda: None
    m.train()
    m.on_epoch_end(3)
    assert m.training and float(m.margins.min()) >= 0.5


# ---- the unlabelled losses ---------------------------------------------------------------
def _info_nce_loops(feats: torch.Tensor, t: float) -> float:
    n, v, _ = feats.shape
    z = [(i, a, feats[i, a]) for a in range(v) for i in range(n)]
    total = 0.0
    for i, a, za in z:
        denom = sum(math.exp(float(za @ zk) / t) for j, b, zk in z if (j, b) != (i, a))
        pos = [math.log(math.exp(float(za @ zp) / t) / denom) for j, b, zp in z if j == i and b != a]
        total += -sum(pos) / len(pos)
    return total / len(z)


@pytest.mark.parametrize("n,v", [(3, 2), (4, 3), (1, 2)])
def test_info_nce_matches_the_formula(n, v):
    torch.manual_seed(n * 10 + v)
    feats = F.normalize(torch.randn(n, v, 5, dtype=torch.float64), dim=2)
    got = float(multiview_info_nce(feats, 0.07))
    assert got == pytest.approx(_info_nce_loops(feats, 0.07), rel=1e-5, abs=1e-9)
    if n == 1:
        assert got == pytest.approx(0.0, abs=1e-9)  # the only other row-view is the positive


def test_info_nce_of_nothing_is_zero_with_a_graph():
    feats = torch.zeros(0, 2, 4, requires_grad=True)
    loss = multiview_info_nce(feats, 0.07)
    assert float(loss.detach()) == 0.0 and loss.requires_grad


def test_routing_above_and_below_the_class_margin(one_thread):
    m = make_method("adacm", num_classes=3)
    m.margins.copy_(torch.tensor([0.9, 0.6, 0.8]))
    avg = torch.tensor([[0.85, 0.10, 0.05],  # class 0 at 0.85 < 0.9: below
                        [0.10, 0.70, 0.20],  # class 1 at 0.70 >= 0.6: above
                        [0.05, 0.05, 0.90],  # class 2 at 0.90 >= 0.8: above
                        [0.30, 0.30, 0.40]])  # class 2 at 0.40: below
    d = torch.tensor([[0.04, -0.02, -0.02]] * 4)
    weak = [(avg + d).log(), (avg - d).log()]  # two weak views whose probabilities average to `avg`
    strong = [torch.tensor([[0.1, 0.2, 0.3], [0.0, 1.0, 0.0], [1.0, 0.0, 2.0], [0.3, 0.2, 0.1]],
                           requires_grad=True)]
    feats = [torch.randn(4, 6, requires_grad=True), torch.randn(4, 6, requires_grad=True)]
    out = m.unlabelled_losses(weak, strong, feats)
    assert out["above"].tolist() == [False, True, True, False]
    assert out["pseudo"].tolist() == [0, 1, 2, 2]
    ce1 = F.cross_entropy(strong[0][1:2], torch.tensor([1]))
    ce2 = F.cross_entropy(strong[0][2:3], torch.tensor([2]))
    torch.testing.assert_close(out["loss_u"], (ce1 + ce2) / 4)  # over the whole unlabelled batch
    below = torch.stack([F.normalize(f[[0, 3]], dim=1) for f in feats], dim=1)
    assert float(out["loss_c"].detach()) == pytest.approx(_info_nce_loops(below.detach(), 0.07), rel=1e-5)
    (out["loss_u"] + out["loss_c"]).backward()
    # the strong rows below the margin get no CE gradient; the features above get no contrastive one
    assert strong[0].grad[[0, 3]].abs().sum() == 0 and strong[0].grad[[1, 2]].abs().sum() > 0
    assert feats[0].grad[[1, 2]].abs().sum() == 0 and feats[0].grad[[0, 3]].abs().sum() > 0
    # eq. 4's reduction: over the rows above only
    sel = make_method("adacm", num_classes=3, u_reduction="selected")
    sel.margins.copy_(m.margins)
    torch.testing.assert_close(sel.unlabelled_losses(weak, strong, feats)["loss_u"], (ce1 + ce2) / 2)


def test_total_loss_weights_and_variants(one_thread):
    batch = tiny_batch()
    for weak_views, strong_views in ((2, 1), (3, 1), (2, 2)):
        m = make_method("adacm", weak_views=weak_views, strong_views=strong_views).train()
        m.margins.copy_(torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0]))
        seen: list[int] = []
        m.forward_views = lambda views, f=m.forward_views, seen=seen: seen.append(len(views)) or f(views)
        torch.manual_seed(0)
        loss, logs = m.train_step(batch)
        assert seen == [1 + weak_views + strong_views]
        assert float(loss.detach()) == pytest.approx(
            0.5 * logs["loss_s"] + 1.0 * logs["loss_u"] + 0.1 * logs["loss_c"], rel=1e-5)
        assert 0.0 < logs["above"] < 1.0 and logs["loss_c"] > 0 and logs["loss_u"] > 0


@pytest.mark.parametrize("bad", [{"weak_views": 0}, {"strong_views": 0}, {"margin_view": "strong"},
                                 {"u_reduction": "sum"}, {"temperature": 0}])
def test_bad_options_are_config_errors(bad):
    with pytest.raises(ConfigError):
        make_method("adacm", **bad)


# ---- end to end --------------------------------------------------------------------------
def test_adacm_trains_end_to_end_and_logs_margins(tmp_path, fer_csv):
    cfg = ssl_run_config(tmp_path, fer_csv, {"name": "adacm", "margin_floor": 0.3})
    tr = Trainer(cfg)
    row = tr.fit()
    assert row["val_accuracy"] > 0.3  # chance is 1/7; the path is what this checks, not the method
    with (tmp_path / "runs" / "adacm" / "metrics.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6
    margins = [[float(r[f"margin/{c}"]) for c in tr.classes] for r in rows]
    assert margins[0] == pytest.approx([0.3] * 7)  # the first epoch uses the floor
    assert all(v >= 0.3 - 1e-6 for ms in margins for v in ms)
    assert any(v > 0.3 + 1e-3 for ms in margins for v in ms)  # and they rise from the EMA model's confidence
    for key in ("pl_above_precision", "pl_above_recall", "pl_below_precision", "pl_below_recall",
                "pl_above_recall/happiness", "train_loss_c", "train_above"):
        assert key in rows[-1], key
    # the exported model loads for inference like any other (the margins are just buffers in it)
    from ferkit.engine.model_io import load_model

    probs = load_model(tmp_path / "runs" / "adacm", device="cpu").predict_probs(tr.val_data.images[:4])
    assert probs.shape == (4, 7) and np.allclose(probs.sum(1), 1, atol=1e-5)
