"""train.cache_frozen: the frozen blocks computed once, the rest trained on their cached output."""

from __future__ import annotations

import json

import pytest
import torch

from ferkit.engine.config import load_config
from ferkit.engine.trainer import Trainer
from ferkit.engine.trunk_cache import erase_mask, feature_view
from ferkit.errors import ConfigError
from ferkit.models import build_model

from synthetic import write_config


def test_mobilenet_takes_images_or_its_cached_trunk_output() -> None:
    torch.manual_seed(0)
    m = build_model("mobilenet_v1", 7, 3, 64, frozen_blocks=7).eval()
    x = torch.randn(3, 3, 64, 64)
    t = m.backbone.trunk(x)
    assert t.shape[1] == m.backbone.trunk_channels == 512
    torch.testing.assert_close(m(t), m(x))
    assert build_model("mobilenet_v1", 7, 3, 64).backbone.trunk_channels == 0
    assert build_model("mobilenet_v1", 7, 3, 64, frozen_blocks=1).backbone.trunk_channels == 32


def test_feature_views_pick_the_face_or_its_mirror_and_erase() -> None:
    cached = torch.stack([torch.zeros(64, 4, 5, 5), torch.ones(64, 4, 5, 5)], 1).to(torch.bfloat16)
    assert feature_view({}, pick="face")(cached).sum() == 0
    picked = feature_view({}, pick="random")(cached)
    means = picked.mean(dim=(1, 2, 3))
    assert set(means.tolist()) == {0.0, 1.0} and 10 < means.sum() < 54  # both, per row
    mask = erase_mask(torch.ones(200, 1, 7, 7), 1.0)
    zeros = (mask == 0).flatten(1).sum(1)
    assert (zeros >= 1).all() and (zeros <= 49 * 0.5).all()  # one rectangle of 2-33 % in every row
    assert (erase_mask(torch.ones(50, 1, 7, 7), 0.0) == 1).all()
    dropped = feature_view({"channel_drop": 0.5}, pick="face")(torch.ones(100, 2, 8, 3, 3))
    assert 0.3 < (dropped.sum(dim=(2, 3)) == 0).float().mean() < 0.7
    with pytest.raises(ConfigError, match="unknown option"):
        feature_view({"erasing": 0.5}, pick="random")


def _cfg(tmp_path, fer_csv, **train):
    path = write_config(tmp_path / "run.yaml", fer_csv, tmp_path / "runs",
                        model={"name": "mobilenet_v1", "options": {"frozen_blocks": 6},
                               "pretrained": "vggface2_mobilenet_v1"},
                        data={"dataset": "fer2013", "path": str(fer_csv), "options": {"cache": False},
                              "image_size": 64, "channels": 3, "mean": "auto", "std": "auto"},
                        train={"epochs": 3, "device": "cpu", "progress": False, "threads": 1, "log_every": 2,
                               "cache_frozen": True, **train},
                        optim={"batch_size": 32, "lr": 3e-3})
    return load_config(path)


def test_cached_training_learns_keeps_the_trunk_and_exports_an_image_model(tmp_path, fer_csv, one_thread) -> None:
    cfg = _cfg(tmp_path, fer_csv)
    tr = Trainer(cfg)
    assert tr.loader.images.dtype == torch.bfloat16 and tr.loader.images.shape[1:3] == (2, 256)
    trunk_before = {k: v.clone() for k, v in tr.method.model.backbone.stem.state_dict().items()}
    upper_before = tr.method.model.backbone.blocks[-1].pw.conv.weight.clone()
    row = tr.fit()
    assert row["val_accuracy"] > 0.5  # validated on images, through the whole network; chance is 1/7
    for k, v in tr.method.model.backbone.stem.state_dict().items():
        assert torch.equal(v, trunk_before[k]), k
    assert not torch.equal(tr.method.model.backbone.blocks[-1].pw.conv.weight, upper_before)
    files = list((tmp_path / "runs" / ".trunk_cache").glob("trunk_*.npy"))
    assert len(files) == 1

    from ferkit.evaluation.evaluate import evaluate_model

    metrics = evaluate_model(tmp_path / "runs" / "run", "fer2013", fer_csv, "PublicTest", tmp_path / "m.json",
                             options={"cache": False}, device="cpu")
    rows = [json.loads(line) for line in (tmp_path / "runs" / "run" / "log.jsonl").read_text().splitlines()]
    best = max(r["val_accuracy"] for r in rows if r["kind"] == "epoch")
    assert metrics["accuracy"] == pytest.approx(best, abs=1e-6)  # model.pt: the whole network, on images

    again = Trainer(_cfg(tmp_path, fer_csv, resume=False))  # the same faces and trunk: read, not recomputed
    assert torch.equal(again.loader.images, tr.loader.images)
    assert list((tmp_path / "runs" / ".trunk_cache").glob("trunk_*.npy")) == files


def test_cache_frozen_needs_frozen_blocks(tmp_path, fer_csv) -> None:
    cfg = _cfg(tmp_path, fer_csv)
    cfg["model"]["options"] = {}
    with pytest.raises(ConfigError, match="frozen early blocks"):
        Trainer(cfg)


@pytest.mark.parametrize("method", ["ce", "apsm", "eac", "scn", "rul", "rald", "pseudolabel", "fixmatch", "mixmatch",
                                    "remixmatch", "adacm"])
def test_every_method_trains_on_cached_activations(tmp_path, fer_csv, one_thread, method) -> None:
    from ferkit.methods import get_method

    cfg = _cfg(tmp_path, fer_csv, epochs=1, eval_every=1)
    cfg["method"] = {**get_method(method).defaults, "name": method}
    if get_method(method).uses_unlabelled:
        cfg["data"].update(labelled=70, unlabelled_ratio=2)
    cfg["optim"]["batch_size"] = 16
    tr = Trainer(cfg)
    assert tr.loader.images.dtype == torch.bfloat16
    if tr.u_loader is not None:  # the unlabelled stream is served from the cache too
        assert tr.u_loader.images.dtype == torch.bfloat16 and tr.u_loader.images.shape[1] == 2
    row = tr.fit()
    assert row["val_accuracy"] >= 0 and row["train_loss"] == row["train_loss"]  # ran, no NaN


def test_a_finished_run_is_scored_from_its_cached_activations(tmp_path, fer_csv, one_thread) -> None:
    """The noise kind's training-row scoring: the run's cache is found under its EMA weights and gives
    the image path's probabilities and APSM uncertainty up to the cache's bf16 rounding."""
    from ferkit.data import load_dataset
    from ferkit.engine.model_io import load_model
    from ferkit.engine.trunk_cache import classify_cached
    from ferkit.experiments.noise import cached_training_trunk
    from ferkit.methods import get_method

    # amp off: on a CPU with native bf16, amp auto also *computes* the trunk in bf16 (measured there: up to
    # 0.07 in a probability, 0.002 on average, every label the same), which is not the rounding tested here
    cfg = _cfg(tmp_path, fer_csv, epochs=1, ema=0.9, amp="off")
    cfg["method"] = {**get_method("apsm").defaults, "name": "apsm"}
    Trainer(cfg).fit()
    model = load_model(tmp_path / "runs" / "run" / "checkpoints" / "last.pt", device="cpu")
    train = load_dataset("fer2013", fer_csv, "Training", cache=False)
    trunk = cached_training_trunk(model, train, cfg)
    assert trunk is not None and trunk.shape[:2] == (len(train), 2)  # needs the EMA's frozen blocks unchanged
    probs, unc = classify_cached(model.net, trunk, model.device, 64)
    ref_probs, ref_unc = model.classify(train.images, batch_size=64)
    assert unc is not None and ref_unc is not None
    assert abs(probs - ref_probs).max() < 0.05
    assert (probs.argmax(1) == ref_probs.argmax(1)).mean() > 0.95
    assert abs(unc - ref_unc).max() < 0.05 * (abs(ref_unc).max() + 1e-6)
    flip, _ = classify_cached(model.net, trunk, model.device, 64, tta_flip=True)
    ref_flip, _ = model.classify(train.images, batch_size=64, tta_flip=True)
    assert abs(flip - ref_flip).max() < 0.05 and abs(flip - probs).max() > 1e-4  # the mirror's view is used

    other = {**cfg, "train": {**cfg["train"], "cache_dir": str(tmp_path / "elsewhere")}}
    assert cached_training_trunk(model, train, other) is None  # no cache there: the caller scores images
