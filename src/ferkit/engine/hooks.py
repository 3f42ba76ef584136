"""The trainer's hooks: EMA, evaluation, checkpoints, logging and the progress bar.

They run in the order given, around a loop that only does forward, backward and step. A hook
sees the whole trainer; nothing here knows which method is being trained.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ferkit.engine import distributed as dist
from ferkit.engine.ema import EMA

if TYPE_CHECKING:
    from ferkit.engine.trainer import Trainer


class Hook:
    def before_train(self, tr: Trainer) -> None: ...
    def after_step(self, tr: Trainer, logs: dict[str, float]) -> None: ...
    def after_epoch(self, tr: Trainer, row: dict[str, Any]) -> None: ...
    def after_train(self, tr: Trainer) -> None: ...
    def state_dict(self) -> dict:
        return {}
    def load_state_dict(self, state: dict) -> None: ...


class EMAHook(Hook):
    """Keeps an EMA copy of the method (model and heads); evaluation uses it when on."""

    def __init__(self, decay: float) -> None:
        self.decay = decay
        self.ema: EMA | None = None

    def before_train(self, tr: Trainer) -> None:
        if self.ema is None:
            self.ema = EMA(tr.method, self.decay)
        tr.ema = self.ema

    def after_step(self, tr: Trainer, logs: dict[str, float]) -> None:
        self.ema.update(tr.method)

    def state_dict(self) -> dict:
        return self.ema.state_dict() if self.ema else {}

    def load_state_dict(self, state: dict) -> None:
        if state and self.ema is not None:
            self.ema.load_state_dict(state)


class EvalHook(Hook):
    """Scores the (EMA) model on the validation split every ``every`` epochs; tracks the best."""

    def __init__(self, every: int, select_metric: str) -> None:
        self.every = max(1, int(every))
        self.select = select_metric
        self.best: float | None = None
        self.best_epoch = -1

    def after_epoch(self, tr: Trainer, row: dict[str, Any]) -> None:
        last = row["epoch"] + 1 == tr.epochs
        if tr.val_data is None or ((row["epoch"] + 1) % self.every and not last):
            return
        if dist.is_main():
            metrics = tr.evaluate(tr.val_data)
            for k in ("accuracy", "macro_f1", "mean_class_accuracy", "nll", "ece", "brier"):
                row[f"val_{k}"] = metrics[k]
            value = row.get(self.select)
            if value is not None and (self.best is None or value > self.best):
                self.best, self.best_epoch = float(value), row["epoch"]
                row["is_best"] = True
        dist.barrier()

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_epoch = state.get("best"), state.get("best_epoch", -1)


class CheckpointHook(Hook):
    """Writes checkpoints/last.pt after each epoch (and every N steps), best.pt at a new best,
    and the inference file model.pt (the best weights, or the last when nothing is validated)."""

    def __init__(self, every_steps: int = 0) -> None:
        self.every_steps = int(every_steps or 0)

    def after_step(self, tr: Trainer, logs: dict[str, float]) -> None:
        if self.every_steps and tr.step % self.every_steps == 0 and tr.batch_in_epoch < tr.steps_per_epoch:
            tr.save_checkpoint("last.pt")

    def after_epoch(self, tr: Trainer, row: dict[str, Any]) -> None:
        # best.pt and model.pt before last.pt: a run killed between these writes still finds the
        # epoch unfinished in last.pt and redoes it, so a complete last.pt always has its model.pt
        if row.get("is_best") or (tr.val_data is None and row["epoch"] + 1 == tr.epochs):
            tr.save_checkpoint("best.pt", row)
            tr.export_model(tr.run_dir / "model.pt", row)
        tr.save_checkpoint("last.pt")


class LoggerHook(Hook):
    """Appends train rows every ``every`` steps and epoch rows to log.jsonl; epoch rows to metrics.csv."""

    def __init__(self, every: int) -> None:
        self.every = max(1, int(every))
        self._sums: dict[str, float] = {}
        self._n = 0
        self._t0 = time.time()

    def before_train(self, tr: Trainer) -> None:
        self._t0 = time.time()

    def after_step(self, tr: Trainer, logs: dict[str, float]) -> None:
        for k, v in logs.items():
            self._sums[k] = self._sums.get(k, 0.0) + float(v)
        self._n += 1
        if tr.step % self.every == 0 and dist.is_main():
            self._write(tr.run_dir / "log.jsonl", {"kind": "train", "epoch": tr.epoch, "step": tr.step,
                                                   "lr": tr.lr, **logs})

    def after_epoch(self, tr: Trainer, row: dict[str, Any]) -> None:
        means = {f"train_{k}": v / max(self._n, 1) for k, v in self._sums.items()}
        self._sums, self._n = {}, 0
        row.update({k: dist.all_reduce_mean(v, tr.device) for k, v in means.items()})
        row["lr"] = tr.lr
        row["time_s"] = round(time.time() - self._t0, 2)
        self._t0 = time.time()
        if not dist.is_main():
            return
        self._write(tr.run_dir / "log.jsonl", {"kind": "epoch", **row})
        path = tr.run_dir / "metrics.csv"
        rows = []
        if path.exists():
            with path.open() as fh:
                rows = list(csv.DictReader(fh))
        rows = [r for r in rows if int(r["epoch"]) < row["epoch"]] + [row]
        keys = list(dict.fromkeys(k for r in rows for k in r))
        with path.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=keys)
            w.writeheader()
            w.writerows(rows)

    @staticmethod
    def _write(path: Path, obj: dict[str, Any]) -> None:
        with path.open("a") as fh:
            fh.write(json.dumps(obj, default=float) + "\n")


class ProgressHook(Hook):
    """A tqdm bar per epoch on the main process, and one summary line per epoch."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.bar = None

    def start_epoch(self, tr: Trainer) -> None:
        if not (self.enabled and dist.is_main()):
            return
        from tqdm.auto import tqdm

        self.bar = tqdm(total=tr.steps_per_epoch, initial=tr.batch_in_epoch, leave=False,
                        desc=f"epoch {tr.epoch + 1}/{tr.epochs}", mininterval=1.0, dynamic_ncols=True)

    def after_step(self, tr: Trainer, logs: dict[str, float]) -> None:
        if self.bar is not None:
            self.bar.update(1)
            if tr.step % 10 == 0:
                self.bar.set_postfix({k: f"{v:.3f}" for k, v in list(logs.items())[:3]}, refresh=False)

    def after_epoch(self, tr: Trainer, row: dict[str, Any]) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if dist.is_main():
            shown = {k: v for k, v in row.items() if isinstance(v, float) and "/" not in k}  # not per-class
            text = "  ".join(f"{k}={v:.4f}" for k, v in shown.items())
            print(f"epoch {row['epoch'] + 1}/{tr.epochs}  {text}", flush=True)
