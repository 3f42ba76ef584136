"""The run config's types and ranges, checked before any work starts.

``config.DEFAULTS`` says which keys exist and their defaults; this schema says what each may
hold, so ``train.epochs=abc``, ``optim.lr=-1`` or ``data.channels=2`` end with one line naming the
key instead of a traceback (or a run that silently does nothing) later. pydantic does the checking
in strict mode: no string is read as a number and no float is cut to an int. Free-form sections
(``data.options``, ``model.options``, ``augment.options``, ``augment.features``) and the method's own keys
are checked by their owners (the reader, the backbone, the method).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ferkit.errors import ConfigError


def PositiveInt() -> Any:  # noqa: N802 - reads as a type in the fields below
    return Field(ge=1)


# Validation rows the trainer computes where larger is better: the metrics best.pt may be selected on.
SELECT_METRICS = ("val_accuracy", "val_macro_f1", "val_mean_class_accuracy")


class _Section(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")



class DataSection(_Section):
    dataset: str
    path: str | None = None
    train_split: str | None = None
    val_split: str | None = None
    holdout: int | float | None = None
    holdout_seed: int
    options: dict[str, Any]
    image_size: int = Field(ge=8, le=2048)
    channels: Literal[1, 3]
    limit_train: int | None = Field(default=None, ge=1)
    limit_val: int | None = Field(default=None, ge=1)
    noise_rate: float = Field(ge=0.0, lt=1.0)
    noise_seed: int
    labelled: int | float | None = None
    unlabelled_ratio: int = PositiveInt()
    teacher: str | list[str] | None = None
    teacher_weight: float = Field(ge=0.0, le=1.0)
    teacher_temperature: float = Field(gt=0.0)
    mean: float | list[float]
    std: float | list[float]


class ModelSection(_Section):
    name: str
    options: dict[str, Any]
    pretrained: str | None = None
    bn_calibration: int = Field(ge=0)


class AugmentSection(_Section):
    train: str
    eval: str
    options: dict[str, Any]
    features: dict[str, dict[str, Any]]


class OptimSection(_Section):
    name: Literal["sgd", "adam", "adamw", "SGD", "Adam", "AdamW"]
    lr: float = Field(gt=0.0)
    weight_decay: float = Field(ge=0.0)
    momentum: float = Field(ge=0.0, lt=1.0)
    nesterov: bool
    batch_size: int = PositiveInt()
    grad_clip: float | None = Field(default=None, gt=0.0)
    fused: Literal["auto"] | bool


class ScheduleSection(_Section):
    name: Literal["cosine", "step", "constant"]
    warmup_epochs: float = Field(ge=0.0)
    min_lr: float = Field(ge=0.0)
    step_epochs: int = PositiveInt()
    gamma: float = Field(gt=0.0, le=1.0)


class TrainSection(_Section):
    epochs: int = PositiveInt()
    steps_per_epoch: int | None = Field(default=None, ge=1)
    device: str
    # YAML reads a bare `off` as false, so false stands for off (and true for auto)
    amp: Literal["auto", "bf16", "fp16", "off", "none", "fp32"] | bool
    channels_last: Literal["auto"] | bool
    threads: int | None = Field(default=None, ge=1)
    ema: float = Field(ge=0.0, lt=1.0)
    sync_bn: bool
    eval_every: int = PositiveInt()
    select_metric: Literal[SELECT_METRICS]  # type: ignore[valid-type]
    checkpoint_every_steps: int = Field(ge=0)
    log_every: int = PositiveInt()
    resume: bool
    progress: bool
    eval_batch_size: int = PositiveInt()
    tta_flip: bool
    cache_frozen: bool
    cache_dir: str | None = None


class RunConfig(_Section):
    name: str
    seed: int = Field(ge=0)
    output_dir: str
    method: dict[str, Any]
    data: DataSection
    model: ModelSection
    augment: AugmentSection
    optim: OptimSection
    schedule: ScheduleSection
    train: TrainSection


def validate_config(cfg: dict[str, Any]) -> None:
    """Raise a one-line ConfigError naming the first key whose value has the wrong type or range."""
    try:
        RunConfig.model_validate(cfg)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = _config_key(cfg, err["loc"])
        raise ConfigError(f"config key '{key}': {_message(err)}, not {_value_at(cfg, key)!r}") from None
    d = cfg["data"]
    for name in ("holdout", "labelled"):
        _count(f"data.{name}", d[name])


def _count(key: str, value: Any) -> None:
    """A count of rows (int >= 1) or a fraction of the split (0 < float < 1)."""
    if value is None:
        return
    ok = (value >= 1) if isinstance(value, int) else (0.0 < value < 1.0)
    if not ok:
        raise ConfigError(f"config key '{key}': must be a count >= 1 or a fraction between 0 and 1, not {value!r}")


def _config_key(cfg: dict[str, Any], loc: tuple) -> str:
    """The dotted config key of a pydantic error location (without the union-branch tags it adds)."""
    parts, node = [], cfg
    for part in loc:
        if isinstance(node, dict) and part in node:
            parts.append(str(part))
            node = node[part]
        else:
            break
    return ".".join(parts) or ".".join(map(str, loc))


def _value_at(cfg: dict[str, Any], key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _message(err: dict[str, Any]) -> str:
    """pydantic's message, phrased for a config key (the first of a union's messages)."""
    msg = err["msg"]
    return msg[0].lower() + msg[1:] if msg else "invalid value"
