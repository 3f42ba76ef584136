"""ONNX export and the onnxruntime engine: parity with torch, metadata, int8, errors, CLI."""

from pathlib import Path

import numpy as np
import pytest
import torch

from ferkit.cli import main
from ferkit.errors import ConfigError, InputError

EXAMPLES = Path(__file__).resolve().parents[1] / "src" / "ferkit" / "examples"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from ferkit.inference.onnx_engine import export_onnx

    out = tmp_path_factory.mktemp("onnx") / "default.onnx"
    export_onnx("accurate", out)
    return out


@pytest.fixture(scope="module")
def faces():
    return np.random.default_rng(0).integers(0, 256, (40, 48, 48), dtype=np.uint8)


def test_export_matches_torch_within_1e4(exported, faces):
    from ferkit.engine.model_io import load_model
    from ferkit.inference.onnx_engine import OnnxModel

    torch_m = load_model("accurate", "cpu")
    onnx_m = OnnxModel(exported)
    assert onnx_m.classes == torch_m.classes
    assert onnx_m.preprocess == torch_m.preprocess
    for flip in (False, True):
        for crop in (0.0, 0.92):  # multi-crop averaging runs the same views on both engines
            a = onnx_m.predict_probs(faces, tta_flip=flip, tta_crop=crop)
            b = torch_m.predict_probs(faces, tta_flip=flip, tta_crop=crop)
            assert a.shape == b.shape == (len(faces), len(torch_m.classes))
            np.testing.assert_allclose(a, b, atol=1e-4, rtol=0)
    # the batch axis is dynamic and rows do not depend on each other
    np.testing.assert_allclose(onnx_m.predict_probs(faces[:1]), onnx_m.predict_probs(faces)[:1], atol=1e-6)


def test_recognizer_onnx_engine_matches_torch_on_a_photo(exported):
    import ferkit

    photo = EXAMPLES / "astronaut_pair.jpg"
    rt = ferkit.Recognizer("accurate", engine="torch")
    assert ferkit.Recognizer(exported).engine == "onnx" and rt.engine == "torch"  # auto: by the model file
    assert ferkit.Recognizer("accurate").engine == "torch"
    assert ferkit.Recognizer("default").engine == "onnx"  # the bundled default is the int8 ONNX file
    with pytest.raises(ConfigError, match="is an ONNX file"):  # by name as by path: never torch on an ONNX file
        ferkit.Recognizer("default", engine="torch")
    for model in ("accurate", exported):  # a bundled name is exported on the fly and cached
        ro = ferkit.Recognizer(model, engine="onnx")
        assert ro.labels == rt.labels
        a, b = ro.predict(photo), rt.predict(photo)
        assert len(a) == len(b) == 2
        for fa, fb in zip(a, b):
            assert fa["box"] == fb["box"] and fa["label"] == fb["label"]
            np.testing.assert_allclose([fa["probs"][k] for k in rt.labels], [fb["probs"][k] for k in rt.labels],
                                       atol=1e-4)
            assert abs(fa["uncertainty"] - fb["uncertainty"]) < 1e-3
        crops = rt.crops(photo)
        np.testing.assert_allclose(ro.predict_faces(list(crops)), rt.predict_faces(list(crops)), atol=1e-4)


def test_cached_export_is_reused(tmp_path, monkeypatch):
    from ferkit.inference.onnx_engine import cached_export

    monkeypatch.setenv("FERKIT_CACHE", str(tmp_path))
    a = cached_export("accurate")
    mtime = a.stat().st_mtime_ns
    assert cached_export("accurate") == a and a.stat().st_mtime_ns == mtime
    assert a.parent == tmp_path / "onnx"


def test_int8_export_is_smaller_and_still_a_distribution(exported, tmp_path, faces):
    from ferkit.inference.onnx_engine import OnnxModel, export_onnx

    with pytest.raises(ConfigError, match="calibrat"):
        export_onnx("accurate", tmp_path / "q.onnx", quantize="int8")  # static int8 needs faces
    q = export_onnx("accurate", tmp_path / "q.onnx", quantize="int8", calibration=faces)
    assert q.stat().st_size < 0.5 * exported.stat().st_size
    m = OnnxModel(q)
    assert m.meta["quantize"] == "int8" and m.meta["calibration_faces"] == len(faces)
    import onnx

    ops = {n.op_type for n in onnx.load(str(q)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops and "DynamicQuantizeLinear" not in ops  # static QDQ
    p = m.predict_probs(faces)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
    ref = OnnxModel(exported).predict_probs(faces)
    assert np.abs(p - ref).max() < 0.1  # int8 moves probabilities a little, not wholesale


def test_method_uncertainty_is_exported(tmp_path, faces):
    """A method with its own uncertainty gets a second graph output, used by the engine."""
    from ferkit.engine.model_io import LoadedModel
    from ferkit.inference.onnx_engine import OnnxModel, export_onnx
    from ferkit.methods.ce import CrossEntropy
    from ferkit.models import build_model

    class WithUncertainty(CrossEntropy):
        def uncertainty(self, x):
            return self.predict_logits(x).logsumexp(1)

    torch.manual_seed(0)
    net = WithUncertainty(build_model("compact", num_classes=7), {"name": "ce"}, 7, {}).eval()
    pre = {"image_size": 48, "channels": 1, "mean": 0.5, "std": 0.5, "tta_flip": False}
    loaded = LoadedModel(net, tuple("abcdefg"), pre, torch.device("cpu"), "test")
    out = export_onnx(loaded, tmp_path / "u.onnx")
    m = OnnxModel(out)
    assert m.has_uncertainty
    p, u = m.classify(faces)
    p_t, u_t = loaded.classify(faces)
    np.testing.assert_allclose(p, p_t, atol=1e-4)
    np.testing.assert_allclose(u, u_t, atol=1e-4)


def test_load_model_dispatches_onnx(exported, faces):
    from ferkit.engine.model_io import load_model
    from ferkit.inference.onnx_engine import OnnxModel

    m = load_model(str(exported))
    assert isinstance(m, OnnxModel)
    assert m.predict_probs(faces).shape == (len(faces), 7)


def test_errors_are_one_line(tmp_path, exported):
    import ferkit
    from ferkit.inference.onnx_engine import OnnxModel

    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(InputError, match="cannot load ONNX model"):
        OnnxModel(bad)
    with pytest.raises(InputError, match="not found"):
        OnnxModel(tmp_path / "missing.onnx")
    with pytest.raises(ConfigError, match="CPU"):
        ferkit.Recognizer(exported, engine="onnx", device="cuda")
    with pytest.raises(ConfigError, match="engine='onnx'"):
        ferkit.Recognizer(str(exported), engine="torch")
    with pytest.raises(ConfigError, match="unknown engine"):
        ferkit.Recognizer("accurate", engine="tensorrt")
    r = ferkit.Recognizer(exported, engine="onnx")
    with pytest.raises(ConfigError, match="engine='torch'"):
        r.cam(EXAMPLES / "astronaut.jpg")


def test_cli_export_and_predict(tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert main(["export", "accurate", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert out.is_file() and "max |p_onnx - p_torch|" in text
    diff = float(text.split("= ")[1].split(" ")[0].rstrip(","))
    assert diff < 1e-4
    assert main(["predict", str(EXAMPLES / "astronaut.jpg"), "--model", str(out), "--engine", "onnx",
                 "--no-progress"]) == 0
    assert "face 0" in capsys.readouterr().out
    assert main(["export", "accurate", "--out", str(tmp_path / "x.onnx"), "--quantize", "fp4"]) != 0


def test_ensemble_averages_members_and_exports(tmp_path, faces):
    """An ensemble model.pt averages its members' probabilities, on both engines."""
    from ferkit.engine.checkpoint import load_checkpoint, save_checkpoint
    from ferkit.engine.model_io import load_model, make_ensemble, resolve_model_path
    from ferkit.inference.onnx_engine import OnnxModel, export_onnx

    # a second member: the default model with its classifier's weights perturbed
    ck = load_checkpoint(resolve_model_path("accurate"))
    torch.manual_seed(0)
    w = [k for k in ck["state_dict"] if k.endswith("fc.weight")][0]
    ck["state_dict"][w] = ck["state_dict"][w] + 0.5 * torch.randn_like(ck["state_dict"][w])
    save_checkpoint(ck, tmp_path / "b.pt")
    ens = make_ensemble(["accurate", tmp_path / "b.pt"])
    save_checkpoint(ens, tmp_path / "ens.pt")
    m = load_model(tmp_path / "ens.pt", "cpu")
    a, b = load_model("accurate", "cpu"), load_model(tmp_path / "b.pt", "cpu")
    for flip in (False, True):
        expect = 0.5 * (a.predict_probs(faces, tta_flip=flip) + b.predict_probs(faces, tta_flip=flip))
        np.testing.assert_allclose(m.predict_probs(faces, tta_flip=flip), expect, atol=1e-5)
    assert m.classify(faces)[1] is None  # no method uncertainty: the Recognizer uses entropy
    out = export_onnx(m, tmp_path / "ens.onnx")
    np.testing.assert_allclose(OnnxModel(out).predict_probs(faces), m.predict_probs(faces), atol=1e-4)
    with pytest.raises(InputError, match="differ"):
        ck["preprocess"] = {**ck["preprocess"], "image_size": 64}
        save_checkpoint(ck, tmp_path / "c.pt")
        make_ensemble(["accurate", tmp_path / "c.pt"])


def test_cli_int8_export_needs_and_uses_calibration_faces(tmp_path, capsys):
    from synthetic import write_fer2013_csv

    csv = write_fer2013_csv(tmp_path / "fer.csv", n_train=64, n_test=8)
    assert main(["export", "fer2013-compact-48g-7", "--out", str(tmp_path / "q.onnx"), "--quantize", "int8"]) == 2
    assert "--calib-dataset" in capsys.readouterr().err
    assert main(["export", "fer2013-compact-48g-7", "--out", str(tmp_path / "q.onnx"), "--quantize", "int8",
                 "--calib-dataset", "fer2013", "--calib-path", str(csv), "--calib-count", "32"]) == 0
    assert "of 32 calibration faces" in capsys.readouterr().out
