"""The semi-supervised harness: labelled / unlabelled split, batch composition, exact resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ferkit.engine.config import load_config
from ferkit.engine.data import load_run_data, load_ssl_data
from ferkit.engine.trainer import Trainer
from ferkit.errors import ConfigError

from synthetic import crash_at, write_config

SSL_DATA = {"labelled": 70, "unlabelled_ratio": 2}  # 280 synthetic rows: 70 labelled, 210 unlabelled


def _cfg(tmp_path, fer_csv, name="ssl", method="fixmatch", data=None, train=None, **sections):
    d = {"dataset": "fer2013", "path": str(fer_csv), "options": {"cache": False}, **SSL_DATA, **(data or {})}
    t = {"epochs": 2, **(train or {})}
    sections.setdefault("optim", {"batch_size": 16, "lr": 3e-3})
    return load_config(write_config(tmp_path / f"{name}.yaml", fer_csv, tmp_path / "runs",
                                    method={"name": method} if isinstance(method, str) else method,
                                    data=d, train=t, **sections))


def _rows(images: np.ndarray) -> set[bytes]:
    return {img.tobytes() for img in images}


# ---- the split ---------------------------------------------------------------------------
@pytest.mark.parametrize("labelled", [70, 0.25])
def test_split_counts_proportions_disjoint(tmp_path, fer_csv, labelled):
    full, _, _ = load_run_data(_cfg(tmp_path, fer_csv, data={"labelled": None}))
    lab, unl, val, info = load_ssl_data(_cfg(tmp_path, fer_csv, data={"labelled": labelled}))
    assert len(lab) == 70 and len(unl) == 210 and len(val) == 70
    assert info["num_train"] == 70 and info["num_unlabelled"] == 210
    assert info["class_counts"] == lab.class_counts().tolist()
    # per class in proportion: within one row of the exact share (largest remainder; fraction: rounding)
    share = full.class_counts() * 70 / len(full)
    assert np.all(np.abs(lab.class_counts() - share) <= 1)
    assert np.array_equal(lab.class_counts() + unl.class_counts(), full.class_counts())
    # disjoint and covering every training row (the synthetic images are unique noise)
    a, b = _rows(lab.images), _rows(unl.images)
    assert not a & b and a | b == _rows(full.images)


def test_split_is_seeded(tmp_path, fer_csv):
    a, _, _, _ = load_ssl_data(_cfg(tmp_path, fer_csv))
    b, _, _, _ = load_ssl_data(_cfg(tmp_path, fer_csv))
    c, _, _, _ = load_ssl_data(_cfg(tmp_path, fer_csv, seed=1))
    assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
    assert _rows(a.images) != _rows(c.images)
    assert np.array_equal(a.class_counts(), c.class_counts())  # same allocation, other rows


@pytest.mark.parametrize("bad", [0, -5, 1.5, "many", True, 280])
def test_bad_labelled_values_are_config_errors(tmp_path, fer_csv, bad):
    with pytest.raises(ConfigError, match="labelled"):
        load_ssl_data(_cfg(tmp_path, fer_csv, data={"labelled": bad}))


def test_ssl_method_needs_unlabelled_data(tmp_path, fer_csv):
    with pytest.raises(ConfigError, match="data.labelled"):
        Trainer(_cfg(tmp_path, fer_csv, data={"labelled": None}))
    with pytest.raises(ConfigError, match="unlabelled_ratio"):
        Trainer(_cfg(tmp_path, fer_csv, data={"unlabelled_ratio": 0}))


# ---- batches -----------------------------------------------------------------------------
def _all_batches(tr: Trainer, epochs: int) -> list[list[dict]]:
    out = []
    for e in range(epochs):
        tr.epoch, tr.batch_in_epoch = e, 0
        out.append(list(tr._batches()))
    return out


def test_batches_hold_labelled_and_unlabelled_parts(tmp_path, fer_csv):
    tr = Trainer(_cfg(tmp_path, fer_csv))
    assert tr.steps_per_epoch == 70 // 16 == 4 and len(tr.u_loader) == 210 // 32 == 6
    epochs = _all_batches(tr, 3)
    for batches in epochs:
        assert len(batches) == 4
        for b in batches:
            assert b["images"].shape == (16, 1, 48, 48) and b["images"].dtype == torch.uint8
            assert b["u_images"].shape == (32, 1, 48, 48) and b["u_index"].shape == (32,)
            assert b["labels"].shape == (16,) and b["u_labels"].shape == (32,)
            assert int(b["index"].max()) < 70 and int(b["u_index"].max()) < 210
            # the rows are what the indices say: labelled from the labelled part, unlabelled from the rest
            assert torch.equal(b["u_images"], tr.u_loader.images[b["u_index"]])
            assert torch.equal(b["u_labels"], tr.u_loader.labels[b["u_index"]])
            assert torch.equal(b["images"], tr.loader.images[b["index"]])
        # an epoch is one pass over the labelled rows: 64 distinct of the 70
        assert len(torch.cat([b["index"] for b in batches]).unique()) == 64
    # the unlabelled stream restarts on its own: steps 0-5 are one pass (192 distinct rows), step 6 a new order
    u = [b["u_index"] for batches in epochs for b in batches]
    assert len(torch.cat(u[:6]).unique()) == 192
    assert len(torch.cat(u[6:12]).unique()) == 192 and not torch.equal(torch.cat(u[6:12]), torch.cat(u[:6]))
    # the labelled order is the plain epoch loop's
    assert torch.equal(epochs[1][2]["index"], tr.loader.order(1)[32:48])


def test_fixed_steps_per_epoch_cycles_the_labelled_loader(tmp_path, fer_csv):
    tr = Trainer(_cfg(tmp_path, fer_csv, train={"steps_per_epoch": 6}))
    assert tr.steps_per_epoch == 6
    flat = [b for batches in _all_batches(tr, 2) for b in batches]
    assert len(flat) == 12
    # step s takes batch s % 4 of labelled loader epoch s // 4
    for s, b in enumerate(flat):
        assert torch.equal(b["index"], tr.loader.order(s // 4)[(s % 4) * 16:(s % 4 + 1) * 16])
        assert torch.equal(b["u_index"], tr.u_loader.order(s // 6)[(s % 6) * 32:(s % 6 + 1) * 32])
    # a mid-epoch start gives the same batches as the uninterrupted stream
    tr.epoch, tr.batch_in_epoch = 1, 4
    rest = list(tr._batches())
    assert len(rest) == 2 and torch.equal(rest[0]["u_index"], flat[10]["u_index"])


def test_supervised_baseline_trains_on_the_labelled_part_only(tmp_path, fer_csv):
    tr = Trainer(_cfg(tmp_path, fer_csv, name="sup", method="ce"))
    assert tr.u_loader is None
    b = next(iter(tr._batches()))
    assert set(b) == {"images", "labels", "index"}
    tr.fit()
    meta = json.loads((tmp_path / "runs" / "sup" / "meta.json").read_text())
    assert meta["num_train"] == 70 and meta["num_unlabelled"] == 210
    assert tr.step == 2 * 4


# ---- exact resume ------------------------------------------------------------------------
def _weights(method):
    return {k: v.clone() for k, v in method.state_dict().items()}


# 4 steps an epoch, 2 epochs, a checkpoint every 3 steps: stop one step past the end-of-epoch-1 checkpoint
# (5; the margins computed at that epoch's end come from the checkpoint) and one past a mid-epoch one (7).
# Ada-CM exercises the margins computed on the EMA model and the pseudo-label counts kept in buffers.
@pytest.mark.parametrize("stop_step", [5, 7])
def test_ssl_resume_continues_exactly(tmp_path, fer_csv, stop_step, one_thread):
    sections = {"train": {"epochs": 2, "checkpoint_every_steps": 3, "ema": 0.9},
                "augment": {"train": "weak"}}
    method = {"name": "adacm", "margin_floor": 0.2, "weak_views": 2}  # a low floor: margins really move
    data = {"unlabelled_ratio": 1}  # 16 unlabelled rows a step: enough, and cheap
    straight = Trainer(_cfg(tmp_path, fer_csv, name="a", method=method, data=data, **sections))
    straight.fit()
    cfg_b = _cfg(tmp_path, fer_csv, name="b", method=method, data=data, **sections)
    crashed = Trainer(cfg_b)
    crash_at(crashed, stop_step)
    resumed = Trainer(cfg_b)
    resumed.fit()

    a, b = _weights(straight.method), _weights(resumed.method)
    assert a.keys() == b.keys() and "margins" in a and "pl_counts" in a
    for k in a:
        assert torch.equal(a[k], b[k]), k
    sa, sb = straight.ema.shadow.state_dict(), resumed.ema.shadow.state_dict()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k

    def epoch_rows(name):
        rows = [json.loads(x) for x in (tmp_path / "runs" / name / "log.jsonl").read_text().splitlines()]
        return [r for r in rows if r["kind"] == "epoch"]

    ra, rb = epoch_rows("a"), epoch_rows("b")
    assert [r["epoch"] for r in rb] == [0, 1]
    keys = [k for k in ra[-1] if k.startswith(("margin/", "pl_", "val_"))]
    assert any(k.startswith("margin/") for k in keys) and "pl_below_precision" in keys
    assert any(ra[-1][k] != 0.2 for k in keys if k.startswith("margin/"))  # margins left the floor
    assert [ra[-1][k] for k in keys] == [rb[-1][k] for k in keys]


# ---- the true labels of unlabelled rows are for analysis only ----------------------------
@pytest.mark.parametrize("name", ["pseudolabel", "fixmatch", "adacm", "mixmatch", "remixmatch"])
def test_u_labels_never_influence_the_loss(name, one_thread):
    import copy

    from ssl_helpers import make_method, step_with, tiny_batch

    opts = {"pseudolabel": {"threshold": 0.0}, "fixmatch": {"threshold": 0.0}, "remixmatch": {"k": 2}}
    m = make_method(name, **opts.get(name, {})).train()
    if name == "adacm":  # some classes above their margin (CE), the others below (contrastive)
        m.margins.copy_(torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0]))
    batch = tiny_batch()
    variants = {"true": batch, "wrong": {**batch, "u_labels": (batch["u_labels"] + 3) % 7},
                "none": {k: v for k, v in batch.items() if k != "u_labels"}}
    runs = {}
    for key, b in variants.items():
        fresh = copy.deepcopy(m)  # the same state for each (some methods keep running statistics)
        runs[key] = (*step_with(fresh, b), fresh)
    loss, grads, fresh = runs["true"]
    for key in ("wrong", "none"):
        other_loss, other_grads, _ = runs[key]
        assert torch.equal(loss, other_loss), key
        assert grads.keys() == other_grads.keys()
        for k in grads:
            assert torch.equal(grads[k], other_grads[k]), (key, k)
    # ... but they are counted, for the logs
    assert int(fresh.pl_counts[4].sum()) == 16 and int(runs["none"][2].pl_counts.sum()) == 0
