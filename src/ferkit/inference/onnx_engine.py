"""ONNX export and the onnxruntime engine: the same model, without torch at inference time.

The exported graph holds the whole eval path of a ferkit model: it takes the face crops as
float32 pixel values 0-255, shape (N, C, S, S) (S, C: the model's input size and channels),
normalises them as in training, runs the method's inference head and returns ``probs`` (N, K),
softmax probabilities in the model's label order, plus ``uncertainty`` (N,) when the method
has its own (APSM's). The batch axis is dynamic. Flip averaging is done by the engine (two
runs), as the torch engine does it, so a model's ``tta_flip`` works the same on both.

Everything needed to use the file travels inside it, as ONNX metadata (key ``ferkit``, JSON):
the labels, the preprocessing (input size, channels, mean/std, tta_flip) and the source model's
validation metrics. A ``.onnx`` file is therefore a model ferkit can load on its own:
``Recognizer("model.onnx", engine="onnx")`` or ``ferkit evaluate --model model.onnx``.

Int8: ``quantize="int8"`` applies onnxruntime's dynamic quantisation (weights int8, activations
quantised on the fly) to the exported graph; ``benchmarks/onnx_engine.py`` measures what it
changes in accuracy and speed.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ferkit.engine.model_io import LoadedModel, has_own_uncertainty, load_model, resolve_model_path
from ferkit.engine.onnx_runtime import FORMAT, META_KEY, OnnxModel, is_onnx_file
from ferkit.errors import ConfigError

QUANTIZE = (None, "int8")


class _ExportGraph(nn.Module):
    """What the ONNX graph computes: 0-255 pixels -> normalised -> probabilities (+ uncertainty)."""

    def __init__(self, net: nn.Module, mean: Any, std: Any, with_uncertainty: bool) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1))
        self.with_uncertainty = with_uncertainty

    def forward(self, images: torch.Tensor):
        x = (images / 255.0 - self.mean) / self.std
        probs = self.net.predict_logits(x).float().softmax(1)
        if self.with_uncertainty:
            return probs, self.net.uncertainty(x).float().reshape(-1)
        return probs


def export_onnx(model: Any, out: str | Path, *, quantize: str | None = None, opset: int = 17,
                tta_flip: bool | None = None, calibration: np.ndarray | None = None) -> Path:
    """Write ``model`` (a bundled name, run directory, model.pt or checkpoint) as an ONNX file.

    Args:
        model: what :func:`ferkit.engine.model_io.load_model` takes, or a loaded model.
        out: the ``.onnx`` path (written atomically).
        quantize: ``None`` or ``"int8"``: onnxruntime's static QDQ quantisation, int8 weights and uint8
            activations (U8S8: on x86 the int8-activation variant measured slower than fp32, and the
            dynamic quantisation shipped before ran 7x slower than fp32), with the activation ranges
            calibrated on ``calibration``.
        opset: the ONNX opset (17 runs on onnxruntime >= 1.14).
        tta_flip: store this flip-averaging default instead of the model's own.
        calibration: uint8 faces (N, H, W) or (N, H, W, 3), any size (resized to the model's input),
            from the training data; required for int8. A few hundred suffice.
    """
    from ferkit.atomic import atomic_write_bytes

    if quantize not in QUANTIZE:
        raise ConfigError(f"unknown quantisation '{quantize}' (none or int8)")
    if quantize == "int8" and (calibration is None or len(calibration) == 0):
        raise ConfigError("int8 export calibrates its activation ranges on faces: give calibration images "
                          "(ferkit export --calib-dataset ... --calib-path ...)")
    loaded = load_model(model, "cpu") if isinstance(model, (str, os.PathLike)) else model
    if not isinstance(loaded, LoadedModel):  # an .onnx file, a classic .npz model: nothing to export
        raise ConfigError(f"{getattr(loaded, 'source', model)}: only torch models (run directory, model.pt, "
                          "checkpoint) export to ONNX")
    net = loaded.net.to("cpu").eval()
    p = dict(loaded.preprocess)
    if tta_flip is not None:
        p["tta_flip"] = bool(tta_flip)
    size, channels = int(p["image_size"]), int(p["channels"])
    with_unc = has_own_uncertainty(net)
    graph = _ExportGraph(net, p["mean"], p["std"], with_unc).eval()
    outputs = ["probs", "uncertainty"] if with_unc else ["probs"]
    dummy = torch.full((2, channels, size, size), 128.0)
    meta = {"format": FORMAT, "classes": list(loaded.classes), "preprocess": p, "metrics": loaded.metrics,
            "source": str(loaded.source), "outputs": outputs, "quantize": quantize or "none",
            "method": type(net).__name__}
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "model.onnx"
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(graph, (dummy,), str(raw), input_names=["images"], output_names=outputs,
                              dynamic_axes={"images": {0: "n"}, **{o: {0: "n"} for o in outputs}},
                              opset_version=opset, dynamo=False)
        if quantize == "int8":
            raw = _quantize_int8(raw, Path(tmp), _calibration_input(calibration, size, channels))
            meta["calibration_faces"] = int(len(calibration))
        import onnx

        proto = onnx.load(str(raw))
        del proto.metadata_props[:]
        entry = proto.metadata_props.add()
        entry.key, entry.value = META_KEY, json.dumps(meta)
        proto.producer_name = "ferkit"
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out, proto.SerializeToString())
    return out


def _calibration_input(images: np.ndarray, size: int, channels: int) -> np.ndarray:
    """float32 (N, C, S, S) 0-255 pixels, the graph's input, from uint8 faces of any size."""
    from ferkit.augment import build_augment
    from ferkit.engine.batches import images_to_tensor

    t = images_to_tensor(np.asarray(images), channels)
    if t.shape[-2:] != (size, size):
        t = build_augment("eval", size, channels)(t.float() / 255.0) * 255.0
    return t.float().numpy()


class _Faces:
    """onnxruntime's CalibrationDataReader protocol over an array of inputs, in batches."""

    def __init__(self, x: np.ndarray, batch: int = 64) -> None:
        self.batches = iter([x[i:i + batch] for i in range(0, len(x), batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        nxt = next(self.batches, None)
        return None if nxt is None else {"images": np.ascontiguousarray(nxt, np.float32)}


def _quantize_int8(src: Path, tmp: Path, calibration: np.ndarray) -> Path:
    """Static QDQ int8 (per-channel int8 weights, uint8 activations calibrated by MinMax), after
    onnxruntime's recommended pre-processing (shape inference and graph optimisation, which folds
    each BatchNorm into its conv so the folded weights are what gets quantised)."""
    import logging

    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre, out = tmp / "model.pre.onnx", tmp / "model.int8.onnx"
    quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
    import onnx

    # the softmax stays in float: uint8 probabilities would come out in steps of 1/255, no longer summing to 1
    keep_float = [n.name for n in onnx.load(str(pre)).graph.node if n.op_type == "Softmax"]
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantiser logs pre-processing advice at WARNING
    try:
        quantize_static(str(pre), str(out), _Faces(calibration), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                        calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=keep_float)
    finally:
        root.setLevel(level)
    return out


def cached_export(model: str | Path) -> Path:
    """The (float) ONNX export of a torch model file, made once and kept in ``FERKIT_CACHE/onnx/``.

    The cache key is the model file's content hash, so a retrained model is exported anew and an
    unchanged one is not. (An int8 export needs calibration faces: ``ferkit export --quantize int8``.)
    """
    from ferkit.data.cache import cache_dir

    path = resolve_model_path(model)
    h = hashlib.sha256(path.read_bytes()).hexdigest()[:20]
    target = cache_dir() / "onnx" / f"{path.stem}-{h}.onnx"
    if not target.is_file():
        export_onnx(path, target)
    return target


__all__ = ["FORMAT", "META_KEY", "QUANTIZE", "OnnxModel", "cached_export", "export_onnx", "is_onnx_file"]
