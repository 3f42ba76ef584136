"""No silent wrong result from a run: typed config checks before any work, and a model.pt that
always holds best.pt's weights whatever moment a crash hits."""

from __future__ import annotations

import pytest
import torch

from ferkit.engine.checkpoint import load_checkpoint, save_checkpoint
from ferkit.engine.config import load_config
from ferkit.engine.trainer import Trainer
from ferkit.errors import ConfigError

from synthetic import write_config


@pytest.mark.parametrize("override, key", [
    ("train.epochs=abc", "train.epochs"), ("train.epochs=-1", "train.epochs"), ("train.epochs=0", "train.epochs"),
    ("optim.lr=-1", "optim.lr"), ("optim.lr=abc", "optim.lr"), ("optim.batch_size=0", "optim.batch_size"),
    ("optim.batch_size=-5", "optim.batch_size"), ("data.image_size=abc", "data.image_size"),
    ("data.limit_train=abc", "data.limit_train"), ("train.checkpoint_every_steps=abc", "train.checkpoint_every_steps"),
    ("data.channels=2", "data.channels"), ("train.select_metric=val_acc", "train.select_metric"),
    ("train.ema=1.5", "train.ema"), ("data.holdout=1.5", "data.holdout"), ("train.amp=fp8", "train.amp"),
    ("optim.name=adamx", "optim.name"), ("train.tta_flip=maybe", "train.tta_flip"),
])
def test_bad_config_values_name_their_key(override, key):
    with pytest.raises(ConfigError, match=rf"config key '{key}'"):
        load_config(None, [override])


@pytest.mark.parametrize("override", ["train.amp=off", "train.amp=bf16", "optim.lr=1e-3", "data.holdout=0.1",
                                      "data.holdout=500", "optim.grad_clip=1", "train.select_metric=val_macro_f1"])
def test_good_config_values_pass(override):
    load_config(None, [override])


def test_binary_file_as_config_is_one_line(tmp_path):
    path = tmp_path / "weights.yaml"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ConfigError):
        load_config(path)


def _model_epoch(run):
    return load_checkpoint(run / "model.pt")["metrics"]["epoch"]


def _assert_model_is_best(run):
    best, model = load_checkpoint(run / "checkpoints" / "best.pt"), load_checkpoint(run / "model.pt")
    assert model["metrics"]["epoch"] == best["epoch"]
    shadow = best["hooks"]["EMAHook"]["shadow"] if best["hooks"].get("EMAHook") else None
    source = shadow or best["method"]
    for k, v in model["state_dict"].items():
        assert torch.equal(v, source[k]), k


def test_crash_while_writing_the_last_model_file_redoes_the_epoch(tmp_path, fer_csv, monkeypatch):
    # a kill during the last epoch's model.pt write used to leave last.pt complete and model.pt a
    # previous epoch's; rerunning then said "already complete" and kept the stale file
    cfg = load_config(write_config(tmp_path / "k.yaml", fer_csv, tmp_path / "runs", train={"epochs": 3}))
    crashed = Trainer(cfg)
    real_export = Trainer.export_model

    def export_then_die(self, path, row=None):
        if row is not None and row["epoch"] == 2:
            raise KeyboardInterrupt  # killed mid-write: atomic_write leaves the old model.pt
        real_export(self, path, row)

    monkeypatch.setattr(Trainer, "export_model", export_then_die)
    # force a new best at the last epoch so that its model.pt write is the one that dies
    from ferkit.engine import hooks

    real_eval = hooks.EvalHook.after_epoch

    def last_is_best(self, tr, row):
        real_eval(self, tr, row)
        if row["epoch"] == 2:
            self.best, self.best_epoch, row["is_best"] = 2.0, 2, True

    monkeypatch.setattr(hooks.EvalHook, "after_epoch", last_is_best)
    with pytest.raises(KeyboardInterrupt):
        crashed.fit()
    run = tmp_path / "runs" / "k"
    assert load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == 1  # the last epoch is not complete
    monkeypatch.setattr(Trainer, "export_model", real_export)
    Trainer(cfg).fit()
    assert _model_epoch(run) == 2
    _assert_model_is_best(run)


def test_stale_model_file_is_exported_again_and_orphans_removed(tmp_path, fer_csv):
    cfg = load_config(write_config(tmp_path / "s.yaml", fer_csv, tmp_path / "runs",
                                   train={"epochs": 2, "ema": 0.9}))
    Trainer(cfg).fit()
    run = tmp_path / "runs" / "s"
    _assert_model_is_best(run)
    # what an older ferkit could leave behind: model.pt from another epoch, and a killed write's temp file
    stale = load_checkpoint(run / "model.pt")
    stale["metrics"]["epoch"] = 99
    stale["state_dict"] = {k: torch.zeros_like(v) for k, v in stale["state_dict"].items()}
    save_checkpoint(stale, run / "model.pt")
    orphan = run / "checkpoints" / ".last.pt.abc123.tmp"
    orphan.write_bytes(b"half a file")
    again = Trainer(cfg)
    again.fit()
    assert not orphan.exists()
    _assert_model_is_best(run)
    assert again.step == 2 * again.steps_per_epoch  # training state is last.pt's, not best.pt's


def test_resume_refuses_a_changed_model_and_fewer_epochs(tmp_path, fer_csv):
    path = write_config(tmp_path / "r.yaml", fer_csv, tmp_path / "runs", train={"epochs": 2})
    Trainer(load_config(path)).fit()
    run = tmp_path / "runs" / "r"
    recorded = (run / "config.yaml").read_text()
    with pytest.raises(ConfigError, match=r"model\.name.*--no-resume"):
        Trainer(load_config(path, ["model.name=compact_wide"])).fit()
    with pytest.raises(ConfigError, match=r"optim\.lr"):
        Trainer(load_config(path, ["optim.lr=0.5"])).fit()
    # the README's Python snippet after a longer CLI run: it used to do nothing and record epochs: 1
    with pytest.raises(ConfigError, match="already has 2 epochs"):
        Trainer(load_config(path, ["train.epochs=1"])).fit()
    assert (run / "config.yaml").read_text() == recorded
    # how it runs may change, and more epochs continue the run
    more = Trainer(load_config(path, ["train.epochs=3", "train.eval_batch_size=64", "train.threads=2"]))
    more.fit()
    assert more.step == 3 * more.steps_per_epoch
    assert load_config(run / "config.yaml")["train"]["epochs"] == 3


def test_nan_loss_stops_with_one_line_and_the_run_says_so(tmp_path, fer_csv, monkeypatch):
    from ferkit.errors import TrainingDiverged

    tr = Trainer(load_config(write_config(tmp_path / "n.yaml", fer_csv, tmp_path / "runs")))
    real = tr.method.train_step

    def nan_at_step_3(batch):
        loss, logs = real(batch)
        return (loss * float("nan") if tr.step == 2 else loss), logs

    monkeypatch.setattr(tr.method, "train_step", nan_at_step_3)
    with pytest.raises(TrainingDiverged, match=r"loss became nan at step 3 .*optim\.lr") as err:
        tr.fit()
    assert "\n" not in str(err.value)
    run = tmp_path / "runs" / "n"
    assert "step 3" in (run / "error.txt").read_text()
    assert '"kind": "error"' in (run / "log.jsonl").read_text().splitlines()[-1]


def test_ctrl_c_in_train_prints_the_resume_hint(tmp_path, fer_csv, monkeypatch, capsys):
    from ferkit.cli import main

    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "fit", interrupted)
    path = write_config(tmp_path / "c.yaml", fer_csv, tmp_path / "runs")
    assert main(["train", str(path)]) == 130
    assert "run the same command again to resume" in capsys.readouterr().err


@pytest.mark.parametrize("content, reason", [
    (b"", "empty file"), (b"e", "not a torch file"), (b"ABCD" * 10, "not a torch file"),
])
def test_unreadable_checkpoints_say_why_in_one_line(tmp_path, content, reason):
    from ferkit.errors import InputError

    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(InputError, match=reason) as err:
        load_checkpoint(path)
    assert "\n" not in str(err.value)


class _Payload:
    pass


def test_pickled_objects_are_refused_without_the_unsafe_advice(tmp_path):
    from ferkit.errors import InputError

    path = tmp_path / "evil.pt"
    torch.save({"x": _Payload()}, path)
    with pytest.raises(InputError, match="Python objects") as err:
        load_checkpoint(path)
    assert "weights_only" not in str(err.value) and "\n" not in str(err.value)
    truncated = tmp_path / "cut.pt"
    torch.save({"w": torch.zeros(1000)}, tmp_path / "ok.pt")
    truncated.write_bytes((tmp_path / "ok.pt").read_bytes()[:-100])
    with pytest.raises(InputError, match="truncated"):
        load_checkpoint(truncated)


def test_data_path_is_relative_to_the_config_file(tmp_path, fer_csv, monkeypatch):
    import shutil

    folder = tmp_path / "project" / "configs"
    folder.mkdir(parents=True)
    shutil.copy(fer_csv, folder.parent / "faces.csv")
    path = write_config(folder / "p.yaml", fer_csv, tmp_path / "runs", data={"path": "../faces.csv"})
    monkeypatch.chdir(tmp_path)  # elsewhere: ../faces.csv does not exist from here
    cfg = load_config(path)
    assert (tmp_path / cfg["data"]["path"]).resolve() == (folder.parent / "faces.csv").resolve()
    Trainer(load_config(path, ["train.epochs=1"]))  # the data loads


def test_library_calls_leave_the_process_thread_count_alone(tmp_path, fer_csv):
    import ferkit
    from ferkit import examples

    before = torch.get_num_threads()
    other = 1 if before != 1 else 2
    path = write_config(tmp_path / "t.yaml", fer_csv, tmp_path / "runs", train={"epochs": 1, "threads": other})
    Trainer(load_config(path)).fit()
    assert torch.get_num_threads() == before
    rec = ferkit.Recognizer(tmp_path / "runs" / "t", device="cpu", threads=other, detector="haar")
    rec.predict(examples.path("astronaut"))
    assert torch.get_num_threads() == before


def test_train_into_an_impossible_run_directory_is_one_line(tmp_path, fer_csv, capsys):
    from ferkit.cli import main

    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    path = write_config(tmp_path / "w.yaml", fer_csv, tmp_path / "runs")
    assert main(["train", str(path), "--run-dir", str(blocker / "run")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert main(["train", str(path), "--run-dir", str(blocker)]) == 2


def test_every_committed_run_config_still_loads():
    from pathlib import Path

    import yaml

    repo = Path(__file__).resolve().parents[1]
    paths = sorted((repo / "results").rglob("config.yaml")) + sorted((repo / "configs").glob("*.yaml"))
    checked = 0
    for path in paths:
        raw = yaml.safe_load(path.read_text())
        if not isinstance(raw, dict) or "kind" in raw or "results_dir" in raw or "variants" in raw:
            continue  # an experiment grid's config, not a run's
        load_config(path)
        checked += 1
    assert checked >= 10
