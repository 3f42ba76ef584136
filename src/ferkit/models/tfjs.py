"""Read a TensorFlow.js graph model (``model.json`` + ``.bin`` shards) without TensorFlow.

Why here: ferkit's face-pretrained backbones come from TF.js packages (see
``scripts/convert_tfjs.py``). This module only decodes the files: the graph's nodes and every
weight as a float32 / int32 numpy array, undoing TF.js weight quantisation (``float16``, and the
affine ``uint8`` / ``uint16`` kinds). Nothing in ferkit reads these files at run time; the
converted weights ship inside the package.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ferkit.errors import InputError

#: bytes per element of each stored dtype
_ITEMSIZE = {"float32": 4, "int32": 4, "bool": 1, "float16": 2, "uint8": 1, "uint16": 2}


@dataclass
class TfjsGraph:
    """The decoded model: ``nodes`` as in ``modelTopology.node``, ``weights`` by name, ``meta``."""

    nodes: list[dict[str, Any]]
    weights: dict[str, np.ndarray]
    meta: dict[str, Any]

    def ops(self) -> dict[str, str]:
        """node name -> op, for the non-constant nodes."""
        return {n["name"]: n["op"] for n in self.nodes if n["op"] != "Const"}


def _decode(buf: bytes, spec: dict[str, Any]) -> np.ndarray:
    shape = [int(s) for s in spec.get("shape", [])]
    q = spec.get("quantization")
    if q is None:
        dtype = {"float32": np.float32, "int32": np.int32, "bool": np.bool_}[spec["dtype"]]
        return np.frombuffer(buf, dtype=dtype).reshape(shape).copy()
    if q["dtype"] == "float16":
        return np.frombuffer(buf, dtype="<f2").astype(np.float32).reshape(shape)
    if q["dtype"] in ("uint8", "uint16"):
        raw = np.frombuffer(buf, dtype=np.uint8 if q["dtype"] == "uint8" else "<u2").astype(np.float32)
        out = raw * np.float32(q["scale"]) + np.float32(q["min"])
        return out.astype(np.int32 if spec["dtype"] == "int32" else np.float32).reshape(shape)
    raise InputError(f"weight {spec['name']!r}: unsupported TF.js quantisation {q['dtype']!r}")


def read_graph_model(json_path: str | Path) -> TfjsGraph:
    """Decode ``json_path`` and the weight shards its manifest names (next to it)."""
    json_path = Path(json_path)
    try:
        model = json.loads(json_path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read TF.js model {json_path}: {exc}") from None
    if model.get("format") != "graph-model" or "weightsManifest" not in model:
        raise InputError(f"{json_path} is not a TF.js graph model (format {model.get('format')!r})")
    weights: dict[str, np.ndarray] = {}
    for group in model["weightsManifest"]:
        try:
            data = b"".join((json_path.parent / p).read_bytes() for p in group["paths"])
        except OSError as exc:
            raise InputError(f"cannot read a weight shard of {json_path}: {exc}") from None
        offset = 0
        for spec in group["weights"]:
            stored = (spec.get("quantization") or {}).get("dtype", spec["dtype"])
            n = int(np.prod([int(s) for s in spec.get("shape", [])], dtype=np.int64))
            size = n * _ITEMSIZE[stored]
            if offset + size > len(data):
                raise InputError(f"{json_path}: weight shards end before {spec['name']!r}")
            weights[spec["name"]] = _decode(data[offset:offset + size], spec)
            offset += size
        if offset != len(data):
            raise InputError(f"{json_path}: {len(data) - offset} bytes of weights left over after the manifest")
    meta = {k: model.get(k) for k in ("generatedBy", "convertedBy", "signature", "userDefinedMetadata")}
    return TfjsGraph(nodes=model["modelTopology"]["node"], weights=weights, meta=meta)


# ---------------------------------------------------------------------------------------
# Name mappings: TF.js graph weights -> ferkit torch state dicts
# ---------------------------------------------------------------------------------------
def _need(graph: TfjsGraph, name: str) -> np.ndarray:
    try:
        return graph.weights[name]
    except KeyError:
        raise InputError(f"TF.js graph has no weight {name!r}: not the expected network") from None


def _folded_bn(prefix: str, scale: np.ndarray, shift: np.ndarray, eps: float) -> dict[str, np.ndarray]:
    """A BatchNorm that computes ``x * scale + shift`` exactly in eval mode (running_var 1 - eps).

    The graphs store BN folded into the conv (or as a bare multiply-add): the running statistics
    are gone. ``ferkit.models.pretrained.recalibrate_batchnorm`` re-estimates them on data later
    without changing the function.
    """
    c = shift.shape[0]
    return {f"{prefix}.weight": scale.astype(np.float32), f"{prefix}.bias": shift.astype(np.float32),
            f"{prefix}.running_mean": np.zeros(c, np.float32),
            f"{prefix}.running_var": np.full(c, 1.0 - eps, np.float32),
            f"{prefix}.num_batches_tracked": np.zeros((), np.int64)}


def mobilenet_v1_state_dict(graph: TfjsGraph, bgr_to_rgb: bool = True, eps: float = 1e-3) -> dict[str, np.ndarray]:
    """State dict of :class:`ferkit.models.mobilenet.MobileNetV1` from the Keras MobileNet graph
    (HSE_FaceRec_tf's ``faceres``), keys without the ``backbone.`` prefix.

    Conv kernels HWIO -> OIHW; depthwise HW C 1 -> C 1 H W. The stem's input channels are
    reversed when ``bgr_to_rgb`` (the original takes BGR; ferkit feeds RGB). The age / gender
    heads are not part of the backbone and are left out.
    """
    out: dict[str, np.ndarray] = {}
    stem = _need(graph, "conv1/convolution/merged_input").transpose(3, 2, 0, 1)
    if bgr_to_rgb:
        stem = stem[:, ::-1]
    out["stem.conv.weight"] = np.ascontiguousarray(stem)
    bias = _need(graph, "conv1_bn/batchnorm_1/sub")
    out.update(_folded_bn("stem.bn", np.ones_like(bias), bias, eps))
    for i in range(1, 14):
        dw = _need(graph, f"conv_dw_{i}/depthwise_kernel")  # (3, 3, C, 1)
        out[f"blocks.{i - 1}.dw.conv.weight"] = np.ascontiguousarray(dw.transpose(2, 3, 0, 1))
        out.update(_folded_bn(f"blocks.{i - 1}.dw.bn", _need(graph, f"conv_dw_{i}_bn/batchnorm_1/mul"),
                              _need(graph, f"conv_dw_{i}_bn/batchnorm_1/sub"), eps))
        pw = _need(graph, f"conv_pw_{i}/convolution/merged_input")  # (1, 1, Cin, Cout)
        out[f"blocks.{i - 1}.pw.conv.weight"] = np.ascontiguousarray(pw.transpose(3, 2, 0, 1))
        b = _need(graph, f"conv_pw_{i}_bn/batchnorm_1/sub")
        out.update(_folded_bn(f"blocks.{i - 1}.pw.bn", np.ones_like(b), b, eps))
    return out
