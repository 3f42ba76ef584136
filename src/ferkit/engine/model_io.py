"""Loading a trained model for inference and evaluation, whatever form it was saved in.

A model is a run directory (its ``model.pt``), a ``model.pt`` inference file, or a trainer
checkpoint (``checkpoints/best.pt``); all load with ``weights_only=True``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ferkit.augment import build_augment
from ferkit.engine.batches import images_to_tensor, make_view
from ferkit.engine.checkpoint import load_checkpoint
from ferkit.engine.device import resolve_device
from ferkit.errors import InputError
from ferkit.methods import Method, get_method
from ferkit.models import build_model


@dataclass
class LoadedModel:
    """A method (model + heads) in eval mode with the preprocessing it was trained with."""

    net: Method
    classes: tuple[str, ...]
    preprocess: dict[str, Any]
    device: torch.device
    source: str
    metrics: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        p = self.preprocess
        self.view = make_view(build_augment("eval", int(p["image_size"]), int(p["channels"])), p["mean"], p["std"])

    def predict_probs(self, images: np.ndarray | torch.Tensor, batch_size: int = 512,
                      tta_flip: bool | None = None) -> np.ndarray:
        """Probabilities (N, K) for uint8 images (N,H,W), (N,H,W,3) or a (N,C,H,W) tensor."""
        from ferkit.engine.trainer import predict_probs

        if not isinstance(images, torch.Tensor):
            images = images_to_tensor(images, int(self.preprocess["channels"]))
        flip = self.preprocess.get("tta_flip", False) if tta_flip is None else tta_flip
        return predict_probs(self.net, images, self.view, self.device, batch_size, flip)

    @property
    def has_uncertainty(self) -> bool:
        """Whether the method gives its own per-sample uncertainty (``Method.uncertainty``)."""
        return type(self.net).uncertainty is not Method.uncertainty

    def classify(self, images: np.ndarray | torch.Tensor, batch_size: int = 512,
                 tta_flip: bool | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities (N, K) and the method's own uncertainty (N,), or None when it has none.

        The interface every inference engine offers (see ``inference.onnx_engine.OnnxModel``).
        """
        if not isinstance(images, torch.Tensor):
            images = images_to_tensor(images, int(self.preprocess["channels"]))
        with torch.inference_mode():
            probs = self.predict_probs(images, batch_size=batch_size, tta_flip=tta_flip)
            if not self.has_uncertainty:
                return probs, None
            parts = []
            for i in range(0, len(images), batch_size):
                u = self.net.uncertainty(self.view(images[i:i + batch_size].to(self.device)))
                if u is None:
                    return probs, None
                parts.append(u.float().cpu().numpy().reshape(-1))
        return probs, np.concatenate(parts) if parts else np.zeros(0, np.float32)


def resolve_model_path(model: str | Path) -> Path:
    """A bundled model's name (``default``), a run directory, a model.pt or a checkpoint -> its file."""
    from ferkit.inference.zoo import ALIASES, MODELS, resolve_model

    if str(model) in MODELS or str(model) in ALIASES:
        return resolve_model(model)
    path = Path(model)
    if path.is_dir():
        for cand in (path / "model.pt", path / "checkpoints" / "best.pt", path / "checkpoints" / "last.pt"):
            if cand.is_file():
                return cand
        raise InputError(f"no model.pt or checkpoint in run directory {path}")
    if not path.exists():
        raise InputError(f"model not found: {model} (give a run directory, a model.pt or a checkpoint)")
    return path


def load_model(model: str | Path, device: str | torch.device = "auto") -> LoadedModel:
    """Rebuild a trained method from a run directory, model.pt or checkpoint.

    A ``.onnx`` file (from ``ferkit export``) gives an :class:`~ferkit.inference.onnx_engine.OnnxModel`
    instead, which offers the same ``predict_probs`` / ``classify`` / ``classes`` / ``preprocess``.
    """
    from ferkit.inference.onnx_engine import OnnxModel, is_onnx_file

    if is_onnx_file(model):
        return OnnxModel(model)  # type: ignore[return-value]
    path = resolve_model_path(model)
    ck = load_checkpoint(path)
    dev = resolve_device(device)
    if ck.get("format", "").startswith("ferkit-model"):
        method_cfg, model_cfg, state = ck["method"], ck["model"], ck["state_dict"]
        preprocess, metrics = ck["preprocess"], ck.get("metrics", {})
    elif ck.get("format", "").startswith("ferkit-checkpoint"):
        cfg = ck["config"]
        method_cfg = cfg["method"]
        d = cfg["data"]
        model_cfg = dict(name=cfg["model"]["name"], num_classes=len(ck["classes"]), in_channels=d["channels"],
                         image_size=d["image_size"], **cfg["model"].get("options", {}))
        ema = ck.get("hooks", {}).get("EMAHook")
        state = ema["shadow"] if ema else ck["method"]
        preprocess = {"image_size": d["image_size"], "channels": d["channels"], "mean": d["mean"],
                      "std": d["std"], "tta_flip": cfg["train"].get("tta_flip", False)}
        metrics = {}
    else:
        raise InputError(f"{path} is not a ferkit model or checkpoint")
    model_cfg = dict(model_cfg)
    net_model = build_model(model_cfg.pop("name"), **model_cfg)
    classes = tuple(ck["classes"])
    net = get_method(method_cfg["name"])(net_model, method_cfg, len(classes), {})
    net.load_state_dict(state)
    net.to(dev).eval()
    return LoadedModel(net, classes, dict(preprocess), dev, str(path), dict(metrics))
