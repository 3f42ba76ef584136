"""Start from a user-provided torchvision-format state dict (e.g. the MS-Celeb ResNet-18 of SCN/EAC).

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

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ferkit.errors import InputError

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
    """Load matching tensors from ``path`` into ``model``; return what happened.

    Report: ``loaded`` (model keys filled), ``adapted`` ({key: how}), ``skipped`` ({source key:
    why}), ``missing`` (model keys left at their initial values). ``strict=True`` raises
    InputError if anything was skipped or is missing. Raises InputError for a missing or
    unreadable file and when no tensor matches.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"pretrained weights not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle / zip / weights_only refusals: all "not usable"
        raise InputError(f"cannot read pretrained weights {path}: {str(exc).splitlines()[0]}") from None
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
