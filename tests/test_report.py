"""``ferkit report``: a run directory's log turned into plots, epochs.csv and report.md."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

import ferkit.evaluation.report as report_mod
from ferkit.errors import InputError
from ferkit.evaluation.io import write_metrics
from ferkit.evaluation.report import make_report, read_log
from ferkit.metrics import compute_metrics

CLASSES = ("neutral", "happiness", "surprise")


def _write_run(run_dir, epochs=4, steps_per_epoch=50, every=2, partial=True, resumed=True):
    """A log.jsonl as the trainer writes it, with method-specific keys and a partial last line."""
    run_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    rows = []
    step = 0
    accs = [0.41, 0.55, 0.52, 0.58]
    for e in range(epochs):
        for _ in range(steps_per_epoch):
            step += 1
            if step % every == 0:
                loss = 2.0 / step ** 0.3 + rng.normal(0, 0.1)
                rows.append({"kind": "train", "epoch": e, "step": step, "lr": 0.1 * 0.5 ** e, "loss": loss,
                             "loss_ce": 0.8 * loss, "mask_ratio": min(1.0, step / 150)})
        row = {"kind": "epoch", "epoch": e, "step": step, "train_loss": 2.0 / step ** 0.3,
               "train_loss_ce": 1.6 / step ** 0.3, "train_mask_ratio": min(1.0, step / 150),
               "lr": 0.1 * 0.5 ** e, "time_s": 1.5}
        if e != 1:  # epoch 2 not validated (eval_every)
            row.update({"val_accuracy": accs[e], "val_macro_f1": accs[e] - 0.1, "val_nll": 1.2 - e / 10,
                        "val_ece": 0.05, "val_brier": 0.6, "val_auroc_ood": 0.7 + e / 100})
            row["is_best"] = e in (0, 3)
        rows.append(row)
        if resumed and e == 1:  # a resumed run logs epoch 1 again; the last row wins
            rows.append(dict(row, time_s=9.0))
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if partial:
        text += '{"kind": "train", "epoch": 4, "step": 85, "lo'
    (run_dir / "log.jsonl").write_text(text)
    (run_dir / "meta.json").write_text(json.dumps({"git_commit": "abc1234", "classes": list(CLASSES)}))
    return rows


def _png(path):
    assert path.is_file() and path.stat().st_size > 0
    img = imread(path)
    assert img.ndim == 3 and min(img.shape[:2]) > 200
    return img


def test_report_of_a_run_with_partial_last_line(tmp_path, monkeypatch):
    run = tmp_path / "run"
    _write_run(run)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 120)
    probs = rng.dirichlet(np.ones(3), 120)
    metrics = compute_metrics(probs, labels, CLASSES)
    write_metrics(metrics, run / "eval" / "rafdb_test.json", probs, labels, CLASSES)
    (run / "eval" / "broken.json").write_text("{not json")

    panels = {}
    real = report_mod.plot_curves

    def spy(p, path, **kw):
        panels[path.name] = list(p)
        return real(p, path, **kw)

    monkeypatch.setattr(report_mod, "plot_curves", spy)
    with pytest.warns(UserWarning) as caught:
        md = make_report(run)
    messages = [str(w.message) for w in caught]
    assert any("skipped 1 malformed line" in m for m in messages)
    assert any("broken.json" in m for m in messages)

    out = run / "report"
    assert md == out / "report.md"
    for name in ("loss.png", "val_metrics.png", "lr.png"):
        _png(out / name)
    # every numeric key is plotted, none hard-coded
    assert panels["loss.png"] == ["train loss", "train loss_ce", "train mask_ratio"]
    assert panels["val_metrics.png"] == ["accuracy", "macro_f1", "nll", "ece", "brier", "auroc_ood"]
    assert panels["lr.png"] == ["learning rate"]

    df = pd.read_csv(out / "epochs.csv")
    assert df["epoch"].tolist() == [0, 1, 2, 3]  # deduplicated, as logged
    assert df.loc[1, "time_s"] == 9.0  # the resumed row won
    assert "val_auroc_ood" in df and np.isnan(df.loc[1, "val_accuracy"])

    text = md.read_text()
    assert "best epoch by val_accuracy: **4**" in text
    assert "1 malformed line(s) skipped" in text
    for name in ("loss.png", "val_metrics.png", "lr.png", "epochs.csv"):
        assert f"({name})" in text
    assert "| **4** |" in text  # the best row is marked
    assert "abc1234" in text
    # per-class table of the eval file, with its plots linked relative to report/
    assert "### rafdb_test" in text and "| class | precision | recall | f1 | support |" in text
    assert "| happiness |" in text
    assert "(../eval/rafdb_test_confusion_matrix.png)" in text
    assert "(../eval/rafdb_test_reliability.png)" in text
    assert "could not be read" in text


def test_read_log_keeps_last_row_per_step_and_skips_bad_lines(tmp_path):
    _write_run(tmp_path, partial=False)
    with (tmp_path / "log.jsonl").open("a") as fh:
        fh.write("[1, 2]\n\n{\"no_kind\": 1}\n{\"kind\": \"note\", \"text\": \"ignored\"}\n")
    with pytest.warns(UserWarning, match="skipped 2 malformed"):
        log = read_log(tmp_path / "log.jsonl")
    assert log.skipped == 2
    assert log.train["step"].is_monotonic_increasing and log.train["step"].is_unique
    assert {"loss", "loss_ce", "mask_ratio", "lr"} <= set(log.train_keys)
    assert "is_best" not in log.epoch_keys  # a flag, not a curve


def test_run_killed_in_the_first_epoch(tmp_path):
    run = tmp_path / "run"
    rows = [json.dumps({"kind": "train", "epoch": 0, "step": s, "lr": 0.01, "loss": 1 / s})
            for s in range(1, 30)]
    run.mkdir()
    (run / "log.jsonl").write_text("\n".join(rows) + "\n")
    text = make_report(run).read_text()
    _png(run / "report" / "loss.png")
    _png(run / "report" / "lr.png")
    assert not (run / "report" / "val_metrics.png").exists()
    assert not (run / "report" / "epochs.csv").exists()
    assert "No epoch has finished yet" in text


def test_missing_or_empty_log_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match=r"training log not found: .*log\.jsonl"):
        make_report(tmp_path / "nowhere")
    (tmp_path / "log.jsonl").write_text("")
    with pytest.raises(InputError, match=r"log\.jsonl is empty") as info:
        make_report(tmp_path)
    assert "\n" not in str(info.value)
    (tmp_path / "log.jsonl").write_text('{"kind": "tra')
    with pytest.raises(InputError, match="1 malformed"):
        make_report(tmp_path)


def test_cli_report(tmp_path, capsys):
    from ferkit.cli import main

    _write_run(tmp_path / "run", partial=False)
    assert main(["report", str(tmp_path / "run")]) == 0
    assert "report.md" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "ferkit: error: training log not found" in capsys.readouterr().err
