"""Named models: a small registry mapping names to weight files in ``ferkit/weights/``.

It sits at the bottom of the package (it needs only the errors), so that loading a model by
name (``engine.model_io``) never imports the inference layer above it.

Each entry has a model card (a dict: what the model is, its input, labels, training data,
licence, metrics). A ``<file stem>.json`` next to the weights file, when present, is merged into
the card, so shipping a model is: copy ``model.pt`` into ``ferkit/weights/`` and write its card.
Names are resolved by :func:`resolve_model`; anything that is not a registered name is taken as
a path (a run directory, a ``model.pt`` or a trainer checkpoint).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ferkit.errors import ConfigError, InputError
from ferkit.registry import add_unique

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

#: name -> {"file": path relative to WEIGHTS_DIR (or absolute), "card": {...}}
MODELS: dict[str, dict[str, Any]] = {}
#: alternative names -> registered name
ALIASES: dict[str, str] = {}


def register_model(name: str, file: str | Path, card: dict[str, Any] | None = None,
                   aliases: tuple[str, ...] = ()) -> None:
    """Register ``name`` for the weights ``file`` (relative to ``ferkit/weights/`` or absolute)."""
    for taken in (name, *aliases):  # one namespace for names and aliases; check all before adding any
        if taken in ALIASES and (taken != name or ALIASES[taken] != name):
            raise ConfigError(f"model {taken!r} is already registered (as an alias of {ALIASES[taken]!r})")
        if taken in MODELS and taken != name:
            raise ConfigError(f"model {taken!r} is already registered")
    add_unique(MODELS, name, {"file": str(file), "card": dict(card or {})}, "model")
    for a in aliases:
        add_unique(ALIASES, a, name, "model alias")


def _path(entry: dict[str, Any]) -> Path:
    p = Path(entry["file"])
    return p if p.is_absolute() else WEIGHTS_DIR / p


def model_card(name: str) -> dict[str, Any]:
    """The card of a registered model: its registry card, the sidecar JSON, file and availability."""
    key = ALIASES.get(name, name)
    entry = MODELS[key]
    path = _path(entry)
    card = {"name": key, "aliases": sorted(a for a, n in ALIASES.items() if n == key), **entry["card"]}
    side = path.with_suffix(".json")
    if side.is_file():
        try:
            card.update(json.loads(side.read_text()))
        except (OSError, ValueError):
            card["card_error"] = f"unreadable model card {side.name}"
    card.update(file=str(path), available=path.is_file())
    return card


def list_models() -> list[dict[str, Any]]:
    """Every registered model with its card (``available`` says whether its weights are installed)."""
    return [model_card(name) for name in MODELS]


def resolve_model(model: str | Path) -> Path:
    """The weights file of a registered name, or ``model`` itself as a path; InputError if neither."""
    name = str(model)
    key = ALIASES.get(name, name)
    if key in MODELS:
        path = _path(MODELS[key])
        if not path.is_file():
            raise InputError(f"model '{name}' is registered but its weights are not installed ({path}); "
                             "give a run directory, model.pt or checkpoint instead")
        return path
    path = Path(model)
    if path.exists():
        return path
    known = ", ".join(sorted(set(MODELS) | set(ALIASES)))
    raise InputError(f"unknown model '{name}': not a registered name ({known}) nor an existing path")


FER2013_7 = ["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear"]


def _mobilenet_face_card(description: str, holdout_percent: int, int8: bool = False) -> dict[str, Any]:
    """The registry card of a bundled VGGFace2 MobileNet v1 fine-tuned on FER2013 (they differ only in
    these three things; the sidecar JSON adds the measured rest)."""
    return {
        "description": description,
        "architecture": "mobilenet_v1 (3.2 M parameters), 112 px RGB input"
                        + ("; int8 weights, uint8 activations (QDQ)" if int8 else ""),
        "input": "a face cropped at 48 px (FER2013 framing, alignment template 'fer2013'), upsampled to 112 px RGB",
        "labels": FER2013_7,
        "training_data": f"FER2013 Training less a {holdout_percent} % holdout (selection and calibration); "
                         "research use, see the dataset's terms",
    }


register_model(
    "fer2013-mobilenetv1face-112c-7-v2",
    "fer2013_mobilenetv1face_112c_7_v2.pt",
    _mobilenet_face_card(
        "the most accurate single network: a MobileNet v1 pre-trained for face identification on VGGFace2, "
        "fine-tuned with cross-entropy on 97 % of FER2013 Training, temperature-calibrated on the other 3 %, "
        "flip-averaged (configs/ce_fer2013_default_h3_0.yaml)", 3),
    aliases=("accurate",),
)
register_model(
    "fer2013-mobilenetv1face-112c-7-v2-int8",
    "fer2013_mobilenetv1face_112c_7_v2_int8.onnx",
    _mobilenet_face_card(
        "the default: the accurate model shipped as a static int8 ONNX file (several times the faces/s on "
        "CPU); class activation maps need the torch model (accurate)", 3, int8=True),
    aliases=("default",),
)
register_model(
    "fer2013-mobilenetv1face-112c-7",
    "fer2013_mobilenetv1face_112c_7.pt",
    _mobilenet_face_card(
        "the previous accurate model (until issue 15's 3 %-holdout retrain): a MobileNet v1 pre-trained for "
        "face identification on VGGFace2, fine-tuned with cross-entropy on FER2013 less a 10 % holdout, "
        "temperature-calibrated, flip-averaged; the teacher that configs name", 10),
)
register_model(
    "fer2013-mobilenetv1face-112c-7-s1",
    "fer2013_mobilenetv1face_112c_7_s1.pt",
    _mobilenet_face_card(
        "a second, independent seed of fer2013-mobilenetv1face-112c-7 (the same recipe, seed 1), "
        "temperature-calibrated; shipped as the second teacher that ensemble-distillation configs name "
        "(configs/ce_fer2013_default_ens_2.yaml, configs/ce_fer2013_fast_ens_1.yaml, "
        "configs/ce_fer2013_fast_v2_0.yaml)", 10),
)
register_model(
    "fer2013-mobilenetv1face-112c-7-int8",
    "fer2013_mobilenetv1face_112c_7_int8.onnx",
    _mobilenet_face_card("the previous default: fer2013-mobilenetv1face-112c-7 shipped as a static int8 ONNX file",
                         10, int8=True),
)

register_model(
    "fer2013-compactdeep-kd-48g-7-v2-int8",
    "fer2013_compactdeep_kd_48g_7_v2_int8.onnx",
    {
        "description": "fast CPU model: a 48 px student (compact_wide, two residual units per stage) distilled "
                       "from the mean of fer2013-mobilenetv1face-112c-7-v2 and fer2013-mobilenetv1face-112c-7-s1 "
                       "for 60 epochs (configs/ce_fer2013_fast_v2_0.yaml), temperature-calibrated, static int8 ONNX",
        "architecture": "compact_wide, stages (64,2) (128,2) (256,2); int8 weights, uint8 activations (QDQ)",
        "input": "48x48 grayscale face, FER2013 framing (alignment template 'fer2013')",
        "labels": FER2013_7,
        "training_data": "FER2013 Training less a 3 % holdout, soft targets from the two teachers; "
                         "research use, see the dataset's terms",
    },
    aliases=("fast",),
)

register_model(
    "fer2013-compactdeep-kd-48g-7-int8",
    "fer2013_compactdeep_kd_48g_7_int8.onnx",
    {
        "description": "the previous fast model (until the 60-epoch student of the current default): a 48 px "
                       "student (compact_wide, two residual units per stage) distilled from "
                       "fer2013-mobilenetv1face-112c-7 for 30 epochs, temperature-calibrated, static int8 ONNX",
        "architecture": "compact_wide, stages (64,2) (128,2) (256,2); int8 weights, uint8 activations (QDQ)",
        "input": "48x48 grayscale face, FER2013 framing (alignment template 'fer2013')",
        "labels": FER2013_7,
        "training_data": "FER2013 Training less a 10 % holdout, soft targets from fer2013-mobilenetv1face-112c-7; "
                         "research use, see the dataset's terms",
    },
)

register_model(
    "fer2013-compactdeep-48g-7",
    "fer2013_compactdeep_48g_7.pt",
    {
        "description": "accurate CPU model: compact_wide with two residual units per stage, CE on FER2013",
        "architecture": "compact_wide, stages (64,2) (128,2) (256,2)",
        "input": "48x48 grayscale face, FER2013 framing (alignment template 'fer2013')",
        "labels": FER2013_7,
        "training_data": "FER2013 Training (28,709 faces); research use, see the dataset's terms",
    },
)

register_model(
    "fer2013-compact-48g-7",
    "fer2013_compact_48g_7.pt",
    {
        "description": "fast CPU model: compact_wide CNN trained with cross-entropy on FER2013 (Training split)",
        "architecture": "compact_wide",
        "input": "48x48 grayscale face, FER2013 framing (alignment template 'fer2013')",
        "labels": FER2013_7,
        "training_data": "FER2013 Training (28,709 faces); research use, see the dataset's terms",
    },
)

register_model(
    "fer2013-hoglbp-svm-48g-7",
    "fer2013_hoglbp_svm_48g_7.npz",
    {
        "description": "the classic route: HOG + uniform LBP histograms and a calibrated linear SVM (no network)",
        "architecture": "HOG (9 orientations, 8 px cells, 2x2 blocks) + LBP (P=8, R=1, uniform, 6x6 grid), "
                        "LinearSVC C=0.001 with sigmoid calibration (ferkit.classic)",
        "input": "48x48 grayscale face, FER2013 framing (alignment template 'fer2013')",
        "labels": FER2013_7,
        "training_data": "FER2013 Training (28,709 faces); research use, see the dataset's terms",
    },
    aliases=("classic",),
)
