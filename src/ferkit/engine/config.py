"""One YAML per run, checked against known keys, with ``key=value`` overrides.

A run's config is the DEFAULTS below deep-merged with the YAML file, then with the
command-line overrides (``train.epochs=3 model.name=resnet18``). Any key the defaults do not
know raises a ConfigError naming it, so a typo never silently falls back to a default. The
``method`` section is checked against the chosen method's own ``defaults``.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from ferkit.engine.config_schema import validate_config
from ferkit.errors import ConfigError, InputError
from ferkit.models.pretrained import check_pretrained, pretrained_normalisation


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads ``1e-3`` as a string; configs mean a float (as YAML 1.2 does)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?(?:[eE][-+]?[0-9]+)$|^[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?$"),
    list("-+0123456789."),
)


def yaml_load(text: str):
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


#: Every key a run config may set, with its default. Comments say why a default was chosen.
DEFAULTS: dict[str, Any] = {
    "name": None,  # run name; default: the config file's stem
    "seed": 0,
    "output_dir": "runs",  # the run directory is output_dir/name
    "method": {"name": "ce"},  # the method's own keys come from its `defaults`
    "data": {
        "dataset": "fer2013",
        "path": None,
        "train_split": "Training",
        "val_split": "PublicTest",  # or "holdout": the part of the training split that data.holdout keeps out
        "holdout": None,  # int count or float fraction of the training split held out (stratified), never trained on
        "holdout_seed": 0,  # the held-out faces depend on this only, not on the run's seed
        "options": {},  # passed to the reader (e.g. ferplus mode, image_size)
        "image_size": 48,  # model input size; data of another size is resized on the fly
        "channels": 1,  # 1 = grayscale, 3 = RGB
        "limit_train": None,  # int: a stratified subset of the training split, for quick runs
        "limit_val": None,
        "noise_rate": 0.0,  # fraction of training labels flipped to another class
        "noise_seed": 0,
        "labelled": None,  # semi-supervised: int count or float fraction kept labelled (seeded, per class
        # in proportion); the rest of the training split is the unlabelled set
        "unlabelled_ratio": 7,  # semi-supervised: unlabelled rows per labelled row in a step (FixMatch's mu = 7)
        "teacher": None,  # distillation: a trained model (bundled name, run dir, model.pt) whose flip-averaged
        # probabilities on the training faces become soft targets, mixed with the labels (see engine/data.py);
        # a list of models is an ensemble teacher (the mean of their probabilities)
        "teacher_weight": 0.7,  # share of the teacher in the soft target; the label gets the rest
        "teacher_temperature": 1.0,  # > 1 softens the teacher's probabilities (p^(1/T), renormalised)
        "mean": "auto",  # normalisation: one number, one per channel, or auto: the shipped pretrained
        "std": "auto",  # backbone's own (model.pretrained), else 0.5 / 0.5
    },
    "model": {
        "name": "compact",
        "options": {},  # passed to the backbone (stem, width, patch size, ...)
        "pretrained": None,  # a shipped backbone name (vggface2_mobilenet_v1, ...) or a torchvision-format
        # state dict file to start from
        "bn_calibration": 2048,  # training faces (eval view) on which the BatchNorm statistics of a folded
        # pretrained backbone are re-estimated before training (function-preserving; 0 = off)
    },
    "augment": {
        "train": "train",
        "eval": "eval",
        "options": {},
        # views of cached trunk activations (train.cache_frozen), per policy: after a random pick of the face
        # or its mirror, erase = probability of zeroing a random rectangle of the activation map, channel_drop =
        # fraction of channels zeroed. Choice: train/weak flip only (the measured recipe), strong adds both as
        # the stand-in for RandAugment (see engine/trunk_cache.py)
        "features": {"train": {}, "weak": {}, "strong": {"erase": 1.0, "channel_drop": 0.1}},
    },
    "optim": {
        "name": "adamw",  # sgd | adam | adamw
        "lr": 1e-3,
        "weight_decay": 5e-4,
        "momentum": 0.9,
        "nesterov": True,
        "batch_size": 128,  # the global batch: split over the processes under torchrun
        "grad_clip": None,
        "fused": "auto",  # fused Adam/AdamW step (one kernel over all parameters); auto: on where torch has it
    },
    "schedule": {
        "name": "cosine",  # cosine | step | constant
        "warmup_epochs": 0.0,
        "min_lr": 0.0,
        "step_epochs": 30,  # step schedule: decay every this many epochs
        "gamma": 0.1,
    },
    "train": {
        "epochs": 30,
        "steps_per_epoch": None,  # None: an epoch is one pass over the (labelled) training rows; an int: that
        # many steps, the loaders cycling on their own (FixMatch-style iteration budgets)
        "device": "auto",
        "amp": "auto",  # auto: bf16 autocast on CUDA and on CPUs with native bf16 (AMX / AVX-512 BF16);
        # bf16 | fp16 | off
        "channels_last": "auto",  # NHWC memory format; auto: on for CNNs (oneDNN's fast layout on CPU)
        "threads": None,  # torch intra-op threads; default: torch's choice
        "ema": 0.0,  # EMA decay of the weights (0 = off); evaluation uses the EMA model when on
        "sync_bn": True,  # SyncBatchNorm across processes on CUDA (torch has no CPU SyncBatchNorm)
        "eval_every": 1,  # epochs
        "select_metric": "val_accuracy",
        "checkpoint_every_steps": 0,  # also save mid-epoch every N steps (0 = end of epoch only)
        "log_every": 20,  # steps between train rows in log.jsonl
        "resume": True,  # continue from output_dir/name/checkpoints/last.pt if it exists
        "progress": True,
        "eval_batch_size": 512,
        "tta_flip": False,
        "cache_frozen": False,  # compute the frozen blocks' output (model.options.frozen_blocks) once per training
        # face and mirror, and train only the upper blocks on it (engine/trunk_cache.py)
        "cache_dir": None,  # where those activations are kept across runs; None: <output_dir>/.trunk_cache
    },
}


def _deep_merge(base: dict, new: Mapping, where: str, strict: bool) -> dict:
    out = copy.deepcopy(base)
    for key, value in new.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in out:
            if strict:
                raise ConfigError(f"unknown config key '{path}'")
            out[key] = copy.deepcopy(value)
        elif isinstance(out[key], dict) and key not in _FREE_FORM and path not in _FREE_FORM:
            if not isinstance(value, Mapping):
                raise ConfigError(f"config key '{path}' must be a mapping, got {value!r}")
            out[key] = _deep_merge(out[key], value, path, strict)
        elif isinstance(out[key], dict):
            out[key] = {**out[key], **(value or {})}
        else:
            out[key] = copy.deepcopy(value)
    return out


# Sections whose keys belong to someone else (a reader, a backbone, a method) and are checked there.
_FREE_FORM = {"data.options", "model.options", "augment.options", "augment.features"}


def parse_overrides(items: Iterable[str]) -> dict:
    """``["train.epochs=3", "model.name=resnet18"]`` -> nested dict (values parsed as YAML)."""
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value")
        key, raw = item.split("=", 1)
        value = yaml_load(raw) if raw != "" else None
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def read_yaml_mapping(path: str | Path, what: str = "config file") -> dict:
    """The mapping a YAML file holds; one clear InputError / ConfigError (naming ``what``) otherwise."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} not found: {path}")
    try:
        loaded = yaml_load(path.read_text()) or {}
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {path} is not text (a YAML file was expected)") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(loaded, Mapping):
        raise ConfigError(f"{what} {path} must hold a mapping of keys")
    return dict(loaded)


def load_config(path: str | Path | None = None, overrides: Iterable[str] = (),
                extra: Mapping | None = None) -> dict:
    """Resolved run config: DEFAULTS <- YAML file <- ``extra`` dict <- ``key=value`` overrides."""
    cfg = copy.deepcopy(DEFAULTS)
    if path is not None:
        path = Path(path)
        cfg = _merge_layer(cfg, read_yaml_mapping(path, "config file"))
        resolve_data_path(cfg, path)
        if cfg.get("name") is None:
            cfg["name"] = path.stem
    for layer in (extra or {}, parse_overrides(overrides)):
        cfg = _merge_layer(cfg, layer)
    if cfg.get("name") is None:
        cfg["name"] = "run"
    _check_method(cfg)
    _resolve_auto(cfg)
    validate_config(cfg)
    return cfg


def resolve_data_path(cfg: dict, config_path: Path) -> None:
    """A relative ``data.path`` in a config file means relative to that file; where nothing is there,
    to the working directory (how configs were read before, and how the committed ones are written).
    The path kept is relative to the working directory, so the recorded config stays portable."""
    raw = cfg["data"].get("path")
    if not isinstance(raw, str) or not raw or Path(raw).is_absolute():
        return
    beside = config_path.parent / raw
    if beside.exists() and not Path(raw).exists():
        cfg["data"]["path"] = os.path.relpath(beside)


def _resolve_auto(cfg: dict) -> None:
    """``data.mean/std: auto`` -> the shipped pretrained backbone's normalisation, else 0.5 / 0.5,
    so the resolved config (and the exported model) records the numbers actually used."""
    d, m = cfg["data"], cfg["model"]
    check_pretrained(m.get("pretrained"), m["name"])
    mean, std = pretrained_normalisation(m.get("pretrained"), d["channels"])
    if d["mean"] == "auto":
        d["mean"] = mean
    if d["std"] == "auto":
        d["std"] = std


def _merge_layer(cfg: dict, layer: Mapping) -> dict:
    layer = dict(layer)
    method = layer.pop("method", None)
    cfg = _deep_merge(cfg, layer, "", strict=True)
    if method is not None:
        if isinstance(method, str):
            method = {"name": method}
        if not isinstance(method, Mapping):
            raise ConfigError(f"config key 'method' must be a name or a mapping, got {method!r}")
        merged = dict(cfg["method"])
        if "name" in method and method["name"] != merged.get("name"):
            merged = {"name": method["name"]}
        merged.update(method)
        cfg["method"] = merged
    return cfg


def _check_method(cfg: dict) -> None:
    """Fill the method's defaults and reject keys the method does not know."""
    from ferkit.methods import get_method  # late: methods import the engine

    method_cls = get_method(cfg["method"]["name"])
    known = dict(method_cls.defaults)
    for key in cfg["method"]:
        if key != "name" and key not in known:
            raise ConfigError(
                f"unknown config key 'method.{key}' for method '{method_cls.name}' "
                f"(known: {', '.join(sorted(known)) or 'none'})"
            )
    cfg["method"] = {"name": method_cls.name, **known, **{k: v for k, v in cfg["method"].items()}}


def save_config(cfg: Mapping, path: str | Path) -> None:
    """Write the resolved config (atomically), so the run can be repeated exactly."""
    from ferkit.atomic import atomic_write_text

    atomic_write_text(Path(path), yaml.safe_dump(dict(cfg), sort_keys=False))


def flatten_config(d: Mapping, prefix: str = "") -> dict[str, Any]:
    """``{"train": {"epochs": 3}}`` -> ``{"train.epochs": 3}``; an empty mapping stays one value."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten_config(v, key + "."))
        else:
            out[key] = v
    return out


def keys_added_at_default(old_flat: Mapping[str, Any], new_flat: Mapping[str, Any]) -> set[str]:
    """Run-config keys an old run's config lacks that the new config holds at ferkit's default (e.g.
    ``data.holdout: null``, added after the run): the old run trained as that default does."""
    defaults = json.loads(json.dumps(flatten_config(DEFAULTS)))
    return {k for k, v in new_flat.items() if k not in old_flat and k in defaults and defaults[k] == v}


def config_differences(old: Mapping, new: Mapping, ignore: Iterable[str] = ()) -> list[str]:
    """Dotted keys whose values differ between a recorded run config and a resolved one, keys in
    ``ignore`` and keys added to ferkit since at their default aside. ``new`` is compared as the
    recorded YAML/JSON holds it (tuples as lists)."""
    a, b = flatten_config(old), flatten_config(json.loads(json.dumps(new)))
    skip = set(ignore) | keys_added_at_default(a, b)
    # an empty section on one side and none on the other (data.options: {}) say the same
    skip |= {k for k in set(a) ^ set(b) if a.get(k, b.get(k)) == {}}
    return sorted(k for k in set(a) | set(b) if k not in skip and a.get(k) != b.get(k))
