"""Pretrained starts: the face-recognition backbones shipped with ferkit, or a user's state dict.

Shipped (``model.pretrained: <name>``, see :data:`PRETRAINED`): converted once from their
TF.js originals by ``scripts/convert_tfjs.py``, stored in ``ferkit/weights/backbone_<name>.pt``
with a model card beside them. Each names the backbone it fits, its native input size and its
own normalisation, which ``data.mean`` / ``data.std: auto`` pick up.

A user-provided torchvision-format state dict (e.g. the MS-Celeb ResNet-18 of SCN/EAC):

Such files come in many wrappings: a bare state dict, or one under ``state_dict`` / ``model``,
with keys prefixed by ``module.`` (DataParallel), ``backbone.``, ``encoder.`` or ``model.``.
Keys are mapped by stripping those prefixes onto the torchvision names our ResNets use (a
ferkit checkpoint's own ``backbone.``/``fc.`` keys map the same way). Mismatches are adapted
where that is meaningful and otherwise skipped and reported, never silently:

- ``fc.*`` with another class count: skipped (the head is trained anew);
- a 3-channel ``conv1`` into a 1-channel model: summed over the input channels (a grayscale
  image fed to the RGB filters gives exactly that response); 1 -> 3 channels: repeated / 3;
- a 7x7 ``conv1`` into the 3x3 small stem: skipped (no faithful mapping); the rest still loads.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ferkit.errors import ConfigError, InputError
from ferkit.torch_files import safe_torch_load

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"

_RGB_MEAN_255 = (123.68, 116.779, 103.939)  # Keras "caffe" preprocessing, in RGB order


def _hse_mobilenet(file: str) -> dict[str, Any]:
    """Spec of an HSE_FaceRec_tf MobileNet copy: 224 px native, Keras "caffe" means, folded BatchNorm."""
    return {"model": "mobilenet_v1", "image_size": 224, "file": file,
            "mean": [round(m / 255, 6) for m in _RGB_MEAN_255], "std": [round(1 / 255, 8)] * 3, "folded_bn": True}


#: shipped pretrained backbones: name -> backbone, native input size, normalisation (0-1 scale)
PRETRAINED: dict[str, dict[str, Any]] = {
    "vggface2_mobilenet_v1": _hse_mobilenet("backbone_vggface2_mobilenet_v1.pt"),
    "vggface2_mobilenet_v1_faceres": _hse_mobilenet("backbone_vggface2_mobilenet_v1_faceres.pt"),
}


def pretrained_spec(name: str) -> dict[str, Any] | None:
    """The spec of a shipped pretrained backbone, or None when ``name`` is not one (a path)."""
    return PRETRAINED.get(str(name))


def pretrained_normalisation(name: str | None, channels: int) -> tuple[Any, Any]:
    """(mean, std) for ``data.mean/std: auto``: the shipped backbone's own, else 0.5 / 0.5.

    A 1-channel run on RGB weights gets the channel average (its stem is summed over RGB).
    """
    spec = pretrained_spec(name) if name else None
    if spec is None:
        return 0.5, 0.5
    if int(channels) == 1:
        return round(sum(spec["mean"]) / 3, 6), spec["std"][0]
    return list(spec["mean"]), list(spec["std"])


def check_pretrained(name: str | None, model_name: str) -> None:
    """ConfigError when a shipped pretrained backbone is asked for with another architecture."""
    spec = pretrained_spec(name) if name else None
    if spec is not None and spec["model"] != model_name:
        raise ConfigError(f"model.pretrained {name!r} holds {spec['model']!r} weights: set model.name: "
                          f"{spec['model']} (not {model_name!r})")

#: wrapper keys tried, in order, to find the state dict inside a checkpoint
WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "net", "network", "params")
#: prefixes stripped (repeatedly) from every key
PREFIXES = ("module.", "backbone.", "encoder.", "model.", "base_model.")


def _unwrap(obj: Any) -> Mapping[str, Tensor]:
    for _ in range(4):
        if not isinstance(obj, Mapping):
            break
        if obj and all(isinstance(v, Tensor) for v in obj.values()):
            return obj
        inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    raise InputError("pretrained file holds no state dict (expected tensors, or a 'state_dict'/'model' entry)")


def _strip(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for p in PREFIXES:
            if key.startswith(p):
                key, changed = key[len(p):], True
    return key


def _target_key(src: str, own: Mapping[str, Tensor]) -> str | None:
    """Where a stripped source key goes in our model (FERModel: fc.* or backbone.*)."""
    for cand in ((src,) if src.startswith("fc.") else ("backbone." + src, src)):
        if cand in own:
            return cand
    return None


def load_pretrained(model: nn.Module, path: str | Path, strict: bool = False) -> dict[str, Any]:
    """Load matching tensors from ``path`` (a file, or a shipped name) into ``model``; return what happened.

    Report: ``loaded`` (model keys filled), ``adapted`` ({key: how}), ``skipped`` ({source key:
    why}), ``missing`` (model keys left at their initial values). ``strict=True`` raises
    InputError if anything was skipped or is missing. Raises InputError for a missing or
    unreadable file and when no tensor matches.
    """
    spec = pretrained_spec(str(path))
    if spec is not None:
        check_pretrained(str(path), getattr(model, "name", ""))
        path = WEIGHTS_DIR / spec["file"]
        if not path.is_file():
            raise InputError(f"shipped pretrained weights missing from the installation: {path}")
    path = Path(path)
    if not path.is_file():
        known = ", ".join(sorted(PRETRAINED))
        raise InputError(f"pretrained weights not found: {path} (shipped names: {known})")
    obj = safe_torch_load(path, "pretrained weights")
    src = _unwrap(obj)

    own = model.state_dict()
    new: dict[str, Tensor] = {}
    adapted: dict[str, str] = {}
    skipped: dict[str, str] = {}
    for raw_key, tensor in src.items():
        key = _strip(raw_key)
        tgt = _target_key(key, own)
        if tgt is None:
            skipped[raw_key] = "no such parameter in the model"
            continue
        dst = own[tgt]
        if tensor.shape != dst.shape:
            tensor, why = _adapt(key, tensor, dst)
            if tensor is None:
                skipped[raw_key] = why
                continue
            adapted[tgt] = why
        new[tgt] = tensor.to(dtype=dst.dtype)

    if not new:
        raise InputError(f"no tensor in {path} matches model {getattr(model, 'name', type(model).__name__)!r}")
    missing = [k for k in own if k not in new]
    if strict and (missing or skipped):
        raise InputError(
            f"pretrained weights {path} do not fit exactly: {len(missing)} missing, {len(skipped)} skipped "
            f"(first: {(missing or list(skipped))[0]})"
        )
    with torch.no_grad():
        model.load_state_dict(new, strict=False)
    return {"loaded": sorted(new), "adapted": adapted, "skipped": skipped, "missing": missing}


def _adapt(key: str, t: Tensor, dst: Tensor) -> tuple[Tensor | None, str]:
    if key.startswith("fc."):
        return None, f"classifier shape {tuple(t.shape)} != {tuple(dst.shape)} (other class count)"
    if t.ndim == 4 and dst.ndim == 4 and t.shape[0] == dst.shape[0]:
        if t.shape[2:] != dst.shape[2:]:
            return None, f"kernel {t.shape[2]}x{t.shape[3]} does not fit {dst.shape[2]}x{dst.shape[3]} (other stem)"
        if t.shape[1] == 3 and dst.shape[1] == 1:
            return t.sum(dim=1, keepdim=True), "summed 3 input channels into 1"
        if t.shape[1] == 1 and dst.shape[1] == 3:
            return t.repeat(1, 3, 1, 1) / 3.0, "repeated 1 input channel to 3 (divided by 3)"
    return None, f"shape {tuple(t.shape)} != {tuple(dst.shape)}"


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: Iterable[Tensor]) -> int:
    """Give every BatchNorm2d statistics measured on ``batches`` without changing what the model
    computes in eval mode. Returns the number of BatchNorms recalibrated.

    Why: the TF.js graphs store BN folded into the convs, so a converted BN's running statistics
    are placeholders (mean 0, variance 1 - eps). Trained in train mode, such a BN would normalise
    each channel by its batch statistics and wreck the pretrained function. Here each BN's input
    is measured in eval mode (i.e. through the original function) and the layer re-expressed with
    the measured mean ``m`` and variance ``v``: with ``s = weight / sqrt(running_var + eps)``,
    ``weight' = s * sqrt(v + eps)`` and ``bias' = bias + s * (m - running_mean)``. Identical in
    eval mode; in train mode, where batch statistics are near ``m`` / ``v``, close to it.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d) and m.running_var is not None]
    sums: dict[nn.Module, list] = {}

    def record(mod: nn.Module, inputs: tuple[Tensor, ...], _out: Tensor) -> None:
        y = inputs[0].detach().double()
        acc = sums.setdefault(mod, [0.0, 0.0, 0])
        acc[0] = acc[0] + y.sum(dim=(0, 2, 3))
        acc[1] = acc[1] + (y * y).sum(dim=(0, 2, 3))
        acc[2] += y.numel() // y.shape[1]

    handles = [m.register_forward_hook(record) for m in bns]
    was_training = model.training
    model.eval()
    try:
        for x in batches:
            model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    for m in bns:
        if m not in sums:
            continue
        s1, s2, n = sums[m]
        mean = s1 / n
        var = (s2 / n - mean * mean).clamp_min(1e-6)
        scale = m.weight.double() / torch.sqrt(m.running_var.double() + m.eps)
        m.bias.copy_((m.bias.double() + scale * (mean - m.running_mean.double())).to(m.bias.dtype))
        m.weight.copy_((scale * torch.sqrt(var + m.eps)).to(m.weight.dtype))
        m.running_mean.copy_(mean.to(m.running_mean.dtype))
        m.running_var.copy_(var.to(m.running_var.dtype))
    return len(sums)
