"""Temperature-scale a finished run on its held-out split of Training, then score it on PublicTest.

    python benchmarks/calibrate_model.py RUN_DIR [--out NAME] [--views flip|plain] [--tta-crop FRACTION]

The run must have been trained with ``data.holdout`` and ``data.val_split: holdout`` (e.g.
configs/ce_fer2013_default_0.yaml): its best epoch was selected on that held-out part of
Training, and the temperature is fitted on it too (``ferkit.evaluation.calibration``), on the
probabilities the model will really output (the face and its mirror averaged when flip
averaging is on, and its centre and corner crops too with ``--tta-crop``, which the calibrated model
then keeps in its preprocessing). PublicTest is used for nothing but the report.

Writes results/NAME/: the calibrated ``model.pt`` (for bundle_model.py; not committed),
``summary.json`` (temperature; holdout and PublicTest metrics before and after, with and without
flip averaging), the metrics JSON and plots (confusion matrix, reliability diagram) of the
calibrated model on PublicTest, the run report, config, meta and the commit of this script's run.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

import torch

from ce_baseline import collect
from ferkit.data import load_dataset
from ferkit.engine.checkpoint import load_checkpoint, save_checkpoint
from ferkit.engine.config import yaml_load
from ferkit.engine.data import HOLDOUT, load_run_data
from ferkit.engine.model_io import load_model
from ferkit.errors import InputError
from ferkit.evaluation.calibration import fit_temperature, fold_temperature
from ferkit.evaluation.report import make_report
from ferkit.experiments.core import epoch_rows
from ferkit.metrics import compute_metrics
from ferkit.models.predict import check_tta_crop

from _common import FER2013, REPO, environment, headline, results_dir, run_cli, write_json


@torch.no_grad()
def logit_views(model, images, flip: bool, crop: float = 0.0, batch: int = 512) -> list:
    """Logits of every test-time view of the faces (``crop_views``, and the mirror image of each when
    ``flip``), as numpy arrays: the views whose mean softmax the model outputs."""
    from ferkit.engine.batches import images_to_tensor
    from ferkit.models.predict import crop_views

    x_all = images_to_tensor(images, int(model.preprocess["channels"]))
    batches = []  # per batch, the logits of each view in order (a view, then its mirror when flip)
    for i in range(0, len(x_all), batch):
        parts = crop_views(model.view(x_all[i:i + batch].to(model.device)), crop)
        if flip:
            parts = [v for x in parts for v in (x, x.flip(3))]
        batches.append([model.net.predict_logits(x).float().cpu() for x in parts])
    return [torch.cat(v).numpy() for v in zip(*batches)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--out", default="pretrained_default")
    ap.add_argument("--views", choices=("flip", "plain"), default=None,
                    help="calibrate the flip-averaged output (default: as the run's train.tta_flip)")
    ap.add_argument("--tta-crop", type=float, default=0.0,
                    help="average the face with its centre and corner crops of this side fraction "
                         "(ferkit.models.predict.crop_views) and calibrate that output; kept in the model")
    args = ap.parse_args()
    os.chdir(REPO)
    run = args.run.resolve()
    cfg = yaml_load((run / "config.yaml").read_text())
    if cfg["data"].get("val_split") != HOLDOUT or not cfg["data"].get("holdout"):
        raise InputError(f"{run} was not selected on a held-out split of Training (data.holdout + "
                         "val_split: holdout); calibrating on the reported split would inflate its figures")
    flip = bool(cfg["train"].get("tta_flip")) if args.views is None else args.views == "flip"
    crop = check_tta_crop(args.tta_crop)
    _, holdout, _ = load_run_data(cfg)
    ck = load_checkpoint(run / "model.pt")
    ck["preprocess"]["tta_crop"] = crop
    model = load_model(run / "model.pt", device="cpu")
    model.preprocess["tta_crop"] = crop
    before = compute_metrics(model.predict_probs(holdout.images, tta_flip=flip), holdout.labels, model.classes)
    temperature = fit_temperature(logit_views(model, holdout.images, flip, crop), holdout.labels)
    fold_temperature(model.net, temperature)
    after = compute_metrics(model.predict_probs(holdout.images, tta_flip=flip), holdout.labels, model.classes)

    out = results_dir(args.out)
    ck["state_dict"] = model.net.state_dict()
    views = ("flip" if flip else "plain") + (f", 6 crops ({crop:g})" if crop else "")
    ck["calibration"] = {"temperature": temperature, "fitted_on": f"data.holdout={cfg['data']['holdout']} of "
                         f"{cfg['data']['train_split']} ({len(holdout)} faces)", "views": views}
    save_checkpoint(ck, out / "model.pt")
    test = load_dataset("fer2013", FER2013, "PublicTest")
    raw = load_model(run / "model.pt", device="cpu")
    raw.preprocess["tta_crop"] = crop
    uncal = {("publictest_flip" if f else "publictest"): headline(
        compute_metrics(raw.predict_probs(test.images, tta_flip=f), test.labels, raw.classes)) for f in (False, True)}
    tmp = out / "_run"
    tmp.mkdir(exist_ok=True)
    for name in ("config.yaml", "meta.json", "metrics.csv", "log.jsonl"):
        shutil.copy2(run / name, tmp / name)
    shutil.copy2(out / "model.pt", tmp / "model.pt")
    summary = collect(tmp, out, FER2013)  # scores the calibrated model, copies run files and report
    make_report(run)
    shutil.rmtree(tmp)
    rows = epoch_rows(run)
    best = max(rows, key=lambda r: r.get("val_accuracy", -1.0))
    summary.update({
        "selection": f"best epoch on the held-out {len(holdout)} faces of Training (val_split: holdout); "
                     "PublicTest used for nothing but this report",
        "temperature": temperature, "calibration_views": views, "tta_crop": crop,
        "holdout_before": headline(before), "holdout_after": headline(after),
        "uncalibrated": uncal, "epochs": cfg["train"]["epochs"], "best_epoch": int(best["epoch"]) + 1,
        "train_time_s": float(sum(r.get("time_s", 0.0) for r in rows)), "run": str(run),
        "environment": environment(),
    })
    write_json(out / "summary.json", summary)
    key = "publictest_flip" if flip else "publictest"
    print(f"T = {temperature:.3f}; holdout ECE {before['ece']:.4f} -> {after['ece']:.4f}; PublicTest "
          f"accuracy {summary[key]['accuracy']:.4f}, macro-F1 {summary[key]['macro_f1']:.4f}, "
          f"ECE {uncal[key]['ece']:.4f} -> {summary[key]['ece']:.4f}")


if __name__ == "__main__":
    run_cli(main, "calibrate_model")
