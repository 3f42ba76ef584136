"""SCN: importance weights, rank regularisation, relabelling (and its state), the end-to-end path."""

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

from synthetic import crash_at, write_config


def _scn(info=None, **cfg):
    torch.manual_seed(0)
    model = build_model("compact", num_classes=7, in_channels=1, image_size=48)
    return get_method("scn")(model, {"name": "scn", **cfg}, 7, info if info is not None else {"num_train": 10})


def test_rank_regularization_formula(one_thread):
    m = _scn(beta=0.7, delta1=0.15)
    # far apart groups: no loss; the top int(0.7 * 10) = 7 weights form the high group
    alpha = torch.tensor([0.3, 0.9, 0.05, 0.8, 0.7, 0.2, 0.6, 0.5, 0.4, 0.1])
    rr, high = m.rank_regularization(alpha)
    assert float(rr) == 0.0
    assert high.tolist() == [a >= 0.3 for a in alpha.tolist()]
    # close groups: delta1 - (mean_high - mean_low); B = 4 -> int(2.8) = 2 in the high group
    alpha = torch.tensor([0.50, 0.52, 0.49, 0.51], requires_grad=True)
    rr, high = m.rank_regularization(alpha)
    assert high.tolist() == [False, True, False, True]
    assert float(rr.detach()) == pytest.approx(0.15 - ((0.52 + 0.51) / 2 - (0.50 + 0.49) / 2), abs=1e-6)
    rr.backward()  # it pushes the high group up and the low group down
    torch.testing.assert_close(alpha.grad, torch.tensor([0.5, -0.5, 0.5, -0.5]))


def _logits_for(probs):
    return torch.tensor(probs).log()


def test_relabel_changes_exactly_the_samples_over_the_margin(one_thread):
    m = _scn(delta2=0.2, info={"num_train": 20})
    labels = torch.tensor([0, 1, 2, 3, 4, -1])
    index = torch.tensor([11, 3, 7, 0, 19, 5])
    p = [
        [0.70, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05],  # the label is the top class: keep
        [0.05, 0.05, 0.05, 0.70, 0.05, 0.05, 0.05],  # 0.70 - 0.05 > 0.2: relabel to 3
        [0.05, 0.05, 0.30, 0.49, 0.01, 0.05, 0.05],  # 0.49 - 0.30 = 0.19: keep
        [0.05, 0.05, 0.05, 0.25, 0.46, 0.09, 0.05],  # 0.46 - 0.25 = 0.21: relabel to 4
        [0.95, 0.00, 0.00, 0.00, 0.05, 0.00, 0.00],  # relabel to 0
        [0.95, 0.01, 0.01, 0.01, 0.01, 0.005, 0.005],  # unlabelled: never
    ]
    logits = _logits_for([[v + 1e-9 for v in row] for row in p])
    changed = m.relabel(index, labels, logits)
    assert changed.tolist() == [False, True, False, True, True, False]
    expected = torch.full((20,), -1)
    expected[3], expected[0], expected[19] = 3, 4, 0
    assert torch.equal(m.relabels, expected)
    # the labels these rows now train with
    assert m.current_labels(index, labels).tolist() == [0, 3, 2, 4, 0, -1]
    assert m.on_epoch_end(0) == {"relabeled": 3.0}
    # relabel_low_only: rows in the high group are left alone
    m2 = _scn(delta2=0.2, relabel_low_only=True, info={"num_train": 20})
    high = torch.tensor([False, True, False, False, True, False])
    assert m2.relabel(index, labels, logits, high).tolist() == [False, False, False, True, False, False]


def test_relabelling_starts_at_the_configured_epoch(one_thread):
    m = _scn(relabel_epoch=3)
    m.on_epoch_start(1)  # the second epoch (0-based 1)
    assert not m.relabel_now()
    m.on_epoch_start(2)  # the third
    assert m.relabel_now()
    assert not _scn(relabel=False).relabel_now()


def test_relabels_survive_a_state_dict_round_trip(one_thread, tmp_path):
    m = _scn(info={"num_train": 50})
    m.relabels[[4, 17, 42]] = torch.tensor([6, 0, 2])
    path = tmp_path / "s.pt"
    torch.save(m.state_dict(), path)
    # a method built without num_train (as at inference) takes the saved buffer's length
    m2 = _scn(info={})
    assert m2.relabels.numel() == 0
    m2.load_state_dict(torch.load(path, weights_only=True))
    assert torch.equal(m2.relabels, m.relabels)
    idx, given = torch.tensor([4, 5, 42]), torch.tensor([1, 1, 1])
    assert m2.current_labels(idx, given).tolist() == [6, 1, 2]


def test_train_step_weights_logits_and_uses_current_labels(one_thread):
    m = _scn(info={"num_train": 8}, relabel_epoch=1).eval()  # eval: no dropout, BatchNorm running stats
    m.views = {"train": lambda imgs: imgs.float() / 127.5 - 1}
    images = torch.randint(0, 256, (4, 1, 48, 48), dtype=torch.uint8)
    given = torch.tensor([0, 1, 2, 3])
    index = torch.tensor([1, 2, 3, 4])
    m.relabels[2] = 5  # row 2 was relabelled earlier: it trains with 5
    x = images.float() / 127.5 - 1
    with torch.no_grad():
        emb = m.model.embed(x)
        alpha = torch.sigmoid(m.attention(emb)).squeeze(1)
        logits = alpha[:, None] * m.model.fc(emb)
        ce = F.cross_entropy(logits, torch.tensor([0, 5, 2, 3]))
        rr = m.rank_regularization(alpha)[0]
    loss, logs = m.train_step({"images": images, "labels": given, "index": index})
    assert logs["ce"] == pytest.approx(float(ce), rel=1e-5)
    assert float(loss.detach()) == pytest.approx(float(ce + rr), rel=1e-5)
    assert logs["weight"] == pytest.approx(float(alpha.mean()), rel=1e-5)
    assert "relabeled_batch" in logs  # relabel_epoch 1: relabelling is on from the start


def test_inference_weights_uncertainty(one_thread):
    m = _scn().eval()
    x = torch.randn(5, 1, 48, 48)
    with torch.no_grad():
        alpha, raw = m.forward_parts(x)
        w = m.sample_weights(x)
        torch.testing.assert_close(w, alpha)
        assert ((w > 0) & (w < 1)).all()
        torch.testing.assert_close(m.predict_logits(x), alpha[:, None] * raw)
        torch.testing.assert_close(m.predict_logits(x), m.predict_logits(x))
        torch.testing.assert_close(m.uncertainty(x), 1 - alpha)
    m2 = _scn(weighted_inference=False).eval()
    with torch.no_grad():
        torch.testing.assert_close(m2.predict_logits(x), raw)
        assert torch.equal(m2.predict_logits(x).argmax(1), m.predict_logits(x).argmax(1))


def test_bad_options_are_config_errors():
    for bad in ({"beta": 1.0}, {"beta": 0}, {"delta1": -0.1}, {"relabel_epoch": 0}):
        with pytest.raises(ConfigError):
            _scn(**bad)


def test_trains_relabels_predicts_and_draws_cams(tmp_path, fer_csv):
    import ferkit

    cfg_path = write_config(tmp_path / "scn.yaml", fer_csv, tmp_path / "runs", train={"epochs": 4},
                            method={"name": "scn", "relabel_epoch": 3}, data={"noise_rate": 0.3})
    trainer = Trainer(load_config(cfg_path))
    row = trainer.fit()
    assert row["val_accuracy"] > 0.5  # chance is 1/7; 30 % of the training labels are wrong
    relabels = trainer.method.relabels
    assert relabels.numel() == 280
    log = (tmp_path / "runs" / "scn" / "log.jsonl").read_text()
    assert '"rr"' in log and '"relabeled_batch"' in log
    assert trainer.method.on_epoch_end(3) == {"relabeled": float((relabels >= 0).sum())}
    run = tmp_path / "runs" / "scn"
    rec = ferkit.Recognizer(run, detector="none")
    assert torch.equal(rec.model.net.relabels.cpu(), relabels.cpu())  # the labels went with the weights
    face = np.random.default_rng(0).integers(0, 256, (48, 48), dtype=np.uint8)
    (res,) = rec.predict(face)
    with torch.no_grad():
        w = rec.model.net.sample_weights(rec.model.view(torch.from_numpy(face)[None, None]))
    assert res["uncertainty"] == pytest.approx(1 - float(w[0]), rel=1e-5)
    assert not math.isnan(res["uncertainty"])
    (cam,) = rec.cam(face)
    assert cam.shape == (48, 48) and cam.max() == pytest.approx(1.0, abs=1e-5)

    # a run that crashes in epoch 4 and is resumed from the end-of-epoch-3 checkpoint gets the
    # relabels back and ends exactly where the uninterrupted run did
    cfg_b = write_config(tmp_path / "scn_b.yaml", fer_csv, tmp_path / "runs", train={"epochs": 4},
                         method={"name": "scn", "relabel_epoch": 3}, data={"noise_rate": 0.3})
    crashed = Trainer(load_config(cfg_b))
    crash_at(crashed, 26)  # 8 steps an epoch: two steps into epoch 4
    resumed = Trainer(load_config(cfg_b))
    assert (resumed.method.relabels >= 0).sum() == 0  # fresh: nothing loaded yet
    resumed.fit()
    assert torch.equal(resumed.method.relabels, relabels)
