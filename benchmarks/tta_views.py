"""Does multi-crop test-time averaging beat flip averaging? Measured on a held-out split of Training.

    python benchmarks/tta_views.py CONFIG MODEL [MODEL ...] --out NAME [--crop 0.92] [--speed NAME ...]

CONFIG is a training config with ``data.holdout`` whose held-out faces no MODEL trained on (as for
benchmarks/ensemble_holdout.py). Each MODEL is scored on those faces once per view of
``ferkit.models.predict.crop_views`` (the face, then its centre and four corner crops of side
``--crop``), each averaged with its mirror image; the view sets that ``tta_crop`` and the
"ten-crop" of the FER2013 recipes average are then compared with flip averaging alone, face by face
(exact McNemar p). PublicTest is not scored: this chooses whether to ship the option.
``--speed`` also times each named model (e.g. the int8 ``default``) through the Recognizer with flip
averaging alone and with ``tta_crop`` (``ferkit benchmark``'s classifier faces/s and 640x480 photos/s,
2 threads). Writes results/NAME/summary.json.
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import torch

from calibrate_model import logit_views
from ensemble_holdout import mcnemar
from ferkit.engine.config import load_config
from ferkit.engine.data import HOLDOUT, load_run_data
from ferkit.engine.model_io import load_model
from ferkit.errors import InputError
from ferkit.evaluation.speed import benchmark
from ferkit.inference.recognizer import Recognizer
from ferkit.metrics import compute_metrics
from ferkit.models.predict import check_tta_crop

from _common import REPO, headline, run_cli, write_summary

VIEWS = ("face", "centre", "top-left", "top-right", "bottom-left", "bottom-right")
#: the averages compared with flip averaging alone ("face")
SETS = {"face + 5 crops (tta_crop)": VIEWS, "5 crops (ten-crop)": VIEWS[1:], "face + centre": VIEWS[:2]}


def view_probs(model, images, crop: float) -> dict[str, np.ndarray]:
    """Flip-averaged probabilities of each view, by view name (the logits calibrate_model fits on)."""
    logits = torch.from_numpy(np.stack(logit_views(model, images, flip=True, crop=crop)))
    probs = logits.softmax(-1).view(len(VIEWS), 2, *logits.shape[1:]).mean(1).numpy()
    return dict(zip(VIEWS, probs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("models", nargs="*")
    ap.add_argument("--out", required=True)
    ap.add_argument("--crop", type=float, default=0.92, help="crop side as a fraction of the face")
    ap.add_argument("--speed", nargs="*", default=[], help="models to time with and without the crops")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    os.chdir(REPO)
    crop = check_tta_crop(args.crop)
    if not args.models and not args.speed:
        raise InputError("nothing to measure: give MODEL(s) to score on the holdout and/or --speed MODEL(s)")
    if not crop:
        raise InputError("--crop must be in (0, 1): with 0 there is nothing to compare")
    cfg = load_config(args.config)
    if cfg["data"].get("val_split") != HOLDOUT or not cfg["data"].get("holdout"):
        raise InputError(f"{args.config} holds nothing out of Training (data.holdout + val_split: holdout)")
    cfg["data"]["teacher"] = None
    _, holdout, _ = load_run_data(cfg)
    labels = np.asarray(holdout.labels)
    summary = {"config": args.config, "crop": crop, "views": list(VIEWS),
               "holdout": f"data.holdout={cfg['data']['holdout']} of {cfg['data']['train_split']}, "
                          f"seed {cfg['data'].get('holdout_seed', 0)} ({len(holdout)} faces)", "models": {}}
    for name in args.models:
        model = load_model(name, device="cpu")
        probs = view_probs(model, holdout.images, crop)
        flip_right = probs["face"].argmax(1) == labels
        res = {"source": model.source,
               "per_view_accuracy": {v: float((p.argmax(1) == labels).mean()) for v, p in probs.items()},
               "flip_only": headline(compute_metrics(probs["face"], labels, model.classes))}
        for set_name, views in SETS.items():
            mean = np.mean([probs[v] for v in views], axis=0)
            res[set_name] = {**headline(compute_metrics(mean, labels, model.classes)),
                             "vs_flip_only": mcnemar(flip_right, mean.argmax(1) == labels)}
        summary["models"][name] = res
        print(f"{name}: flip only {res['flip_only']['accuracy']:.4f}; " + "; ".join(
            f"{s} {res[s]['accuracy']:.4f} (p = {res[s]['vs_flip_only']['p_mcnemar']:.2f})" for s in SETS),
            flush=True)
    summary["speed"] = {}
    for name in args.speed:
        summary["speed"][name] = {}
        for label, c in (("flip only", 0.0), (f"tta_crop {crop:g}", crop)):
            rec = Recognizer(name, device="cpu", threads=args.threads, tta_crop=c)
            res = benchmark(rec, batch=256, repeats=5)
            summary["speed"][name][label] = res
            print(f"{name}, {label}: classifier {res['classifier']['median']:.0f} faces/s, end to end "
                  f"{res['end_to_end']['median']:.1f} photos/s", flush=True)
    write_summary(args.out, summary)


if __name__ == "__main__":
    run_cli(main, "tta_views")
