"""The training engine end to end: config checks, a learnable run, exact resume, evaluation."""

from __future__ import annotations

import json

import pytest
import torch

from ferkit.engine.config import load_config, parse_overrides
from ferkit.engine.trainer import Trainer
from ferkit.errors import ConfigError

from synthetic import crash_at, write_config


def test_overrides_parse_yaml_values():
    assert parse_overrides(["train.epochs=3", "optim.lr=1e-3", "model.name=resnet18", "data.path="]) == {
        "train": {"epochs": 3}, "optim": {"lr": 1e-3}, "model": {"name": "resnet18"}, "data": {"path": None}}


@pytest.mark.parametrize("override, key", [("optim.lrr=1", "optim.lrr"), ("trian.epochs=1", "trian"),
                                           ("method.bogus=1", "method.bogus")])
def test_unknown_config_key_is_named(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, [override])


def test_unknown_method_lists_known():
    with pytest.raises(ConfigError, match="known: .*ce"):
        load_config(None, ["method.name=nope"])


def test_method_defaults_filled():
    cfg = load_config(None, ["method.label_smoothing=0.1"])
    assert cfg["method"] == {"name": "ce", "target": "auto", "label_smoothing": 0.1}


def _weights(method):
    return {k: v.clone() for k, v in method.state_dict().items()}


def test_train_learns_and_writes_run(tmp_path, fer_csv):
    cfg_path = write_config(tmp_path / "run.yaml", fer_csv, tmp_path / "runs", train={"epochs": 4})
    cfg = load_config(cfg_path)
    tr = Trainer(cfg)
    row = tr.fit()
    run = tmp_path / "runs" / "run"
    for name in ("config.yaml", "log.jsonl", "metrics.csv", "meta.json", "model.pt", "checkpoints/last.pt",
                 "checkpoints/best.pt"):
        assert (run / name).is_file(), name
    assert row["val_accuracy"] > 0.6  # a bar's position is easy to learn; chance is 1/7
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    epochs = [r for r in rows if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [0, 1, 2, 3]
    assert any(r["kind"] == "train" for r in rows)
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    meta = json.loads((run / "meta.json").read_text())
    assert meta["num_train"] == 280 and meta["num_val"] == 70
    assert meta["precision"] == ("bfloat16" if tr.amp_dtype is torch.bfloat16 else "float32")  # what amp chose

    from ferkit.evaluation.evaluate import evaluate_model

    metrics = evaluate_model(run, "fer2013", fer_csv, "PublicTest", tmp_path / "ev" / "m.json",
                             options={"cache": False}, device="cpu")
    best = max(r["val_accuracy"] for r in epochs)
    assert metrics["accuracy"] == pytest.approx(best, abs=1e-6)  # model.pt holds the best epoch
    assert (tmp_path / "ev" / "m_confusion_matrix.png").stat().st_size > 1000
    assert (tmp_path / "ev" / "m_reliability.png").stat().st_size > 1000


# 8 steps an epoch, a checkpoint every 3 steps: stop at a mid-epoch checkpoint (6), one step past it (7),
# and early in epoch 2 when the last checkpoint is the end of epoch 1 (10)
@pytest.mark.parametrize("stop_step", [6, 7, 10])
def test_resume_continues_exactly(tmp_path, fer_csv, stop_step):
    # the training augmentation is random (crop, flip, erasing) and the model has dropout: a resume
    # is exact only if the RNG states, the epoch order and the position in the epoch are restored
    sections = {"train": {"epochs": 2, "checkpoint_every_steps": 3, "ema": 0.9},
                "augment": {"train": "train"}}
    straight = Trainer(load_config(write_config(tmp_path / "a.yaml", fer_csv, tmp_path / "runs", **sections)))
    straight.fit()

    cfg_b = load_config(write_config(tmp_path / "b.yaml", fer_csv, tmp_path / "runs", **sections))
    crashed = Trainer(cfg_b)
    crash_at(crashed, stop_step)
    resumed = Trainer(cfg_b)
    resumed.fit()

    a, b = _weights(straight.method), _weights(resumed.method)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert torch.equal(next(iter(straight.ema.shadow.state_dict().values())),
                       next(iter(resumed.ema.shadow.state_dict().values())))
    epochs = [json.loads(line) for line in (tmp_path / "runs" / "b" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in epochs if r["kind"] == "epoch"] == [0, 1]


def test_no_resume_flag_starts_afresh(tmp_path, fer_csv):
    cfg = load_config(write_config(tmp_path / "c.yaml", fer_csv, tmp_path / "runs", train={"epochs": 1}))
    Trainer(cfg).fit()
    again = Trainer(load_config(write_config(tmp_path / "c.yaml", fer_csv, tmp_path / "runs",
                                             train={"epochs": 1, "resume": False})))
    again.fit()
    assert again.step == 8  # trained its epoch again instead of finding the run finished


def test_view_normalises_with_one_or_per_channel_statistics():
    from ferkit.augment import build_augment
    from ferkit.engine.batches import make_view

    images = torch.full((2, 3, 8, 8), 255, dtype=torch.uint8)
    one = make_view(build_augment("eval", 8, 3), 0.5, 0.5)(images)
    assert torch.allclose(one, torch.ones_like(one))
    per = make_view(build_augment("eval", 8, 3), [0.0, 0.5, 1.0], [1.0, 0.5, 0.25])(images)
    assert torch.allclose(per[:, :, 0, 0], torch.tensor([[1.0, 1.0, 0.0]] * 2))


def test_bundled_model_names_resolve_for_evaluation():
    from ferkit.engine.model_io import load_model, resolve_model_path

    path = resolve_model_path("accurate")
    assert path.name == "fer2013_mobilenetv1face_112c_7_v2.pt" and path.is_file()
    assert resolve_model_path("default").name == "fer2013_mobilenetv1face_112c_7_v2_int8.onnx"
    assert resolve_model_path("fast").name == "fer2013_compactdeep_kd_48g_7_v2_int8.onnx"
    model = load_model("accurate", device="cpu")
    assert model.classes == ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear")
    assert model.preprocess["tta_flip"] is True
