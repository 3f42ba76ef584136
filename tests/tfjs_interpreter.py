"""An op-by-op numpy interpreter of TF.js graph models: the independent reference for parity.

It shares nothing with ferkit's converter or its torch definitions: it decodes the weight
shards itself and executes the graph's nodes in float64 by TensorFlow's own semantics (NHWC,
SAME padding split as TF splits it, the fused ops TF.js emits). Only the ops the vendored
face-recognition graphs use are implemented; any other op raises.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np


def _weights(path: Path, model: dict) -> dict[str, np.ndarray]:
    out = {}
    for group in model["weightsManifest"]:
        buf = b"".join((path.parent / p).read_bytes() for p in group["paths"])
        pos = 0
        for w in group["weights"]:
            shape = [int(s) for s in w["shape"]]
            n = int(np.prod(shape)) if shape else 1
            q = (w.get("quantization") or {}).get("dtype")
            kind = {"float16": "<f2", None: {"float32": "<f4", "int32": "<i4"}[w["dtype"]]}[q]
            size = n * np.dtype(kind).itemsize
            out[w["name"]] = np.frombuffer(buf[pos:pos + size], kind).astype(
                np.int64 if w["dtype"] == "int32" else np.float64).reshape(shape)
            pos += size
    return out


def _attr(node: dict, key: str, default=None):
    a = node.get("attr", {}).get(key)
    if a is None:
        return default
    if "s" in a:
        return base64.b64decode(a["s"]).decode()
    if "list" in a:
        lst = a["list"]
        if "i" in lst:
            return [int(v) for v in lst["i"]]
        if "s" in lst:
            return [base64.b64decode(v).decode() for v in lst["s"]]
        return []
    if "b" in a:
        return bool(a["b"])
    if "i" in a:
        return int(a["i"])
    if "f" in a:
        return float(a["f"])
    return default


def _pad_same(x: np.ndarray, k: tuple[int, int], s: int, padding: str) -> tuple[np.ndarray, int, int]:
    n, h, w, c = x.shape
    if padding == "VALID":
        return x, (h - k[0]) // s + 1, (w - k[1]) // s + 1
    oh, ow = -(-h // s), -(-w // s)
    ph = max((oh - 1) * s + k[0] - h, 0)
    pw = max((ow - 1) * s + k[1] - w, 0)
    x = np.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
    return x, oh, ow


def _conv(x: np.ndarray, w: np.ndarray, node: dict, depthwise: bool) -> np.ndarray:
    s = _attr(node, "strides")[1]
    kh, kw = w.shape[:2]
    x, oh, ow = _pad_same(x, (kh, kw), s, _attr(node, "padding"))
    out = None
    for i in range(kh):
        for j in range(kw):
            patch = x[:, i:i + s * (oh - 1) + 1:s, j:j + s * (ow - 1) + 1:s, :]
            term = patch * w[i, j, :, 0] if depthwise else patch @ w[i, j]
            out = term if out is None else out + term
    return out


def _fused(y: np.ndarray, node: dict, extra: list[np.ndarray]) -> np.ndarray:
    for op in _attr(node, "fused_ops", []):
        if op == "BiasAdd":
            y = y + extra[0]
        elif op == "Relu":
            y = np.maximum(y, 0)
        elif op == "Relu6":
            y = np.clip(y, 0, 6)
        elif op == "Prelu":
            y = np.where(y > 0, y, y * extra[1])
        else:
            raise NotImplementedError(f"fused op {op}")
    return y


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def run_graph(json_path: str | Path, x: np.ndarray, outputs: list[str]) -> dict[str, np.ndarray]:
    """Run the graph on ``x`` (NHWC, already preprocessed) and return the named node outputs."""
    json_path = Path(json_path)
    model = json.loads(json_path.read_text())
    weights = _weights(json_path, model)
    vals: dict[str, np.ndarray] = {}
    for node in model["modelTopology"]["node"]:
        op, name = node["op"], node["name"]
        ins = [vals[i.split(":")[0]] for i in node.get("input", []) if not i.startswith("^")]
        if op == "Const":
            vals[name] = weights[name]
        elif op == "Placeholder":
            vals[name] = np.asarray(x, np.float64)
        elif op in ("Conv2D", "DepthwiseConv2dNative"):
            vals[name] = _conv(ins[0], ins[1], node, op.startswith("Depthwise"))
        elif op in ("_FusedConv2D", "FusedDepthwiseConv2dNative"):
            y = _conv(ins[0], ins[1], node, op.startswith("Fused"))
            vals[name] = _fused(y, node, ins[2:])
        elif op == "_FusedMatMul":
            a, b = ins[0], ins[1]
            a = a.T if _attr(node, "transpose_a", False) else a
            b = b.T if _attr(node, "transpose_b", False) else b
            vals[name] = _fused(a @ b, node, ins[2:])
        elif op in ("Add", "AddV2", "BiasAdd"):
            vals[name] = ins[0] + ins[1]
        elif op == "Sub":
            vals[name] = ins[0] - ins[1]
        elif op == "Mul":
            vals[name] = ins[0] * ins[1]
        elif op == "Minimum":
            vals[name] = np.minimum(ins[0], ins[1])
        elif op == "Maximum":
            vals[name] = np.maximum(ins[0], ins[1])
        elif op == "Abs":
            vals[name] = np.abs(ins[0])
        elif op == "Relu":
            vals[name] = np.maximum(ins[0], 0)
        elif op == "Relu6":
            vals[name] = np.clip(ins[0], 0, 6)
        elif op == "Square":
            vals[name] = ins[0] ** 2
        elif op == "Rsqrt":
            vals[name] = 1.0 / np.sqrt(ins[0])
        elif op == "Sigmoid":
            vals[name] = 1.0 / (1.0 + np.exp(-ins[0]))
        elif op == "Softmax":
            vals[name] = _softmax(ins[0])
        elif op in ("Mean", "Sum"):
            axes = tuple(int(a) for a in np.atleast_1d(ins[1]))
            fn = np.mean if op == "Mean" else np.sum
            vals[name] = fn(ins[0], axis=axes, keepdims=bool(_attr(node, "keep_dims", False)))
        elif op == "Squeeze":
            dims = _attr(node, "squeeze_dims", []) or None
            vals[name] = np.squeeze(ins[0], axis=tuple(dims) if dims else None)
        elif op == "Identity":
            vals[name] = ins[0]
        else:
            raise NotImplementedError(f"op {op} ({name})")
    return {o: vals[o] for o in outputs}
