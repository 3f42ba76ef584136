"""Running an exported ferkit ONNX file with onnxruntime (the export itself: inference.onnx_engine).

It lives in the engine layer beside ``model_io`` so that ``load_model("model.onnx")`` needs
nothing from the inference layer above; it reads everything it needs from the file's metadata.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ferkit.errors import InputError
from ferkit.models.predict import check_tta_crop, crop_views

FORMAT = "ferkit-onnx/1"
META_KEY = "ferkit"


class OnnxModel:
    """An exported ferkit model run by onnxruntime, with :class:`LoadedModel`'s inference API."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise InputError(f"model not found: {path}")
        opts = ort.SessionOptions()
        opts.log_severity_level = 3  # errors only: no onnxruntime chatter before ferkit's own line
        if threads:
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for a bad file
            raise InputError(f"cannot load ONNX model {path}: {str(exc).splitlines()[0]}") from None
        raw = self.session.get_modelmeta().custom_metadata_map.get(META_KEY)
        if raw is None:
            raise InputError(f"{path} is not a ferkit ONNX export (no '{META_KEY}' metadata; use `ferkit export`)")
        meta = json.loads(raw)
        self.meta = meta
        self.classes: tuple[str, ...] = tuple(meta["classes"])
        self.preprocess: dict[str, Any] = dict(meta["preprocess"])
        self.metrics: dict[str, Any] = dict(meta.get("metrics", {}))
        self.source = str(path)
        self.device = torch.device("cpu")
        self.outputs: list[str] = list(meta.get("outputs", ["probs"]))
        self.has_uncertainty = "uncertainty" in self.outputs

    def _run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        res = self.session.run(None, {"images": np.ascontiguousarray(x, np.float32)})
        return res[0], (res[1] if self.has_uncertainty else None)

    def classify(self, images: np.ndarray | torch.Tensor, batch_size: int = 512,
                 tta_flip: bool | None = None, tta_crop: float | None = None
                 ) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities (N, K) and the method's own uncertainty (N,) or None, for uint8 crops
        (N, H, W), (N, H, W, 3) or a (N, C, H, W) tensor at the model's input size; the test-time
        views as :meth:`LoadedModel.classify` (the uncertainty is the face's own)."""
        x = self._as_input(images)
        flip = self.preprocess.get("tta_flip", False) if tta_flip is None else tta_flip
        crop = check_tta_crop(self.preprocess.get("tta_crop", 0.0) if tta_crop is None else tta_crop)

        def run_view(xv: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
            p, u = self._run(xv)
            if flip:
                p = 0.5 * (p + self._run(np.ascontiguousarray(xv[..., ::-1]))[0])
            return p, u

        probs, uncs = [], []
        for i in range(0, len(x), batch_size):
            views = [v.numpy() for v in crop_views(torch.from_numpy(x[i:i + batch_size]), crop)]
            p, u = run_view(views[0])  # the uncertainty is the face's own
            for xv in views[1:]:
                p = p + run_view(xv)[0]
            probs.append(p / len(views))
            if u is not None:
                uncs.append(u)
        k = len(self.classes)
        probs_out = np.concatenate(probs) if probs else np.zeros((0, k), np.float32)
        return probs_out, (np.concatenate(uncs) if uncs else None) if self.has_uncertainty else None

    def predict_probs(self, images: np.ndarray | torch.Tensor, batch_size: int = 512,
                      tta_flip: bool | None = None, tta_crop: float | None = None) -> np.ndarray:
        """Probabilities (N, K) for uint8 images, as :meth:`LoadedModel.predict_probs`."""
        return self.classify(images, batch_size, tta_flip, tta_crop)[0]

    def _as_input(self, images: np.ndarray | torch.Tensor) -> np.ndarray:
        from ferkit.engine.batches import images_to_tensor

        size, channels = int(self.preprocess["image_size"]), int(self.preprocess["channels"])
        if not isinstance(images, torch.Tensor):
            images = images_to_tensor(images, channels)
        if images.shape[-2:] != (size, size):
            from ferkit.augment import build_augment

            images = build_augment("eval", size, channels)(images.float() / 255.0) * 255.0
        return images.float().numpy()


def is_onnx_file(model: Any) -> bool:
    return isinstance(model, (str, os.PathLike)) and str(model).lower().endswith(".onnx")
