"""The face-pretrained MobileNet: TF.js decoding, conversion parity, shipped weights, sanity, set-up.

Parity runs the vendored TF.js graph through ``tfjs_interpreter`` (an independent op-by-op numpy
reference) and the converted torch network on real face crops; both must agree to 1e-4.
Tests that need the vendored graphs skip when ``../shared/vendor`` is absent.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from ferkit.engine.config import load_config
from ferkit.engine.device import autocast_dtype
from ferkit.errors import ConfigError, InputError
from ferkit.models import build_model, load_pretrained, recalibrate_batchnorm
from ferkit.models.mobilenet import SameConv2d
from ferkit.models.pretrained import PRETRAINED, WEIGHTS_DIR
from ferkit.models.tfjs import mobilenet_v1_state_dict, read_graph_model
from tfjs_interpreter import run_graph

REPO = Path(__file__).resolve().parents[1]
VENDOR = REPO.parent / "shared" / "vendor" / "human-models-3.0.4" / "models"
FER_CSV = REPO.parent / "shared" / "data" / "fer2013" / "fer2013_dev.csv.gz"
EXAMPLES = REPO / "src" / "ferkit" / "examples"
BGR_MEAN = np.array([103.939, 116.779, 123.68])
GRAPHS = {"vggface2_mobilenet_v1": "faceres-deep.json", "vggface2_mobilenet_v1_faceres": "faceres.json"}

needs_vendor = pytest.mark.skipif(not VENDOR.is_dir(), reason="vendored TF.js models not present")


def face_crops(size: int) -> np.ndarray:
    """Real faces, RGB uint8 (N, size, size, 3): the astronaut's face and, when present, FER2013 rows."""
    img = cv2.cvtColor(cv2.imread(str(EXAMPLES / "astronaut.jpg")), cv2.COLOR_BGR2RGB)
    x, y, w, h = 178, 57, 95, 120  # the face ferkit's detector finds (README)
    crops = [cv2.resize(img[y:y + h, x:x + w], (size, size), interpolation=cv2.INTER_AREA)]
    if FER_CSV.is_file():
        import pandas as pd

        rows = pd.read_csv(FER_CSV, nrows=3)["pixels"]
        for r in rows:
            g = np.array(r.split(), np.uint8).reshape(48, 48)
            crops.append(np.repeat(cv2.resize(g, (size, size))[..., None], 3, -1))
    return np.stack(crops)


def converted(name: str, size: int) -> torch.nn.Module:
    g = read_graph_model(VENDOR / GRAPHS[name])
    m = build_model("mobilenet_v1", 7, 3, size)
    m.backbone.load_state_dict({k: torch.from_numpy(v) for k, v in mobilenet_v1_state_dict(g).items()})
    return m.eval()


def torch_input(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy((rgb.astype(np.float64) - BGR_MEAN[::-1]).transpose(0, 3, 1, 2).copy()).float()


@needs_vendor
@pytest.mark.parametrize("name", sorted(GRAPHS))
@pytest.mark.parametrize("size", [112, 97])  # even (TF pads bottom/right only) and odd input sizes
def test_conversion_matches_the_tfjs_graph(name: str, size: int) -> None:
    rgb = face_crops(size)
    ref = run_graph(VENDOR / GRAPHS[name], rgb[..., ::-1] - BGR_MEAN, ["global_pooling/Mean"])["global_pooling/Mean"]
    with torch.no_grad():
        emb = converted(name, size).embed(torch_input(rgb)).double().numpy()
    assert ref.shape == emb.shape == (len(rgb), 1024)
    assert np.abs(emb - ref).max() < 1e-4, np.abs(emb - ref).max()
    assert np.abs(ref).max() > 0.5  # a real signal, not two zero vectors


@needs_vendor
def test_symmetric_padding_would_break_parity() -> None:
    """Guards the test above: torch's padding=1 on strided convs is measurably different."""
    rgb = face_crops(112)
    ref = run_graph(VENDOR / GRAPHS["vggface2_mobilenet_v1"], rgb[..., ::-1] - BGR_MEAN,
                    ["global_pooling/Mean"])["global_pooling/Mean"]
    m = converted("vggface2_mobilenet_v1", 112)
    for mod in m.modules():
        if isinstance(mod, SameConv2d) and mod.stride[0] == 2:
            mod.padding = (1, 1)
            mod.forward = lambda x, mod=mod: torch.nn.Conv2d.forward(mod, x)
    with torch.no_grad():
        emb = m.embed(torch_input(rgb)).double().numpy()
    assert np.abs(emb - ref).max() > 1e-2


@needs_vendor
@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_shipped_weights_are_the_conversion_in_float16(name: str) -> None:
    shipped = torch.load(WEIGHTS_DIR / PRETRAINED[name]["file"], weights_only=True)
    conv = mobilenet_v1_state_dict(read_graph_model(VENDOR / GRAPHS[name]))
    assert set(shipped) == set(conv)
    for k, v in conv.items():
        got = shipped[k].float().numpy() if shipped[k].is_floating_point() else shipped[k].numpy()
        np.testing.assert_allclose(got, v, rtol=1e-3, atol=1e-4 * max(1.0, float(np.abs(v).max())), err_msg=k)
    card = json.loads((WEIGHTS_DIR / PRETRAINED[name]["file"]).with_suffix(".json").read_text())
    assert card["source"]["sha256"] and "MIT" in card["licence"] and card["model"] == "mobilenet_v1"


def test_shipped_backbone_sanity_mirror_closer_than_other_people() -> None:
    """A face and its mirror embed far closer than two different people (cosine distance)."""
    m = build_model("mobilenet_v1", 7, 3, 112)
    load_pretrained(m, "vggface2_mobilenet_v1")
    m.eval()
    faces = face_crops(112)
    if len(faces) < 3:
        pytest.skip("needs the FER2013 rows for several people")
    with torch.no_grad():
        e = torch.nn.functional.normalize(m.embed(torch_input(faces)), dim=1)
        em = torch.nn.functional.normalize(m.embed(torch_input(faces[:, :, ::-1].copy())), dim=1)
    mirror = 1 - (e * em).sum(1)
    other = torch.stack([1 - e[i] @ e[j] for i in range(len(e)) for j in range(len(e)) if i < j])
    assert mirror.max() < 0.5 * other.min(), (mirror, other)


def _tiny_tfjs(tmp_path: Path, quant: dict | None) -> tuple[Path, np.ndarray]:
    vals = np.array([-1.5, 0.25, 2.0, 3.0], np.float32)
    spec = {"name": "w", "shape": [2, 2], "dtype": "float32"}
    if quant is None:
        data = vals.tobytes()
    elif quant["dtype"] == "float16":
        spec["quantization"] = quant
        data = vals.astype("<f2").tobytes()
    else:  # affine uint8: q * scale + min
        spec["quantization"] = quant
        data = np.round((vals - quant["min"]) / quant["scale"]).astype(np.uint8).tobytes()
    model = {"format": "graph-model", "modelTopology": {"node": [{"name": "w", "op": "Const"}]},
             "weightsManifest": [{"paths": ["w.bin"], "weights": [spec]}]}
    (tmp_path / "m.json").write_text(json.dumps(model))
    (tmp_path / "w.bin").write_bytes(data)
    return tmp_path / "m.json", vals.reshape(2, 2)


@pytest.mark.parametrize("quant", [None, {"dtype": "float16"}, {"dtype": "uint8", "min": -1.5, "scale": 0.25}])
def test_tfjs_reader_undoes_quantisation(tmp_path, quant) -> None:
    path, vals = _tiny_tfjs(tmp_path, quant)
    np.testing.assert_array_equal(read_graph_model(path).weights["w"], vals)


def test_tfjs_reader_errors(tmp_path) -> None:
    path, _ = _tiny_tfjs(tmp_path, None)
    (tmp_path / "w.bin").write_bytes(b"\0" * 8)
    with pytest.raises(InputError, match="end before"):
        read_graph_model(path)
    (tmp_path / "x.json").write_text('{"format": "layers-model"}')
    with pytest.raises(InputError, match="not a TF.js graph model"):
        read_graph_model(tmp_path / "x.json")


def test_recalibrated_batchnorm_keeps_the_function_and_trains_sanely() -> None:
    torch.manual_seed(0)
    m = build_model("mobilenet_v1", 7, 3, 64)
    load_pretrained(m, "vggface2_mobilenet_v1")
    x = torch.randn(32, 3, 64, 64) * 60
    m.eval()
    with torch.no_grad():
        before = m.embed(x)
        # untouched folded BN in train mode normalises every channel: far from the pretrained function
        raw_train = copy.deepcopy(m).train().embed(x)
    assert recalibrate_batchnorm(m, [x[:16], x[16:]]) == 27
    with torch.no_grad():
        after = m.embed(x)
        cal_train = copy.deepcopy(m).train().embed(x)
    assert torch.allclose(after, before, rtol=1e-4, atol=1e-4 * float(before.abs().max()))
    assert (cal_train - before).abs().mean() < 0.2 * (raw_train - before).abs().mean()
    with torch.no_grad():
        m.eval()
        again = recalibrate_batchnorm(m, [x])  # any BN, any statistics: still the same function
        assert torch.allclose(m.embed(x), before, rtol=1e-4, atol=1e-4 * float(before.abs().max()))
    assert again == 27


def test_pretrained_config_resolves_normalisation_and_checks_the_model() -> None:
    cfg = load_config(None, ["model.name=mobilenet_v1", "model.pretrained=vggface2_mobilenet_v1", "data.channels=3"])
    assert cfg["data"]["mean"] == pytest.approx([123.68 / 255, 116.779 / 255, 103.939 / 255], abs=1e-6)
    assert cfg["data"]["std"] == pytest.approx([1 / 255] * 3)
    gray = load_config(None, ["model.name=mobilenet_v1", "model.pretrained=vggface2_mobilenet_v1"])
    assert gray["data"]["mean"] == pytest.approx(sum([123.68, 116.779, 103.939]) / 3 / 255, abs=1e-6)
    assert load_config(None, [])["data"]["mean"] == 0.5
    assert load_config(None, ["data.mean=0.4"])["data"]["mean"] == 0.4
    with pytest.raises(ConfigError, match="model.name: mobilenet_v1"):
        load_config(None, ["model.pretrained=vggface2_mobilenet_v1"])


def test_gray_model_gets_the_rgb_stem_summed() -> None:
    m = build_model("mobilenet_v1", 7, 1, 64)
    report = load_pretrained(m, "vggface2_mobilenet_v1")
    assert report["adapted"] == {"backbone.stem.conv.weight": "summed 3 input channels into 1"}
    assert not report["missing"] or all(k.startswith("fc.") for k in report["missing"])


def test_frozen_blocks_stop_gradients_and_keep_statistics() -> None:
    m = build_model("mobilenet_v1", 7, 3, 64, frozen_blocks=3)
    m.train()
    frozen = [m.backbone.stem, m.backbone.blocks[0], m.backbone.blocks[1]]
    assert all(not p.requires_grad for f in frozen for p in f.parameters())
    assert all(not f.training for f in frozen) and m.backbone.blocks[2].training
    assert all(p.requires_grad for p in m.backbone.blocks[2].parameters())
    with pytest.raises(ConfigError):
        build_model("mobilenet_v1", 7, 3, 64, frozen_blocks=15)


def test_cpu_autocast_follows_the_hardware(monkeypatch) -> None:
    import ferkit.engine.device as device

    cpu = torch.device("cpu")
    monkeypatch.setattr(device, "cpu_has_fast_bf16", lambda: True)
    assert autocast_dtype(cpu, "auto") is torch.bfloat16
    monkeypatch.setattr(device, "cpu_has_fast_bf16", lambda: False)
    assert autocast_dtype(cpu, "auto") is None
    assert autocast_dtype(cpu, "bf16") is torch.bfloat16
    assert autocast_dtype(cpu, "off") is None
    with pytest.raises(ConfigError):
        autocast_dtype(cpu, "fp8")


def test_fast_bf16_needs_the_cpu_instructions_not_onednn_emulation(monkeypatch) -> None:
    """oneDNN says bf16 is supported on any AVX-512 CPU (by emulation, 2x slower than fp32 there):
    only AVX-512 BF16 or AMX make ``amp: auto`` pick bf16."""
    from ferkit.engine.device import cpu_has_fast_bf16

    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: True)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    for avx512_bf16, amx, native in [(False, False, False), (True, False, True), (False, True, True)]:
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v)
        assert cpu_has_fast_bf16() is native
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert cpu_has_fast_bf16() is False
