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
from torch import nn

from ferkit.augment import build_augment
from ferkit.engine.batches import images_to_tensor, make_view
from ferkit.engine.checkpoint import load_checkpoint
from ferkit.engine.device import resolve_device
from ferkit.engine.onnx_runtime import OnnxModel, is_onnx_file
from ferkit.errors import InputError
from ferkit.methods import Method, get_method
from ferkit.models import build_model
from ferkit.models.predict import predict_probs
from ferkit.zoo import ALIASES, MODELS, resolve_model


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
                      tta_flip: bool | None = None, amp_dtype: torch.dtype | None = None,
                      tta_crop: float | None = None) -> np.ndarray:
        """Probabilities (N, K) for uint8 images (N,H,W), (N,H,W,3) or a (N,C,H,W) tensor
        (``amp_dtype``: autocast, e.g. bf16 on a CPU with AMX, for bulk scoring). ``tta_flip`` and
        ``tta_crop`` (multi-crop averaging, ``models.predict.crop_views``): None = as the model's
        preprocessing says."""
        if not isinstance(images, torch.Tensor):
            images = images_to_tensor(images, int(self.preprocess["channels"]))
        flip = self.preprocess.get("tta_flip", False) if tta_flip is None else tta_flip
        crop = self.preprocess.get("tta_crop", 0.0) if tta_crop is None else tta_crop
        return predict_probs(self.net, images, self.view, self.device, batch_size, flip, amp_dtype, crop)

    @property
    def has_uncertainty(self) -> bool:
        """Whether the method gives its own per-sample uncertainty (``Method.uncertainty``)."""
        return has_own_uncertainty(self.net)

    def classify(self, images: np.ndarray | torch.Tensor, batch_size: int = 512,
                 tta_flip: bool | None = None, tta_crop: float | None = None
                 ) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities (N, K) and the method's own uncertainty (N,), or None when it has none
        (the uncertainty is the method's, on the face itself, whatever the test-time views).

        The interface every inference engine offers (see ``inference.onnx_engine.OnnxModel``).
        """
        if not isinstance(images, torch.Tensor):
            images = images_to_tensor(images, int(self.preprocess["channels"]))
        with torch.inference_mode():
            probs = self.predict_probs(images, batch_size=batch_size, tta_flip=tta_flip, tta_crop=tta_crop)
            if not self.has_uncertainty:
                return probs, None
            parts = []
            for i in range(0, len(images), batch_size):
                u = self.net.uncertainty(self.view(images[i:i + batch_size].to(self.device)))
                if u is None:
                    return probs, None
                parts.append(u.float().cpu().numpy().reshape(-1))
        return probs, np.concatenate(parts) if parts else np.zeros(0, np.float32)


def has_own_uncertainty(net: nn.Module) -> bool:
    """Whether ``net`` overrides ``Method.uncertainty`` (APSM does; CE and ensembles do not)."""
    return getattr(type(net), "uncertainty", Method.uncertainty) is not Method.uncertainty


def resolve_model_path(model: str | Path) -> Path:
    """A bundled model's name (``default``), a run directory, a model.pt or a checkpoint -> its file."""
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
    instead, and a ``.npz`` (``ferkit train-classic``) a :class:`~ferkit.classic.ClassicModel`; both
    offer the same ``predict_probs`` / ``classify`` / ``classes`` / ``preprocess``.
    """
    if is_onnx_file(model):
        return OnnxModel(model)  # type: ignore[return-value]
    path = resolve_model_path(model)
    if is_onnx_file(path):  # a bundled name of an ONNX file ('default', 'fast')
        return OnnxModel(path)  # type: ignore[return-value]
    if path.suffix.lower() == ".npz":  # the classic route (HOG/LBP + SVM), numpy only: ferkit.classic
        from ferkit.classic import load_classic

        return load_classic(path)  # type: ignore[return-value]
    ck = load_checkpoint(path)
    dev = resolve_device(device)
    fmt = ck.get("format", "")
    if fmt.startswith("ferkit-ensemble"):
        members = [_build_method(m, dev) for m in ck["members"]]
        net: nn.Module = Ensemble(members).to(dev).eval()
        return LoadedModel(net, tuple(ck["classes"]), dict(ck["preprocess"]), dev, str(path),
                           dict(ck.get("metrics", {})))
    if not (fmt.startswith("ferkit-model") or fmt.startswith("ferkit-checkpoint")):
        raise InputError(f"{path} is not a ferkit model or checkpoint")
    net = _build_method(ck, dev)
    return LoadedModel(net, tuple(ck["classes"]), _preprocess(ck), dev, str(path), dict(ck.get("metrics", {})))


def _preprocess(ck: dict[str, Any]) -> dict[str, Any]:
    if ck.get("format", "").startswith("ferkit-model"):
        return dict(ck["preprocess"])
    cfg = ck["config"]
    d = cfg["data"]
    return {"image_size": d["image_size"], "channels": d["channels"], "mean": d["mean"], "std": d["std"],
            "tta_flip": cfg["train"].get("tta_flip", False)}


def _build_method(ck: dict[str, Any], dev: torch.device) -> Method:
    """The method (model + heads) of a model.pt dict or a trainer checkpoint dict, in eval mode."""
    if ck.get("format", "").startswith("ferkit-model"):
        method_cfg, model_cfg, state = ck["method"], dict(ck["model"]), ck["state_dict"]
    else:
        cfg = ck["config"]
        method_cfg = cfg["method"]
        d = cfg["data"]
        model_cfg = dict(name=cfg["model"]["name"], num_classes=len(ck["classes"]), in_channels=d["channels"],
                         image_size=d["image_size"], **cfg["model"].get("options", {}))
        ema = ck.get("hooks", {}).get("EMAHook")
        state = ema["shadow"] if ema else ck["method"]
    net_model = build_model(model_cfg.pop("name"), **model_cfg)
    net = get_method(method_cfg["name"])(net_model, method_cfg, len(ck["classes"]), {"classes": list(ck["classes"])})
    net.load_state_dict(state)
    if not str(getattr(net_model, "name", "")).startswith("vit"):
        # NHWC: oneDNN's fast layout for convolutions (the same numbers; measured 1.6x on the default
        # MobileNet's depthwise convolutions on this CPU); ViTs keep the default layout
        net.to(memory_format=torch.channels_last)
    return net.to(dev).eval()


class Ensemble(nn.Module):
    """Several trained models of the same labels and input, averaged in probability.

    ``predict_logits`` returns ``log(mean_i softmax(logits_i))``, so a softmax of it is the
    members' mean probability and everything built on ``predict_logits`` (evaluation, the
    Recognizer, ONNX export) works unchanged. Made with ``benchmarks/bundle_model.py --ensemble``.
    """

    def __init__(self, members: list[Method]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def predict_logits(self, x: torch.Tensor) -> torch.Tensor:
        probs = torch.stack([m.predict_logits(x).float().softmax(1) for m in self.members]).mean(0)
        return probs.clamp_min(1e-12).log()


def make_ensemble(models: list[str | Path], metrics: dict[str, Any] | None = None) -> dict[str, Any]:
    """An ensemble model dict (save it with ``save_checkpoint``) from ``model.pt`` files that share
    labels and preprocessing (flip averaging: on if any member had it)."""
    cks = [load_checkpoint(resolve_model_path(m)) for m in models]
    if not cks or any(not c.get("format", "").startswith("ferkit-model") for c in cks):
        raise InputError("an ensemble is made of model.pt files (ferkit-model format)")
    first = cks[0]
    keys = ("image_size", "channels", "mean", "std")
    for m, c in zip(models, cks):
        if tuple(c["classes"]) != tuple(first["classes"]) or any(c["preprocess"][k] != first["preprocess"][k]
                                                                  for k in keys):
            raise InputError(f"{m}: labels or input differ from the first member's; cannot ensemble")
    pre = dict(first["preprocess"])
    pre["tta_flip"] = any(c["preprocess"].get("tta_flip") for c in cks)
    pre["tta_crop"] = max(float(c["preprocess"].get("tta_crop", 0.0)) for c in cks)
    return {"format": "ferkit-ensemble/1", "classes": list(first["classes"]), "preprocess": pre,
            "metrics": dict(metrics or {}), "members": cks}
