"""The training loop: data, model, method, optimiser and schedule, with the hooks around it.

``Trainer(cfg).fit()`` trains one run into ``output_dir/name``. The loop itself only does
forward, backward, (distributed gradient average), step; EMA, evaluation, checkpoints, logging
and the progress bar are hooks (engine/hooks.py). A run whose directory holds a checkpoint
resumes from it: model, method heads, optimiser, schedule, EMA, RNG states and the position in
the epoch are restored, so the result is the same as an uninterrupted run.

Semi-supervised runs (``data.labelled`` set, a method with ``uses_unlabelled``): each batch holds
the labelled rows (``images``, ``labels``, ``index``) and ``unlabelled_ratio`` x as many unlabelled
rows (``u_images``, ``u_index``, and ``u_labels``, their true labels, for analysis only) from a
second loader with its own shuffled order that restarts on its own. An epoch is one pass over
the labelled rows, or ``train.steps_per_epoch`` steps (then the labelled loader cycles too).
Global step ``s`` takes batch ``s`` of each loader's endless stream, so the step alone fixes
both positions and a resume stays exact. A method with ``uses_unlabelled = False`` (``ce``) on
such a run trains on the labelled part only: the supervised baseline.

What a method may use besides its batch (set here, plain callables so the EMA's deep copy of the
method neither copies nor registers them): ``method.ema_model()``, the EMA copy of the method
(None when ``train.ema`` is 0), and ``method.labelled_data()``, the labelled training images
(uint8, N x C x H x W, on the CPU) and labels; ``method.on_epoch_end(epoch)`` runs after the
epoch's last step, before evaluation and the end-of-epoch checkpoint, and its dict joins the
epoch row (Ada-CM computes its margins there, from the EMA model).
"""

from __future__ import annotations

import csv
import json
import math
import platform
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ferkit import __version__
from ferkit.augment import build_augment
from ferkit.data.types import FaceDataset
from ferkit.engine import distributed as dist
from ferkit.engine.batches import BatchLoader, images_to_tensor, make_view
from ferkit.engine.checkpoint import (
    load_checkpoint,
    rng_state,
    save_checkpoint,
    seed_everything,
    set_rng_state,
)
from ferkit.engine.config import config_differences, save_config
from ferkit.engine.data import load_ssl_data
from ferkit.engine.device import autocast_dtype, resolve_device, torch_threads
from ferkit.engine.hooks import CheckpointHook, EMAHook, EvalHook, Hook, LoggerHook, ProgressHook
from ferkit.engine.trunk_cache import cached_trunk, check_cacheable, feature_view, run_cache_dir, trunk_preprocess
from ferkit.errors import ConfigError, TrainingDiverged
from ferkit.methods import Method, get_method
from ferkit.metrics import compute_metrics
from ferkit.models import build_model, load_pretrained, recalibrate_batchnorm
from ferkit.models.predict import predict_probs
from ferkit.models.pretrained import pretrained_spec

MODEL_FORMAT = "ferkit-model/1"


def git_commit(cwd: Path | None = None) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=cwd or Path(__file__).parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def git_dirty(cwd: Path | None = None) -> bool | None:
    """Whether the work tree has uncommitted changes to tracked files outside ``results/`` (None when
    git is not available); ``results/`` holds outputs, which a benchmark rewrites as it runs."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ":(top)",
                              ":(top,exclude)results"], capture_output=True,
                             text=True, timeout=10, cwd=cwd or Path(__file__).parent)
        return bool(out.stdout.strip()) if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


class Trainer:
    """Trains one configured run. See the module docstring."""

    def __init__(self, cfg: dict[str, Any], run_dir: str | Path | None = None) -> None:
        self.cfg = cfg
        tcfg = cfg["train"]
        self.device = resolve_device(tcfg["device"])
        self.threads = tcfg.get("threads")  # held only while the trainer computes (engine/device.torch_threads)
        self.rank, self.world = dist.init_distributed(self.device)
        if self.device.type == "cuda":
            _, local_rank, _ = dist.env_world()
            self.device = torch.device("cuda", local_rank % torch.cuda.device_count())
            torch.cuda.set_device(self.device)
        self.run_dir = Path(run_dir) if run_dir else Path(cfg["output_dir"]) / cfg["name"]
        self.epochs = int(tcfg["epochs"])
        self.epoch = 0
        self.step = 0
        self.batch_in_epoch = 0
        self.ema = None
        seed_everything(int(cfg["seed"]) + self.rank)

        dcfg = cfg["data"]
        self.train_data, self.unlabelled_data, self.val_data, info = load_ssl_data(cfg)
        self.classes = self.train_data.classes
        self.channels = int(dcfg["channels"])
        self.loader = BatchLoader(self.train_data, self.channels, cfg["optim"]["batch_size"], shuffle=True,
                                  drop_last=True, seed=int(cfg["seed"]), rank=self.rank, world=self.world,
                                  device=self.device)
        if len(self.loader) == 0:
            raise ConfigError(f"training split has {len(self.train_data)} rows, fewer than one batch of "
                              f"{cfg['optim']['batch_size']}")
        method_cls = get_method(cfg["method"]["name"])
        self.u_loader = self._unlabelled_loader(method_cls)
        self.steps_per_epoch = len(self.loader)
        if tcfg.get("steps_per_epoch") is not None:
            self.steps_per_epoch = int(tcfg["steps_per_epoch"])
            if self.steps_per_epoch < 1:
                raise ConfigError(f"train.steps_per_epoch must be >= 1, not {tcfg['steps_per_epoch']}")

        torch.manual_seed(int(cfg["seed"]))  # the same initial weights on every process
        model = build_model(cfg["model"]["name"], num_classes=len(self.classes), in_channels=self.channels,
                            image_size=int(dcfg["image_size"]), **cfg["model"].get("options", {}))
        if cfg["model"].get("pretrained"):
            load_pretrained(model, cfg["model"]["pretrained"])
            with torch_threads(self.threads):
                self._calibrate_pretrained(model)
        if _channels_last(tcfg.get("channels_last", "auto"), model):
            model.to(memory_format=torch.channels_last)
        self.method: Method = method_cls(model, cfg["method"], len(self.classes), info)
        if self.world > 1 and self.device.type == "cuda" and tcfg.get("sync_bn", True):
            self.method = nn.SyncBatchNorm.convert_sync_batchnorm(self.method)
        self.method.ema_model = lambda: self.ema.shadow if self.ema is not None else None
        self.method.labelled_data = lambda: (self.loader.images, self.loader.labels)
        self.method.to(self.device)
        dist.broadcast_module(self.method)
        seed_everything(int(cfg["seed"]) * 7919 + self.rank + 1)

        size, acfg = int(dcfg["image_size"]), cfg["augment"]
        opts = acfg.get("options", {})
        self.method.views = {
            p: make_view(build_augment(p if p not in ("train", "eval") else acfg[p], size, self.channels,
                                       **opts.get(p, {})), dcfg["mean"], dcfg["std"])
            for p in ("train", "eval", "weak", "strong")
        }
        self.eval_view = self.method.views["eval"]  # validation: images through the whole network
        self.amp_dtype = autocast_dtype(self.device, tcfg["amp"])
        if tcfg.get("cache_frozen"):
            with torch_threads(self.threads):
                self._cache_frozen(model)
        self.optimizer = self._build_optimizer()
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_lambda())

        self.hooks: list[Hook] = []
        if float(tcfg["ema"]) > 0:
            self.hooks.append(EMAHook(float(tcfg["ema"])))
        self.eval_hook = EvalHook(tcfg["eval_every"], tcfg["select_metric"])
        self.progress = ProgressHook(bool(tcfg["progress"]))
        self.hooks += [self.eval_hook, LoggerHook(tcfg["log_every"]),
                       CheckpointHook(tcfg["checkpoint_every_steps"]), self.progress]

    # ---- set-up helpers -------------------------------------------------------------------
    def _unlabelled_loader(self, method_cls: type[Method]) -> BatchLoader | None:
        """The unlabelled stream of a semi-supervised run; None when the method trains on labels only."""
        if not method_cls.uses_unlabelled:
            return None
        if self.unlabelled_data is None:
            raise ConfigError(f"method '{method_cls.name}' learns from unlabelled data: set data.labelled "
                              "(a count or a fraction of the training split to keep labelled)")
        ratio = self.cfg["data"]["unlabelled_ratio"]
        if isinstance(ratio, bool) or not isinstance(ratio, int) or ratio < 1:
            raise ConfigError(f"data.unlabelled_ratio must be an integer >= 1, not {ratio!r}")
        size = ratio * int(self.cfg["optim"]["batch_size"])
        loader = BatchLoader(self.unlabelled_data, self.channels, size, shuffle=True, drop_last=True,
                             seed=int(self.cfg["seed"]) + 500_009, rank=self.rank, world=self.world,
                             device=self.device)  # its own seed: an order unrelated to the labelled one
        if len(loader) == 0:
            raise ConfigError(f"{len(self.unlabelled_data)} unlabelled rows are fewer than one unlabelled batch of "
                              f"{size} (data.unlabelled_ratio x optim.batch_size)")
        return loader

    def _calibrate_pretrained(self, model: nn.Module) -> None:
        """Re-estimate folded BatchNorm statistics of a shipped backbone on training faces (eval view)."""
        n = int(self.cfg["model"].get("bn_calibration") or 0)
        spec = pretrained_spec(self.cfg["model"]["pretrained"])
        if n <= 0 or spec is None or not spec.get("folded_bn"):
            return
        d = self.cfg["data"]
        view = make_view(build_augment(self.cfg["augment"]["eval"], int(d["image_size"]), self.channels),
                         d["mean"], d["std"])
        rows = torch.randperm(len(self.loader.images), generator=torch.Generator().manual_seed(int(self.cfg["seed"])))
        rows = rows[:n]
        recalibrate_batchnorm(model, (view(self.loader.images[rows[i:i + 256]]) for i in range(0, len(rows), 256)))

    def _cache_frozen(self, model: nn.Module) -> None:
        """``train.cache_frozen``: the loaders serve the frozen blocks' output for each face and its
        mirror, and the method's views pick from them (:mod:`ferkit.engine.trunk_cache`)."""
        check_cacheable(model)
        pre = trunk_preprocess(self.cfg, self.channels, self.amp_dtype)
        for loader in (self.loader, self.u_loader):
            if loader is not None:
                loader.images = cached_trunk(model.backbone, loader.images, self.eval_view, self.device,
                                             self.amp_dtype, run_cache_dir(self.cfg), pre,
                                             progress=bool(self.cfg["train"]["progress"]) and self.rank == 0)
        feats = self.cfg["augment"]["features"]
        self.method.views = {p: feature_view(feats.get(p), pick="face" if p == "eval" else "random")
                             for p in ("train", "eval", "weak", "strong")}

    def _build_optimizer(self) -> torch.optim.Optimizer:
        ocfg = self.cfg["optim"]
        decay, no_decay = [], []
        for name, p in self.method.named_parameters():
            if p.requires_grad:
                (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
        groups = [{"params": decay, "weight_decay": float(ocfg["weight_decay"])},
                  {"params": no_decay, "weight_decay": 0.0}]
        name, lr = ocfg["name"].lower(), float(ocfg["lr"])
        fused = ocfg.get("fused", "auto")
        if fused not in ("auto", True, False):
            raise ConfigError(f"optim.fused must be auto, true or false, not {fused!r}")
        # fused Adam(W): one kernel for all parameters (CPU and CUDA; not MPS in every torch)
        fused = bool(fused) and self.device.type in ("cpu", "cuda")
        if name == "sgd":
            return torch.optim.SGD(groups, lr=lr, momentum=float(ocfg["momentum"]), nesterov=bool(ocfg["nesterov"]))
        if name == "adam":
            return torch.optim.Adam(groups, lr=lr, fused=fused or None)
        if name == "adamw":
            return torch.optim.AdamW(groups, lr=lr, fused=fused or None)
        raise ConfigError(f"unknown optimiser '{ocfg['name']}' (sgd, adam, adamw)")

    def _lr_lambda(self):
        s = self.cfg["schedule"]
        total = max(1, self.epochs * self.steps_per_epoch)
        warm = int(float(s["warmup_epochs"]) * self.steps_per_epoch)
        floor = float(s["min_lr"]) / float(self.cfg["optim"]["lr"])
        name = s["name"]
        if name not in ("cosine", "step", "constant"):
            raise ConfigError(f"unknown schedule '{name}' (cosine, step, constant)")

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            if name == "constant":
                return 1.0
            if name == "step":
                return float(s["gamma"]) ** (step // (int(s["step_epochs"]) * self.steps_per_epoch))
            t = (step - warm) / max(1, total - warm)
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

        return factor

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    # ---- checkpoints ----------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "format": "ferkit-checkpoint/1",
            "epoch": self.epoch, "step": self.step, "batch_in_epoch": self.batch_in_epoch,
            "method": self.method.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "rng": rng_state(),
            "hooks": {type(h).__name__: h.state_dict() for h in self.hooks},
            "config": json.loads(json.dumps(self.cfg)), "classes": list(self.classes),
        }

    def save_checkpoint(self, name: str, row: dict[str, Any] | None = None) -> None:
        """``checkpoints/name``; ``row`` (the epoch's metrics) is kept with it for model.pt's re-export."""
        if dist.is_main():
            state = self.state()
            if row is not None:
                state["row"] = _plain_row(row)
            save_checkpoint(state, self.run_dir / "checkpoints" / name)

    def _load_state(self, ck: dict[str, Any]) -> None:
        self.method.load_state_dict(ck["method"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.scheduler.load_state_dict(ck["scheduler"])
        for h in self.hooks:
            h.before_train(self)  # creates the EMA copy before its state is loaded
            h.load_state_dict(ck["hooks"].get(type(h).__name__, {}))
        if self.world == 1:
            set_rng_state(ck["rng"])
        self.epoch, self.step, self.batch_in_epoch = ck["epoch"], ck["step"], ck["batch_in_epoch"]
        if self.batch_in_epoch >= self.steps_per_epoch:
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0

    def export_model(self, path: Path, row: dict[str, Any] | None = None) -> None:
        """The inference file: weights (EMA when on), architecture, labels and preprocessing."""
        if not dist.is_main():
            return
        net = self.ema.shadow if self.ema is not None else self.method
        d = self.cfg["data"]
        save_checkpoint({
            "format": MODEL_FORMAT,
            "method": self.cfg["method"], "model": self.method.model.config(),
            "state_dict": net.state_dict(), "classes": list(self.classes),
            "preprocess": {"image_size": int(d["image_size"]), "channels": self.channels,
                           # the training faces' own size: the Recognizer crops photos at it
                           "crop_size": int(np.asarray(self.train_data.images).shape[1]),
                           "mean": d["mean"], "std": d["std"],  # one number or one per channel
                           "tta_flip": bool(self.cfg["train"]["tta_flip"])},
            "metrics": _plain_row(row or {}),
            "run": self.cfg["name"], "ferkit_version": __version__,
        }, path)

    # ---- the loop -------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Train to the configured number of epochs; returns the last epoch's row."""
        with torch_threads(self.threads):
            return self._fit()

    def _fit(self) -> dict[str, Any]:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if dist.is_main():
            _remove_orphaned_writes(self.run_dir)
        last = self.run_dir / "checkpoints" / "last.pt"
        if self.cfg["train"]["resume"] and last.exists():
            ck = load_checkpoint(last)  # read once: checked, then restored
            self._check_resumable(ck)
            self._load_state(ck)
            if dist.is_main():
                where = (f"at epoch {self.epoch + 1}, step {self.step}" if self.epoch < self.epochs
                         else f"(already complete: {self.epochs} epochs)")
                print(f"resuming {self.run_dir} {where}", flush=True)
                self._repair_model_file(ck)
        if dist.is_main():
            save_config(self.cfg, self.run_dir / "config.yaml")
            self._write_meta()
        for h in self.hooks:
            h.before_train(self)
        row: dict[str, Any] = {}
        while self.epoch < self.epochs:
            try:
                row = self._train_epoch()
            except TrainingDiverged as exc:
                self._record_failure(str(exc))
                raise
            self.epoch += 1
            self.batch_in_epoch = 0
        for h in self.hooks:
            h.after_train(self)
        dist.barrier()
        return row

    def _check_resumable(self, ck: dict[str, Any]) -> None:
        """Refuse to resume a run under a config its weights were not trained with (one line naming
        the keys), or with fewer epochs than it already has; more epochs continue it."""
        changed = config_differences(ck.get("config") or {}, self.cfg, _RESUME_MAY_CHANGE)
        if changed:
            raise ConfigError(f"{self.run_dir} was trained with another config ({', '.join(changed)} differ): "
                              "run with --no-resume to start afresh, or choose another run directory")
        done = int(ck["epoch"]) + (1 if int(ck["batch_in_epoch"]) >= self.steps_per_epoch else 0)
        if done > self.epochs:
            raise ConfigError(f"{self.run_dir} already has {done} epochs, more than train.epochs={self.epochs}: "
                              "raise train.epochs to continue it, or run with --no-resume to start afresh")

    def _record_failure(self, message: str) -> None:
        """A run that stopped on an error says so in its directory (log.jsonl and error.txt)."""
        if not dist.is_main():
            return
        from ferkit.atomic import atomic_write_text

        with (self.run_dir / "log.jsonl").open("a") as fh:
            fh.write(json.dumps({"kind": "error", "epoch": self.epoch, "step": self.step, "message": message}) + "\n")
        atomic_write_text(self.run_dir / "error.txt", message + "\n")

    def _repair_model_file(self, last: dict[str, Any]) -> None:
        """Re-export model.pt from best.pt when the two disagree (a run killed between their writes
        by an older ferkit, or model.pt lost): model.pt must always hold the selected weights."""
        best = self.run_dir / "checkpoints" / "best.pt"
        model = self.run_dir / "model.pt"
        if not best.exists():
            return
        ck = load_checkpoint(best)
        exported = load_checkpoint(model).get("metrics", {}).get("epoch") if model.exists() else None
        if exported == ck["epoch"]:
            return
        print(f"model.pt does not hold best.pt's epoch {ck['epoch'] + 1}: exporting it again", flush=True)
        row = ck.get("row") or _metrics_row(self.run_dir / "metrics.csv", ck["epoch"])
        self._load_state(ck)
        self.export_model(model, row)
        self._load_state(last)  # back to where training stands

    def _train_epoch(self) -> dict[str, Any]:
        self.method.train()
        self.method.on_epoch_start(self.epoch)
        self.progress.start_epoch(self)
        for batch in self._batches():
            logs = self._step(batch)
            self.step += 1
            self.batch_in_epoch += 1
            for h in self.hooks:
                h.after_step(self, logs)
        row: dict[str, Any] = {"epoch": self.epoch, "step": self.step}
        row.update(self.method.on_epoch_end(self.epoch) or {})
        for h in self.hooks:
            h.after_epoch(self, row)
        return row

    def _batches(self) -> Iterator[dict[str, Tensor]]:
        """The rest of this epoch's batches. Global step ``s`` takes batch ``s`` of the labelled
        stream (with the default epoch length: batch ``s % len`` of loader epoch ``s // len``, as a
        plain epoch loop would) and, in a semi-supervised run, batch ``s`` of the unlabelled one."""
        start = self.epoch * self.steps_per_epoch + self.batch_in_epoch
        labelled = self.loader.cycle(start)
        unlabelled = self.u_loader.cycle(start) if self.u_loader is not None else None
        for _ in range(self.steps_per_epoch - self.batch_in_epoch):
            batch = next(labelled)
            if unlabelled is not None:
                u = next(unlabelled)
                batch.update(u_images=u["images"], u_index=u["index"], u_labels=u["labels"])
            yield batch

    def _step(self, batch: dict[str, Tensor]) -> dict[str, float]:
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                            enabled=self.amp_dtype is not None):
            loss, logs = self.method.train_step(batch)
        if not torch.isfinite(loss):
            raise TrainingDiverged(
                f"the training loss became {float(loss.detach())} at step {self.step + 1} "
                f"(epoch {self.epoch + 1}): the learning rate is likely too high "
                f"(optim.lr={self.cfg['optim']['lr']}); lower it or set optim.grad_clip, then run with --no-resume")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        dist.all_reduce_gradients(self.method)
        if self.cfg["optim"]["grad_clip"]:
            nn.utils.clip_grad_norm_(self.method.parameters(), float(self.cfg["optim"]["grad_clip"]))
        self.optimizer.step()
        self.scheduler.step()
        return logs

    # ---- evaluation -----------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, data: FaceDataset) -> np.ndarray:
        net = self.ema.shadow if self.ema is not None else self.method
        return predict_probs(net, images_to_tensor(data.images, self.channels), self.eval_view, self.device,
                             int(self.cfg["train"]["eval_batch_size"]), bool(self.cfg["train"]["tta_flip"]),
                             self.amp_dtype)

    def evaluate(self, data: FaceDataset) -> dict[str, Any]:
        return compute_metrics(self.predict(data), data.labels, data.classes)

    def _write_meta(self) -> None:
        meta = {"git_commit": git_commit(), "git_dirty": git_dirty(), "ferkit": __version__, "torch": torch.__version__,
                "python": platform.python_version(), "device": str(self.device), "world_size": self.world,
                "precision": str(self.amp_dtype or torch.float32).removeprefix("torch."),  # what amp: auto chose
                "num_train": len(self.train_data), "num_val": len(self.val_data) if self.val_data else 0,
                "num_unlabelled": len(self.unlabelled_data) if self.unlabelled_data is not None else 0,
                "classes": list(self.classes), "data_meta": _jsonable(self.train_data.meta)}
        (self.run_dir / "meta.json").write_text(json.dumps(meta, indent=2))


#: keys a resumed run may change: how and where it runs, not what its weights are
_RESUME_MAY_CHANGE = ("name", "output_dir", "data.path", "data.options.cache", "train.epochs", "train.device",
                      "train.threads", "train.progress", "train.log_every", "train.checkpoint_every_steps",
                      "train.eval_batch_size", "train.eval_every", "train.resume", "train.amp", "train.channels_last")


def _plain_row(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if isinstance(v, (int, float, str))}


def metrics_csv_rows(path: Path, empty_as_none: bool = False) -> list[dict[str, Any]]:
    """The rows of a run's metrics.csv, numbers parsed ([] without the file); empty fields are left out,
    or None with ``empty_as_none`` (as log.jsonl writes a value that was not defined that epoch)."""
    if not Path(path).is_file():
        return []
    with Path(path).open() as fh:
        return [{k: None if v in ("", None) else _number(v) for k, v in r.items()
                 if empty_as_none or v not in ("", None)} for r in csv.DictReader(fh)]


def _metrics_row(path: Path, epoch: int) -> dict[str, Any]:
    """An epoch's row of metrics.csv (numbers parsed), or just the epoch when it is not there."""
    return next((r for r in metrics_csv_rows(path) if r.get("epoch") == epoch), {"epoch": epoch})


def _number(text: str) -> int | float | str:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _remove_orphaned_writes(run_dir: Path) -> None:
    """Temporary files of writes killed half-way (atomic_write's ``.NAME.*.tmp``) are garbage."""
    for folder in (run_dir, run_dir / "checkpoints"):
        for tmp in folder.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)


def _channels_last(option: str | bool, model: nn.Module) -> bool:
    """``train.channels_last``: auto = on for convolutional backbones (oneDNN's fast layout), off for ViTs."""
    if option not in ("auto", True, False):
        raise ConfigError(f"train.channels_last must be auto, true or false, not {option!r}")
    if option == "auto":
        return not str(getattr(model, "name", "")).startswith("vit")
    return bool(option)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj][:50]
    if isinstance(obj, np.ndarray):
        return f"array{list(obj.shape)}" if obj.size > 50 else obj.tolist()
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    return obj if isinstance(obj, (int, float, str, bool, type(None))) else str(obj)
