"""``ferkit experiment`` (ferkit.experiments): every committed experiment config lists its cells without
training, --only selects cells and a bad one is one line, the commit is read before any cell trains,
the results folder is marked when the tree is dirty, and the ablation grid and the analyses run end
to end on tiny synthetic data (two cells of 1 epoch of `compact`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from ferkit.cli import experiment as experiment_command
from ferkit.cli import main as ferkit_main
from ferkit.errors import ConfigError
from ferkit.evaluation.embedding import embeddings
from ferkit.experiments import DIRTY_MARK, KINDS, core, get_kind, list_kinds, mark_tree_state
from ferkit.labels import FER2013, FERPLUS_COLUMNS

from synthetic import synthetic_faces, write_fer2013_csv

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs" / "experiments").glob("*.yaml"))
ABLATION = REPO / "configs/experiments/apsm_ablation.yaml"


def experiment(argv: list) -> dict | None:
    """``ferkit experiment ARGV`` in this process: the record it wrote (None for a dry run); errors raise."""
    return experiment_command.main(args=[str(a) for a in argv], standalone_mode=False)


def _no_training(monkeypatch) -> None:
    from ferkit.engine.trainer import Trainer

    def refuse(self):
        raise AssertionError("a dry run trained a cell")

    monkeypatch.setattr(Trainer, "fit", refuse)


# ---- the kinds and the committed configs -------------------------------------------------------
def test_every_kind_is_registered_once():
    assert list_kinds() == ["ablation", "analyses", "cross_dataset", "noise", "ssl"]
    with pytest.raises(ConfigError, match="experiment kind 'noise' is already registered"):
        from ferkit.experiments import register_kind

        register_kind(type("Other", (core.GridKind,), {"name": "noise"}))
    assert KINDS["noise"].__name__ == "Noise"


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_dry_run_lists_every_committed_config_without_training(config, tmp_path, monkeypatch, capsys):
    _no_training(monkeypatch)
    exp = yaml.safe_load(config.read_text())
    grid = get_kind(core.infer_kind(exp)).grid
    argv = ["experiment", str(config), "--dry-run", "--out", str(tmp_path / "out")]
    if grid:
        argv += ["--runs", str(tmp_path / "runs")]
    assert ferkit_main(argv) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert len(lines) >= 3, out
    if grid:
        assert lines[0].startswith(f"{lines[0].split()[0]} of {lines[0].split()[0]} cells"), lines[0]
        n = int(lines[0].split()[0])
        assert sum(1 for line in lines if line.startswith("  ")) == n
        assert all(" new " in line for line in lines if line.startswith("  "))
    else:
        assert str(tmp_path / "out") in lines[0]
    assert not (tmp_path / "out").exists() and not (tmp_path / "runs").exists()  # a dry run writes nothing


def test_cross_dataset_configs_without_kind_stay_replayable(tmp_path, capsys):
    """Configs written before ``kind`` was required (results/cross_dataset/config.yaml) have none."""
    old = yaml.safe_load((REPO / "results/cross_dataset/config.yaml").read_text())
    assert "kind" not in old and core.infer_kind(old) == "cross_dataset"
    assert yaml.safe_load((REPO / "configs/experiments/cross_dataset.yaml").read_text())["kind"] == "cross_dataset"
    assert experiment([REPO / "results/cross_dataset/config.yaml", "--dry-run", "--out", tmp_path]) is None
    assert "model   default" in capsys.readouterr().out


# ---- --only and one-line errors -------------------------------------------------------------------
def test_only_selects_cells(capsys):
    config = REPO / "configs/experiments/apsm_ablation_cpu.yaml"
    assert ferkit_main(["experiment", str(config), "--dry-run", "--only", "variant=baseline,pe+usl",
                        "--only", "dataset=ferplus", "--only", "seed=1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("2 of 20 cells")
    assert [line.split()[0] for line in out[1:]] == ["compact_baseline_ferplus_s1", "compact_pe-usl_ferplus_s1"]


@pytest.mark.parametrize("argv, message", [
    (["--only", "colour=red"], "--only: unknown axis 'colour' (axes: backbone, dataset, seed, variant)"),
    (["--only", "variant=pe+pe"], "--only variant: unknown value(s) pe+pe (known: baseline, pe, pe+usl, usl)"),
    (["--only", "variant"], "--only 'variant' is not of the form axis=value[,value...]"),
    (["--labelled", "300"], "experiments of kind ablation do not take --labelled"),
    (["model.nme=x"], "unknown config key"),
])
def test_bad_options_are_one_line_and_exit_2(argv, message, capsys):
    assert ferkit_main(["experiment", str(ABLATION), "--dry-run", *argv]) == 2
    cap = capsys.readouterr()
    assert cap.out == "" and cap.err.count("\n") == 1 and cap.err.startswith("ferkit: error: "), cap.err
    assert message in cap.err, cap.err


def test_evaluation_kinds_refuse_grid_options(capsys):
    config = REPO / "configs/experiments/cross_dataset.yaml"
    assert ferkit_main(["experiment", str(config), "--dry-run", "--only", "model=fast", "train.epochs=2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ferkit: error: experiments of kind cross_dataset do not take key=value overrides, --only")
    assert ferkit_main(["experiment", str(REPO / "configs/experiments/apsm_analyses.yaml"), "--dry-run",
                        "--epochs", "2"]) == 2
    assert "do not take --epochs (they take --device, --dry-run, --limit, --out)" in capsys.readouterr().err


def test_unknown_kind_and_key_are_named(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("kind: paper\nname: x\n")
    with pytest.raises(ConfigError, match="'kind' must be ablation or analyses or cross_dataset or noise or ssl"):
        experiment([path, "--dry-run"])
    path.write_text("kind: ablation\ngird: {}\n")
    with pytest.raises(ConfigError, match="unknown key.s. gird"):
        experiment([path, "--dry-run"])


def test_relative_folders_are_under_the_working_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exp = yaml.safe_load(ABLATION.read_text())
    exp.update(name="grid", runs_dir="my_runs", results_dir="my_results")
    exp["base"]["data"]["path"] = "data/fer.csv"
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "data").mkdir()
    (tmp_path / "exp" / "data" / "fer.csv").write_text("")
    path = tmp_path / "exp" / "grid.yaml"
    path.write_text(yaml.safe_dump(exp))
    experiment([path, "--dry-run", "--only", "seed=0"])
    assert f"runs in {tmp_path / 'my_runs' / 'grid'}, results in {tmp_path / 'my_results' / 'grid'}" in \
        capsys.readouterr().out
    kind = core.open_experiment(path)
    cfg = kind.plan(kind.runs_dir())[0]["cfg"]
    assert Path(cfg["data"]["path"]).resolve() == (tmp_path / "exp" / "data" / "fer.csv").resolve()  # beside the config
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "fer.csv").write_text("")
    cfg = kind.plan(kind.runs_dir())[0]["cfg"]
    assert cfg["data"]["path"] == str(tmp_path / "data" / "fer.csv")  # the working directory's wins, as in train


# ---- the dirty mark ---------------------------------------------------------------------------------
def test_dirty_tree_marks_results_and_clean_rerun_clears(tmp_path, capsys):
    assert mark_tree_state(tmp_path, {"git_dirty": True, "git_commit": "abc123"}) is True
    text = (tmp_path / DIRTY_MARK).read_text()
    assert "abc123" in text and "uncommitted" in text
    assert "WARNING" in capsys.readouterr().err
    assert mark_tree_state(tmp_path, {"git_dirty": False, "git_commit": "def456"}) is False
    assert not (tmp_path / DIRTY_MARK).exists()


# ---- the ablation grid end to end --------------------------------------------------------------------
def _write_votes(folder: Path, n_train: int = 280, n_test: int = 70) -> None:
    """fer2013new.csv for write_fer2013_csv's rows: 6-10 votes for the row's own class."""
    _, labels = synthetic_faces(n_train + n_test, seed=0)
    rng = np.random.default_rng(5)
    lines = ["Usage,Image name," + ",".join(FERPLUS_COLUMNS)]
    for i, y in enumerate(labels):
        v = np.zeros(10, int)
        main = FERPLUS_COLUMNS.index(FER2013.to_name(int(y)))
        k = int(rng.integers(6, 11))
        v[main] = k
        for j in rng.choice([c for c in range(8) if c != main], 10 - k):
            v[j] += 1
        usage = "Training" if i < n_train else "PublicTest"
        lines.append(f"{usage},fer{i:07d}.png," + ",".join(map(str, v)))
    (folder / "fer2013new.csv").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def ablation(tmp_path_factory):
    """Two cells of the committed ablation config (CE and APSM PE+USL), 1 epoch of `compact` each, while
    the commit and the tree state change as soon as the first cell has trained (as when someone commits
    during a long run): the results must name the commit the run started from."""
    import torch

    from ferkit.engine.trainer import Trainer

    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("apsm")
    csv = write_fer2013_csv(tmp / "fer.csv")
    _write_votes(tmp)
    argv = [ABLATION, "--only", "backbone=resnet18", "--only", "dataset=fer2013", "--only", "variant=baseline,pe+usl",
            "--only", "seed=0", "--epochs", "1", "--runs", tmp / "runs", "--out", tmp / "results", "--device", "cpu",
            "model.name=compact", f"data.path={csv}", "data.options.cache=false", "optim.batch_size=32",
            "train.threads=1"]
    state = {"commit": "c0ffee-at-start", "dirty": False, "reads": 0}
    fit = Trainer.fit

    def fit_then_commit(self):
        row = fit(self)
        state.update(commit="beef-made-during-the-run", dirty=True)
        return row

    def commit(where=None):
        state["reads"] += 1
        return state["commit"]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(core, "git_commit", commit)
        mp.setattr(core, "git_dirty", lambda where=None: state["dirty"])
        mp.setattr(Trainer, "fit", fit_then_commit)
        table = experiment(argv)
    return {"tmp": tmp, "csv": csv, "argv": argv, "table": table, "state": state}


def test_the_environment_is_read_before_any_cell_trains(ablation):
    out = ablation["tmp"] / "results"
    saved = json.loads((out / "table.json").read_text())
    assert ablation["state"]["commit"] == "beef-made-during-the-run"  # the commit did change mid-run
    assert saved["environment"]["git_commit"] == "c0ffee-at-start" and saved["environment"]["git_dirty"] is False
    assert ablation["state"]["reads"] == 1  # read once
    md = (out / "table.md").read_text()
    # the table names the commit it was written at, and the commit its cells were trained at (the trainer's
    # own reading, not patched here) beside it when that differs
    assert "commit `c0ffee-at-start`" in md.lower()
    assert sum(saved["environment"]["cell_commits"].values()) == len(saved["cells"]) == 2
    assert not (out / DIRTY_MARK).exists()  # clean when it started: the start's state is the one recorded


def test_ablation_end_to_end(ablation):
    out = ablation["tmp"] / "results"
    table = json.loads((out / "table.json").read_text())
    cells = {r["cell"]: r for r in table["cells"]}
    assert set(cells) == {"resnet18_baseline_fer2013_s0", "resnet18_pe-usl_fer2013_s0"}
    assert cells["resnet18_pe-usl_fer2013_s0"]["uncertainty_kind"] == "method"
    assert cells["resnet18_baseline_fer2013_s0"]["uncertainty_kind"] == "softmax_entropy"
    for r in cells.values():
        assert 0.0 <= r["accuracy"] <= 1.0 and r["n_val"] == 70 and r["epochs_trained"] == 1
    assert len(table["groups"]) == 2 and len(table["missing"]) == 46
    assert list(table) == ["experiment", "config_file", "cli", "budget", "runs_dir", "environment", "cells", "groups",
                           "missing"]
    assert table["cli"]["only"][0] == "backbone=resnet18" and table["cli"]["epochs"] == 1
    assert "git_commit" in table["environment"] and table["budget"]["epochs"] == 1
    md = (out / "table.md").read_text()
    assert "| resnet18 | baseline |" in md and "| resnet18 | pe+usl |" in md and "92.68" in md and "+4.32" in md
    assert (out / "config.yaml").read_text() == ABLATION.read_text()
    for name in ("config.yaml", "meta.json", "metrics.csv", "cell_result.json"):
        assert (out / "cells" / "resnet18_pe-usl_fer2013_s0" / name).is_file(), name
    run_cfg = (ablation["tmp"] / "runs" / "resnet18_pe-usl_fer2013_s0" / "config.yaml").read_text()
    assert "name: compact" in run_cfg and "lr: 0.0005" in run_cfg and "erase_p: 0.0" in run_cfg


def test_ablation_skips_finished_cells_and_refuses_other_configs(ablation, capsys):
    experiment(ablation["argv"])
    assert capsys.readouterr().out.count("done, skipped") == 2
    changed = [a if a != "optim.batch_size=32" else "optim.batch_size=16" for a in ablation["argv"]]
    with pytest.raises(ConfigError, match="trained with another config .*optim.batch_size"):
        experiment(changed)
    assert ferkit_main(["experiment", *map(str, changed)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "was trained with another config (differs in optim.batch_size)" in err


def test_finished_cells_are_restored_from_the_results_folder_on_a_fresh_clone(ablation, tmp_path, capsys,
                                                                              monkeypatch):
    """runs/ is never committed: on a fresh clone the committed results folder's cells/ is what remains of
    the finished cells, and a grid resumed there must take them from it, not train them again."""
    import shutil

    from ferkit.engine.trainer import Trainer

    out = tmp_path / "results"
    shutil.copytree(ablation["tmp"] / "results", out)
    argv = list(ablation["argv"])
    argv[argv.index("--runs") + 1], argv[argv.index("--out") + 1] = tmp_path / "fresh_runs", out
    experiment([*argv, "--dry-run"])
    listed = capsys.readouterr().out
    assert "resnet18_baseline_fer2013_s0             saved" in listed
    changed = [a if a != "optim.batch_size=32" else "optim.batch_size=16" for a in argv]
    experiment([*changed, "--dry-run"])  # another run config: the saved row is not this cell's
    assert "resnet18_baseline_fer2013_s0             new" in capsys.readouterr().out

    def no_training(self):
        raise AssertionError("a saved cell was trained again")

    monkeypatch.setattr(Trainer, "fit", no_training)
    table = experiment(argv)
    assert "2 finished cell(s) restored" in capsys.readouterr().out
    before = json.loads((ablation["tmp"] / "results" / "table.json").read_text())
    assert [r["accuracy"] for r in table["cells"]] == [r["accuracy"] for r in before["cells"]]
    assert len(table["cells"]) == 2 and (tmp_path / "fresh_runs" / "resnet18_pe-usl_fer2013_s0" / core.RESULT).is_file()


def test_a_shared_training_is_restored_only_with_every_cell_that_scores_it(tmp_path):
    """noise's natural cell scores the 0 % cell's model: restoring the 0 % row alone would leave the
    natural cell to retrain that model under a row the new weights did not make."""
    cfg = {"seed": 0, "optim": {"lr": 0.001}, "method": {"name": "ce"}}
    cells = [{"name": "ce_0", "train_cell": "ce_0", "train_cfg": cfg},
             {"name": "ce_natural", "train_cell": "ce_0", "train_cfg": cfg},
             {"name": "ce_10", "train_cell": "ce_10", "train_cfg": {**cfg, "seed": 1}}]
    out, runs = tmp_path / "results", tmp_path / "runs"
    for name in ("ce_0", "ce_10"):
        (out / "cells" / name).mkdir(parents=True)
        (out / "cells" / name / "config.yaml").write_text(yaml.safe_dump(cfg))
        (out / "cells" / name / core.RESULT).write_text(json.dumps({"cell": name}))
    assert core.restore_saved_cells(cells, runs, out) == []  # ce_natural unsaved; ce_10's config differs
    assert not runs.exists() or not any(runs.iterdir())
    (out / "cells" / "ce_natural").mkdir()
    (out / "cells" / "ce_natural" / "config.yaml").write_text(yaml.safe_dump(cfg))
    (out / "cells" / "ce_natural" / core.RESULT).write_text(json.dumps({"cell": "ce_natural"}))
    assert core.restore_saved_cells(cells, runs, out) == ["ce_0", "ce_natural"]
    assert [core.cell_status(c, runs) for c in cells] == ["done", "done", "new"]


def test_ablation_dry_run_lists_cells_and_their_status(ablation, capsys):
    assert experiment([ABLATION, "--dry-run"]) is None
    out = capsys.readouterr().out
    assert out.startswith("48 of 48 cells")
    assert "vit_small_pe-usl_ferplus_s1" in out and "resnet50_usl_fer2013_s0" in out
    experiment([ABLATION, "--dry-run", "--only", "variant=pe", "--only", "backbone=resnet50,vit_small",
                "--epochs", "3"])
    out = capsys.readouterr().out
    assert out.startswith("8 of 48 cells") and "apsm_ablation-e3" in out and "pe=True usl=False" in out
    experiment([a for a in ablation["argv"] if a not in ("--device", "cpu")] + ["--dry-run"])
    out = capsys.readouterr().out
    assert "resnet18_baseline_fer2013_s0             done " in out


def test_a_method_option_added_later_at_its_default_is_no_difference():
    """A run trained before an option existed behaved as its default: it stays reusable."""
    old = {"method": {"name": "apsm", "pe": True}, "optim": {"lr": 0.002}}
    new = {"method": {"name": "apsm", "pe": True, "usl_warmup_epochs": 0}, "optim": {"lr": 0.002}}
    assert core.config_differences(old, new) == []
    assert core.config_differences(old, {**new, "method": {**new["method"], "usl_warmup_epochs": 4}}) == [
        "method.usl_warmup_epochs"]
    assert core.config_differences({**old, "method": {"name": "ce"}}, {**new, "method": {"name": "ce", "x": 1}}) == [
        "method.x"]  # not an option of the method: a difference
    # a run-config key added to ferkit later, at its default (data.holdout), is none either
    assert core.config_differences(old, {**new, "data": {"holdout": None, "holdout_seed": 0}}) == []
    assert core.config_differences(old, {**new, "data": {"holdout": 0.1}}) == ["data.holdout"]


def test_analyses_end_to_end(ablation, tmp_path):
    runs = ablation["tmp"] / "runs"
    cfg = yaml.safe_load((REPO / "configs/experiments/apsm_analyses.yaml").read_text())
    cfg["runs"] = {"baseline": str(runs / "resnet18_baseline_fer2013_s0"),
                   "apsm": str(runs / "resnet18_pe-usl_fer2013_s0")}
    cfg["data"].update(path=str(ablation["csv"]), options={"mode": "majority", "cache": False})
    cfg["analyses"]["tsne"].update(sample=60, threads=1)
    cfg["analyses"]["occlusion"]["fractions"] = [0.0, 0.25, 0.5]
    path = tmp_path / "analyses.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "res"
    report = experiment([path, "--out", out, "--device", "cpu"])
    for name in ("accuracy_by_uncertainty_apsm.png", "accuracy_by_uncertainty_baseline.png", "risk_coverage.png",
                 "occlusion.png", "tsne_apsm.png", "tsne_baseline.png"):
        assert (out / name).stat().st_size > 2000, name
    saved = json.loads((out / "analyses.json").read_text())
    assert saved["goals"] == json.loads(json.dumps(report["goals"]))
    ap, bl = saved["runs"]["apsm"], saved["runs"]["baseline"]
    assert ap["uncertainty_kind"] == "method" and bl["uncertainty_kind"] == "softmax_entropy"
    assert len(ap["classes"]) == 7 and ap["n"] == 70
    assert ap["label_mapping"]["data_only"] == ["contempt"]
    assert sum(ap["uncertainty_bins"]["count"]) == ap["n"]
    assert {"uncertainty", "softmax_entropy", "one_minus_max_prob"} <= set(ap["error_detection"]["auroc"])
    assert set(ap["ferplus_votes"]) == {"votes", "votes_softmax_entropy", "soft_targets",
                                        "soft_targets_softmax_entropy"}
    assert ap["ferplus_votes"]["votes"]["n"] == ap["n"]
    assert ap["occlusion"]["hidden_share"] == pytest.approx([0.0, 0.25, 0.5], abs=1e-3)
    assert ap["occlusion"]["accuracy"][0] == pytest.approx(ap["accuracy"], abs=1e-9)
    assert -1 <= ap["tsne"]["silhouette"] <= 1 and ap["tsne"]["feature_dim"] == 512
    assert set(saved["risk_coverage"]) >= {"apsm: sigma^2", "apsm: entropy", "baseline: entropy"}
    assert "vote_rho" in saved["goals"] and "accuracy_at_least_baseline" in saved["goals"]
    assert saved["environment"]["git_commit"] and (out / "config.yaml").is_file()


def test_embeddings_are_apsm_mu(ablation):
    import torch

    from ferkit.engine.batches import images_to_tensor
    from ferkit.engine.model_io import load_model

    run = ablation["tmp"] / "runs" / "resnet18_pe-usl_fer2013_s0"
    model = load_model(run / "checkpoints" / "last.pt", device="cpu")
    images, _ = synthetic_faces(10, seed=3)
    f = embeddings(model, images, batch_size=4)
    with torch.no_grad():
        mu = model.net.heads(model.view(images_to_tensor(images, 1)))[0].numpy()
    assert f.shape == (10, 512)
    np.testing.assert_allclose(f, mu, atol=1e-5)
    base = load_model(ablation["tmp"] / "runs" / "resnet18_baseline_fer2013_s0", device="cpu")
    assert embeddings(base, images).shape == (10, base.net.model.feature_dim)


def test_a_table_names_every_commit_its_cells_were_trained_at():
    rows = [{"git_commit": "aaa"}, {"git_commit": "bbb"}, {"git_commit": "aaa"}, {}]
    assert core.cell_commits(rows) == {"aaa": 2, "bbb": 1, "unknown": 1}
    assert core.commit_text({"git_commit": "aaa", "cell_commits": {"aaa": 3}}) == "Commit `aaa`."
    assert core.commit_text({"git_commit": "aaa"}) == "Commit `aaa`."
    text = core.commit_text({"git_commit": "ccc", "cell_commits": core.cell_commits(rows)})
    assert text == "Table written at commit `ccc`; cells trained at `aaa` (2), `bbb` (1), `unknown` (1)."
