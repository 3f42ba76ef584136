"""The issue 9 experiments (``ferkit experiment``): the SSL grid (cells, budget checks, table, goal, plots) and the
cross-dataset evaluation (label matching, dropped rows, per-pair confusion matrices), on tiny
synthetic data so they stay well under a second of training each."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from ferkit.cli import experiment as experiment_command
from ferkit.engine.config import load_config
from ferkit.errors import ConfigError
from ferkit.experiments import core, cross_dataset, open_experiment, ssl
from ferkit.labels import FER2013, FERPLUS_COLUMNS

from synthetic import synthetic_faces, write_fer2013_csv

REPO = Path(__file__).resolve().parents[1]
SSL_CONFIG = REPO / "configs/experiments/ssl_fer2013_4000.yaml"
CROSS_CONFIG = REPO / "configs/experiments/cross_dataset.yaml"
N_TRAIN, N_TEST = 280, 70


def experiment(argv: list) -> dict | None:
    """``ferkit experiment ARGV`` in this process: the record it wrote (None for a dry run); errors raise."""
    return experiment_command.main(args=[str(a) for a in argv], standalone_mode=False)


# ---- the SSL grid ------------------------------------------------------------------------------------
def test_dry_run_lists_the_cells(capsys):
    assert experiment([str(SSL_CONFIG), "--dry-run"]) is None
    out = capsys.readouterr().out
    assert out.startswith("24 of 24 cells") and "labelled=4000" in out and "steps_per_epoch=125" in out
    for cell in ("ce_s0", "remixmatch_s2", "adacm-3weak_s1", "adacm-2strong_s0"):
        assert f"  {cell} " in out, cell
    assert "adacm-3weak_s1         new      seed=1 method=adacm weak_views=3 strong_views=1" in out
    experiment([str(SSL_CONFIG), "--dry-run", "--only", "method=adacm,fixmatch", "--only", "seed=1", "--epochs", "2",
              "--steps-per-epoch", "5", "--limit-train", "3000", "--labelled", "300"])
    out = capsys.readouterr().out
    assert out.startswith("2 of 24 cells") and "ssl_fer2013_4000-e2-n3000-s5-l300" in out
    assert "labelled=300" in out and "fixmatch_s1" in out and "adacm_s0" not in out
    with pytest.raises(ConfigError, match="unknown value"):
        experiment([str(SSL_CONFIG), "--dry-run", "--only", "method=vat"])
    with pytest.raises(ConfigError, match="give --labelled"):
        experiment([str(SSL_CONFIG), "--dry-run", "--limit-train", "3000"])


def test_cpu_config_is_the_full_one_shrunk(capsys):
    """ssl_fer2013_cpu.yaml keeps the methods and labels of the full grid; only the budget shrinks."""
    full = yaml.safe_load(SSL_CONFIG.read_text())
    cpu = yaml.safe_load((REPO / "configs/experiments/ssl_fer2013_cpu.yaml").read_text())
    assert list(cpu["grid"]["method"]) == list(full["grid"]["method"]) and cpu["grid"]["seed"] == [0, 1]
    assert cpu["base"]["data"]["labelled"] == full["base"]["data"]["labelled"] == 4000
    for name in ("fixmatch", "adacm", "adacm-3weak", "adacm-2strong"):
        assert cpu["grid"]["method"][name] == full["grid"]["method"][name], name
    assert cpu["compare"] == full["compare"]
    experiment([str(REPO / "configs/experiments/ssl_fer2013_cpu.yaml"), "--dry-run"])
    out = capsys.readouterr().out
    assert out.startswith("16 of 16 cells") and "model=compact" in out and "unlabelled_ratio=3" in out


def test_old_runner_commands_are_ferkit_experiment(tmp_path):
    """The old scripts still run (as ``ferkit experiment``): a bad config is one line on stderr, exit status 2."""
    import subprocess

    for name in ("ssl_benchmark", "noise_benchmark", "apsm_experiments", "cross_dataset"):
        res = subprocess.run([sys.executable, str(REPO / "benchmarks" / f"{name}.py"), str(tmp_path / "no.yaml"),
                              "--dry-run"], capture_output=True, text=True, cwd=REPO, timeout=120)
        assert res.returncode == 2, (name, res.stderr)
        assert res.stderr.strip().count("\n") == 0 and res.stderr.startswith("ferkit: error: experiment config "
                                                                            "not found"), res.stderr


def test_grid_is_the_committed_run_configs():
    """Each method's cell is configs/<method>_fer2013_4000_0.yaml (the variants: Ada-CM's plus one key)."""
    variants = {"adacm-3weak": ("adacm", ["method.weak_views=3"]),
                "adacm-2strong": ("adacm", ["method.strong_views=2"])}
    for cell in open_experiment(SSL_CONFIG).plan(REPO / "runs"):
        if cell["axes"]["seed"] != 0:
            continue
        m = cell["axes"]["method"]
        base, extra = variants.get(m, (m, []))
        committed = load_config(REPO / f"configs/{base}_fer2013_4000_0.yaml", extra)
        diff = [k for k in core.config_differences(committed, cell["cfg"]) if k not in ("name", "output_dir")]
        assert diff == [], (m, diff)


def test_a_cell_with_another_budget_is_refused(tmp_path):
    exp = yaml.safe_load(SSL_CONFIG.read_text())
    exp["grid"]["method"]["fixmatch"]["optim"] = {"lr": 0.03}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(exp))
    with pytest.raises(ConfigError, match="differ in optim.lr"):
        experiment([str(path), "--dry-run"])
    exp["plots"]["methods"] = ["adacm-4weak"]
    path.write_text(yaml.safe_dump(exp))
    with pytest.raises(ConfigError, match="plots.methods names adacm-4weak"):
        experiment([str(path), "--dry-run"])


def test_goal_check_pairs_by_seed():
    rows = [{"method": m, "seed": s, "accuracy": a} for m, s, a in [
        ("adacm", 0, 0.60), ("adacm", 1, 0.62), ("fixmatch", 0, 0.58), ("fixmatch", 1, 0.63),
        ("ce", 0, 0.50), ("ce", 1, 0.52)]]
    g = ssl.goal_check(rows, {"method": "adacm", "baselines": ["fixmatch", "ce"]})
    fm = g["baselines"]["fixmatch"]
    assert g["met"] is True and fm["met"] is True and fm["seeds_higher"] == 1
    assert fm["difference"] == pytest.approx(0.005) and fm["paired_differences"] == pytest.approx([0.02, -0.01])
    assert fm["paired"]["std"] == pytest.approx(np.std([0.02, -0.01], ddof=1))
    rows[0]["accuracy"] = 0.55
    assert ssl.goal_check(rows, {"method": "adacm", "baselines": ["fixmatch", "ce"]})["met"] is False
    g = ssl.goal_check(rows[:4], {"method": "adacm", "baselines": ["fixmatch", "ce"]})
    assert g["met"] is None and g["baselines"]["ce"]["reason"] == "no finished cell of ce"


def test_curves_average_runs_and_keep_gaps(tmp_path):
    for i, (m, p) in enumerate([(0.8, None), (0.9, 0.5)]):
        d = tmp_path / f"r{i}"
        d.mkdir()
        rows = [{"kind": "train", "epoch": 0, "step": 1},
                {"kind": "epoch", "epoch": 0, "margin/happiness": 0.8, "pl_above_precision": None},
                {"kind": "epoch", "epoch": 1, "margin/happiness": m, "pl_above_precision": p}]
        (d / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    c = ssl.method_curves([tmp_path / "r0", tmp_path / "r1", tmp_path / "absent"])
    assert c["epochs"] == [1, 2] and c["runs"] == 2
    s = c["series"]["margin/happiness"]
    assert s["mean"] == pytest.approx([0.8, 0.85]) and s["min"] == pytest.approx([0.8, 0.8]) and s["max"][1] == 0.9
    assert c["series"]["pl_above_precision"]["mean"] == [None, 0.5]
    png = ssl.plot_pseudo_labels(c, tmp_path / "pl.png", "t")
    assert png.stat().st_size > 2000


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """The committed grid's ce and adacm cells of seed 0 on synthetic bars: compact, 1 epoch of 3 steps."""
    import torch

    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("ssl")
    csv = write_fer2013_csv(tmp / "fer.csv", N_TRAIN, N_TEST)
    argv = [str(SSL_CONFIG), "--only", "method=ce,adacm", "--only", "seed=0", "--epochs", "1", "--steps-per-epoch",
            "3", "--labelled", "70", "--runs", str(tmp / "runs"), "--out", str(tmp / "results"), "--device", "cpu",
            "model.name=compact", f"data.path={csv}", "data.options.cache=false", "optim.batch_size=16",
            "data.unlabelled_ratio=2", "augment.options.weak.translate=0.04", "train.threads=1", "train.log_every=1"]
    table = experiment(argv)
    return {"tmp": tmp, "csv": csv, "argv": argv, "table": table}


def test_grid_end_to_end(grid):
    out = grid["tmp"] / "results"
    table = json.loads((out / "table.json").read_text())
    cells = {r["cell"]: r for r in table["cells"]}
    assert set(cells) == {"ce_s0", "adacm_s0"} and len(table["missing"]) == 22
    for r in cells.values():
        assert 0.0 <= r["accuracy"] <= 1.0 and r["n_val"] == N_TEST and r["epochs_trained"] == 1
    assert [g["method"] for g in table["methods"]] == ["ce", "adacm"]
    assert table["methods"][0]["gain_over_supervised"] == 0.0
    assert table["goal"]["met"] is None and table["goal"]["baselines"]["ce"]["met"] is not None
    assert table["budget"]["labelled"] == 70 and table["budget"]["steps_per_epoch"] == 3
    assert "git_commit" in table["environment"]
    curves = table["curves"]["adacm"]
    assert curves["epochs"] == [1] and curves["series"]["margin/happiness"]["mean"] == [pytest.approx(0.8)]
    assert {"pl_above_precision", "pl_below_recall", "pl_above_fraction"} <= set(curves["series"])
    assert table["pngs"] == ["margins_adacm.png", "pseudo_labels_adacm.png"]
    for png in table["pngs"]:
        assert (out / png).stat().st_size > 2000, png
    md = (out / "table.md").read_text()
    assert "| adacm | Ada-CM (2 weak views" in md and "| 83.70 | 65.96 |" in md and "| 80.28 | 62.52 |" in md
    assert "## Goal: adacm above fixmatch, ce: not yet measurable" in md and "![margins_adacm.png]" in md
    assert (out / "config.yaml").read_text() == SSL_CONFIG.read_text()
    run_cfg = yaml.safe_load((out / "cells" / "adacm_s0" / "config.yaml").read_text())
    assert run_cfg["data"]["labelled"] == 70 and run_cfg["train"]["steps_per_epoch"] == 3
    assert run_cfg["method"]["weak_views"] == 2 and run_cfg["train"]["ema"] == 0.999


def test_grid_skips_finished_cells_and_refuses_other_configs(grid, capsys):
    experiment(grid["argv"])
    assert capsys.readouterr().out.count("done, skipped") == 2
    changed = [a if a != "optim.batch_size=16" else "optim.batch_size=8" for a in grid["argv"]]
    with pytest.raises(ConfigError, match="trained with another config .*optim.batch_size"):
        experiment(changed)


def test_a_fresh_clone_keeps_the_curves_and_plots_of_restored_cells(grid, tmp_path, capsys):
    """A grid finished over several sittings: the cells come back from results/<name>/cells (no log.jsonl
    there, only metrics.csv), and the margin curves and plots must still include them."""
    import shutil

    out = tmp_path / "results"
    shutil.copytree(grid["tmp"] / "results", out)
    for png in out.glob("*.png"):
        png.unlink()
    moved = {str(grid["tmp"] / name): str(tmp_path / name) for name in ("runs", "results")}
    argv = [moved.get(a, a) for a in grid["argv"]]
    table = experiment(argv)
    assert "2 finished cell(s) restored" in capsys.readouterr().out
    assert not (tmp_path / "runs" / "adacm_s0" / "log.jsonl").exists()  # the restored cell has only metrics.csv
    before = json.loads((grid["tmp"] / "results" / "table.json").read_text())
    assert table["curves"] == json.loads(json.dumps(before["curves"]))
    assert table["pngs"] == ["margins_adacm.png", "pseudo_labels_adacm.png"]
    assert all((out / png).stat().st_size > 2000 for png in table["pngs"])


# ---- cross-dataset -------------------------------------------------------------------------------------
def _write_votes(folder: Path) -> dict[str, int]:
    """fer2013new.csv for write_fer2013_csv's rows; in PublicTest every 10th row is contempt, every 10th
    from the 5th not a face. Returns how many PublicTest rows are contempt."""
    _, labels = synthetic_faces(N_TRAIN + N_TEST, seed=0)
    lines = ["Usage,Image name," + ",".join(FERPLUS_COLUMNS)]
    contempt = 0
    for i, y in enumerate(labels):
        v = np.zeros(10, int)
        own = FERPLUS_COLUMNS.index(FER2013.to_name(int(y)))
        if i >= N_TRAIN and i % 10 == 0:
            v[FERPLUS_COLUMNS.index("contempt")], v[own] = 8, 2
            contempt += 1
        elif i >= N_TRAIN and i % 10 == 5:
            v[-1] = 10
        else:
            v[own] = 10
        usage = "Training" if i < N_TRAIN else "PublicTest"
        lines.append(f"{usage},fer{i:07d}.png," + ",".join(map(str, v)))
    (folder / "fer2013new.csv").write_text("\n".join(lines) + "\n")
    return {"contempt": contempt, "not_face": sum(1 for i in range(N_TRAIN, N_TRAIN + N_TEST) if i % 10 == 5)}


def test_cross_dataset_end_to_end(grid, tmp_path, capsys):
    import cv2

    from ferkit.data import load_dataset
    from ferkit.engine.model_io import load_model
    from ferkit.evaluation.evaluate import align_labels

    csv = grid["csv"]
    counts = _write_votes(csv.parent)
    faces, _ = synthetic_faces(6, seed=3)
    for i, img in enumerate(faces):
        d = tmp_path / "folder" / ("happy" if i % 2 else "Sad")
        d.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(d / f"{i}.png"), img)
    exp = yaml.safe_load(CROSS_CONFIG.read_text())
    for spec in exp["datasets"].values():
        spec["path"] = str(csv)
    cfg = tmp_path / "cross.yaml"
    cfg.write_text(yaml.safe_dump(exp))
    run_dir = grid["tmp"] / "runs" / "ce_s0"
    out = tmp_path / "res"
    argv = [str(cfg), "--model", f"ce={run_dir}", "--dataset", f"folder={tmp_path / 'folder'}", "--out", str(out),
            "--device", "cpu", "--threads", "1"]
    assert experiment([*argv, "--model", "accurate", "--dry-run"]) is None
    assert "model   accurate       accurate  (found)" in capsys.readouterr().out
    table = experiment(argv)
    pairs = {(r["model"], r["dataset"]): r for r in table["pairs"]}
    assert list(pairs) == [("ce", "fer2013"), ("ce", "ferplus"), ("ce", "folder")]

    fp = pairs[("ce", "ferplus")]
    assert fp["file"].endswith("checkpoints/last.pt") and fp["trained_on"] == "fer2013 Training, 70 labelled"
    assert fp["labels_dropped"] == ["contempt"] and fp["rows_dropped_by_label"] == {"contempt": counts["contempt"]}
    assert fp["rows_dropped"] == counts["contempt"] and len(fp["labels_matched"]) == 7
    assert fp["n"] == N_TEST - counts["contempt"] - counts["not_face"]
    # the accuracy by hand: the model's probabilities over the shared labels, contempt rows left out
    data = load_dataset("ferplus", csv, "PublicTest", cache=False)
    model = load_model(run_dir / "checkpoints" / "last.pt", device="cpu")
    p, y, _, _ = align_labels(model.predict_probs(data.images), model.classes, data.labels, data.classes)
    assert fp["accuracy"] == pytest.approx(float(np.mean(p.argmax(1) == y)))

    ref = pairs[("ce", "fer2013")]
    assert ref["rows_dropped"] == 0 and ref["labels_dropped"] == [] and ref["n"] == N_TEST
    assert ref["role"] == "in-domain reference"
    fo = pairs[("ce", "folder")]
    assert fo["n"] == 6 and len(fo["labels_matched"]) == 7 and fo["rows_dropped"] == 0
    assert sorted(fo["labels_with_rows"]) == ["happiness", "sadness"] and fo["model_labels_unused"] == []
    for r in table["pairs"]:
        assert (out / r["confusion_png"]).stat().st_size > 2000 and (out / r["metrics_json"]).is_file()
    bundled = cross_dataset.model_file("accurate", "last")
    assert bundled.name.endswith(".pt") and "FER2013 Training" in cross_dataset.trained_on("accurate", bundled)
    assert cross_dataset.parse_models(["fast", "runs/a/checkpoints/last.pt", "b=runs/a"]) == {
        "fast": "fast", "a": "runs/a/checkpoints/last.pt", "b": "runs/a"}
    md = (out / "table.md").read_text()
    assert f"| contempt ({counts['contempt']}) |" in md and "R->A 33.18" in md
    assert "| 7 (2 with rows: happiness, sadness) |" in md and "FER+ PublicTest holds the faces" in md
    info = table["dataset_info"]["ferplus"]
    assert info["reader_dropped"]["not_face"] == counts["not_face"]
    assert info["rows_by_label"]["contempt"] == counts["contempt"]
    assert f"ferplus {N_TEST - counts['not_face']} rows kept (not_face {counts['not_face']} left out)" in md
    assert json.loads((out / "table.json").read_text())["pairs"][0]["model"] == "ce"
    with pytest.raises(ConfigError, match="READER"):
        experiment([str(cfg), "--dataset", "jaffe", "--dry-run"])


