"""Offline distillation (data.teacher): the teacher's probabilities mixed with the labels become the
soft targets that ce trains on."""

from __future__ import annotations

import numpy as np
import pytest

from bench_scripts import load_benchmark
from ferkit.engine.config import load_config
from ferkit.engine.device import autocast_dtype, resolve_device
from ferkit.engine.model_io import load_model
from ferkit.engine.trainer import Trainer
from ferkit.errors import ConfigError

from synthetic import write_config


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    from synthetic import write_fer2013_csv

    tmp = tmp_path_factory.mktemp("teacher")
    csv = write_fer2013_csv(tmp / "fer.csv", n_train=96, n_test=24)
    Trainer(load_config(write_config(tmp / "t.yaml", csv, tmp / "runs", train={"epochs": 2, "tta_flip": True}))).fit()
    return tmp / "runs" / "t", csv


def test_soft_targets_are_the_labels_mixed_with_the_teacher(teacher, tmp_path):
    run, csv = teacher
    path = write_config(tmp_path / "s.yaml", csv, tmp_path / "runs", train={"epochs": 1},
                        data={"teacher": str(run), "teacher_weight": 0.25})
    student = Trainer(load_config(path))
    data = student.train_data
    probs = load_model(run, "cpu").predict_probs(np.asarray(data.images))  # flip-averaged, as validated
    one_hot = np.eye(7)[data.labels]
    np.testing.assert_allclose(data.soft_targets, 0.75 * one_hot + 0.25 * probs, atol=2e-2)  # bf16 on AMX CPUs
    np.testing.assert_allclose(data.soft_targets.sum(1), 1.0, atol=1e-5)
    assert student.method.target == "soft" and data.meta["teacher"] == str(run)
    student.fit()
    # temperature softens: a higher T gives flatter targets
    hot = Trainer(load_config(path, ["data.teacher_weight=1.0", "data.teacher_temperature=4.0", "name=hot"]))
    cold = Trainer(load_config(path, ["data.teacher_weight=1.0", "name=cold"]))
    assert hot.train_data.soft_targets.max(1).mean() < cold.train_data.soft_targets.max(1).mean()


def test_a_list_of_teachers_is_an_ensemble_teacher(teacher, tmp_path):
    run, csv = teacher
    other = tmp_path / "runs" / "t2"
    Trainer(load_config(write_config(tmp_path / "t2.yaml", csv, tmp_path / "runs", name="t2", seed=1,
                                     train={"epochs": 1, "tta_flip": False}))).fit()
    path = write_config(tmp_path / "e.yaml", csv, tmp_path / "runs", train={"epochs": 1},
                        data={"teacher": [str(run), str(other)], "teacher_weight": 1.0})
    data = Trainer(load_config(path)).train_data
    images, amp = np.asarray(data.images), autocast_dtype(resolve_device("cpu"), "auto")  # as the teachers score
    first, second = (load_model(r, "cpu").predict_probs(images, amp_dtype=amp) for r in (run, other))
    mean = (first + second) / 2
    np.testing.assert_allclose(data.soft_targets, mean, atol=1e-5)
    for one in (first, second):  # two different teachers, so the mean is neither one
        assert np.abs(data.soft_targets - one).max() > 100 * 1e-5
    assert data.meta["teacher"] == [str(run), str(other)]
    with pytest.raises(ConfigError, match="empty list"):
        Trainer(load_config(path, ["data.teacher=[]"]))


def test_teacher_with_other_labels_is_refused(teacher, tmp_path):
    from ferkit.engine.checkpoint import load_checkpoint, save_checkpoint

    run, csv = teacher
    ck = load_checkpoint(run / "model.pt")
    ck["classes"] = list(reversed(ck["classes"]))  # same count, another order: must not be mixed in
    save_checkpoint(ck, tmp_path / "other.pt")
    path = write_config(tmp_path / "x.yaml", csv, tmp_path / "runs", data={"teacher": str(tmp_path / "other.pt")})
    with pytest.raises(ConfigError, match="data.teacher .* predicts"):
        Trainer(load_config(path))
    with pytest.raises(ConfigError, match="teacher_weight"):
        load_config(path, ["data.teacher_weight=1.5"])


def test_the_ensemble_check_scores_the_mean_of_the_members() -> None:
    """Two members each sure and right on one half, unsure on the other: their mean is right on
    both halves, so the ensemble beats either member, and they agree on the sure halves only."""
    labels = np.repeat([0, 1], 50)
    a = np.where(labels[:, None] == 0, [0.9, 0.05, 0.05], [0.4, 0.35, 0.25])  # right on the 0s only
    b = np.where(labels[:, None] == 1, [0.05, 0.9, 0.05], [0.3, 0.45, 0.25])  # right on the 1s only
    res = load_benchmark("ensemble_holdout").score([a, b], labels, ["x", "y", "z"])
    assert res["member_0"]["accuracy"] == pytest.approx(0.5)
    assert res["member_1"]["accuracy"] == pytest.approx(0.5)
    assert res["ensemble"]["accuracy"] == pytest.approx(1.0)
    assert res["members_agree"] == pytest.approx(0.0)  # a says 0 everywhere, b says 1 everywhere
    assert res["ensemble"]["n"] == 100
    assert res["vs_member_0"]["member_1"] == {"reference_only": 50, "other_only": 50, "p_mcnemar": 1.0}
    assert res["vs_member_0"]["ensemble"]["reference_only"] == 0
    assert res["vs_member_0"]["ensemble"]["other_only"] == 50
    assert res["vs_member_0"]["ensemble"]["p_mcnemar"] == pytest.approx(2 / 2**50)


def test_the_paired_test_counts_discordant_faces_and_gives_the_exact_p_value() -> None:
    """Exact two-sided McNemar: 10 faces won, none lost is p = 2 / 2^10; 5 won, 3 lost is
    2 x P(Binomial(8, 1/2) <= 3) = 186 / 256; faces both get right or wrong do not count."""
    mcnemar = load_benchmark("ensemble_holdout").mcnemar
    ref = np.array([False] * 10 + [True] * 20)
    other = np.array([True] * 10 + [True] * 20)
    assert mcnemar(ref, other) == {"reference_only": 0, "other_only": 10, "p_mcnemar": pytest.approx(2 / 1024)}
    ref = np.array([True] * 3 + [False] * 5 + [True] * 7 + [False] * 4)
    other = np.array([False] * 3 + [True] * 5 + [True] * 7 + [False] * 4)
    assert mcnemar(ref, other) == {"reference_only": 3, "other_only": 5, "p_mcnemar": pytest.approx(186 / 256)}
    assert mcnemar(ref, ref)["p_mcnemar"] == 1.0


def test_the_teacher_scores_each_face_set_once_and_a_changed_teacher_misses(teacher, tmp_path, monkeypatch):
    from ferkit.data.cache import cache_dir
    from ferkit.engine import data as run_data
    from ferkit.engine.model_io import LoadedModel

    run, csv = teacher
    path = write_config(tmp_path / "s.yaml", csv, tmp_path / "runs", train={"epochs": 1},
                        data={"teacher": str(run / "model.pt"), "teacher_weight": 1.0})
    first = run_data.load_run_data(load_config(path))[0].soft_targets
    assert len(list((cache_dir() / "teachers").glob("*.npy"))) >= 1

    def no_scoring(*args, **kwargs):
        raise AssertionError("the teacher scored the faces again")

    monkeypatch.setattr(LoadedModel, "predict_probs", no_scoring)
    again = run_data.load_run_data(load_config(path))[0].soft_targets  # a resumed run: read back
    np.testing.assert_array_equal(again, first)
    # another teacher file (here: the same weights re-saved with one weight changed) is scored afresh
    import torch

    ck = torch.load(run / "model.pt", weights_only=True)
    name = next(k for k, v in ck["state_dict"].items() if v.is_floating_point())
    ck["state_dict"][name] = ck["state_dict"][name] + 1.0
    torch.save(ck, tmp_path / "other.pt")
    other = write_config(tmp_path / "o.yaml", csv, tmp_path / "runs", train={"epochs": 1},
                         data={"teacher": str(tmp_path / "other.pt"), "teacher_weight": 1.0})
    with pytest.raises(AssertionError, match="scored the faces again"):
        run_data.load_run_data(load_config(other))


def test_a_teacher_cache_that_cannot_be_written_only_warns(teacher, tmp_path, monkeypatch):
    from ferkit.engine import data as run_data

    run, csv = teacher
    monkeypatch.setenv("FERKIT_CACHE", str(tmp_path / "fresh"))

    def full_disk(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(run_data, "atomic_write", full_disk)
    path = write_config(tmp_path / "s.yaml", csv, tmp_path / "runs", train={"epochs": 1},
                        data={"teacher": str(run), "teacher_weight": 1.0})
    with pytest.warns(UserWarning, match="could not keep the teacher"):
        train = run_data.load_run_data(load_config(path))[0]
    np.testing.assert_allclose(train.soft_targets.sum(1), 1.0, atol=1e-5)
