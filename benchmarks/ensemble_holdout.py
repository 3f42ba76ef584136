"""Does an ensemble beat its best member? Measured on a held-out split of Training, not on PublicTest.

    python benchmarks/ensemble_holdout.py CONFIG MODEL [MODEL ...] --out NAME [--no-publictest] [--views shipped]

CONFIG is a training config with ``data.holdout`` (e.g. configs/ce_fer2013_default_0.yaml); its
held-out faces are the split every member must have been kept away from (the same ``data.holdout``
and ``data.holdout_seed`` in each member's own config: checkpoints do not carry their data split,
so the caller vouches for it). Each MODEL is a model.pt, a run directory or a bundled name.

Scores each member and the ensemble (the mean of the members' flip-averaged probabilities, what
``ferkit.engine.model_io.Ensemble`` computes; ``--views shipped``: each member's own test-time views,
e.g. one pass for the 48 px ``fast`` models) on those faces: accuracy, macro-F1, NLL, ECE, and
how often the members agree, and, against the first member (list the current model first), the faces
only one of the two gets right with an exact McNemar p-value: whether a gain of a few faces is more
than chance. This is the figure to choose on; PublicTest is scored too (unless ``--no-publictest``),
for the report only. Writes results/NAME/summary.json.
"""

from __future__ import annotations

import argparse
import math
import os

import numpy as np

from ferkit.data import load_dataset
from ferkit.engine.config import load_config
from ferkit.engine.data import HOLDOUT, load_run_data
from ferkit.engine.model_io import load_model
from ferkit.errors import InputError
from ferkit.metrics import compute_metrics

from _common import FER2013, REPO, headline, run_cli, write_summary


def mcnemar(ref_right: np.ndarray, other_right: np.ndarray) -> dict:
    """Paired comparison on the same faces: how many only the reference / only the other gets right,
    and the exact two-sided McNemar p-value (a binomial test on those discordant faces)."""
    ref_only = int((ref_right & ~other_right).sum())
    other_only = int((other_right & ~ref_right).sum())
    n = ref_only + other_only
    tail = sum(math.comb(n, i) for i in range(min(ref_only, other_only) + 1)) / 2 ** n if n else 1.0
    return {"reference_only": ref_only, "other_only": other_only, "p_mcnemar": min(1.0, 2 * tail)}


def score(probs: list[np.ndarray], labels, classes) -> dict:
    """Each member's metrics, the ensemble's, the share of faces on which all members agree, and each
    other member and the ensemble against member 0, face by face."""
    out = {f"member_{k}": headline(compute_metrics(p, labels, classes))
           for k, p in enumerate(probs)}
    mean = np.mean(probs, axis=0)
    out["ensemble"] = headline(compute_metrics(mean, labels, classes))
    votes = np.stack([p.argmax(1) for p in probs])
    out["members_agree"] = float((votes == votes[0]).all(0).mean())
    labels = np.asarray(labels)
    right = votes == labels
    others = {f"member_{k}": right[k] for k in range(1, len(probs))}
    others["ensemble"] = mean.argmax(1) == labels
    out["vs_member_0"] = {name: mcnemar(right[0], r) for name, r in others.items()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("models", nargs="+")
    ap.add_argument("--out", required=True)
    ap.add_argument("--no-publictest", action="store_true")
    ap.add_argument("--views", choices=("flip", "shipped"), default="flip",
                    help="flip: every member flip-averaged (no crops); shipped: as each member's preprocessing says")
    args = ap.parse_args()
    os.chdir(REPO)
    cfg = load_config(args.config)
    if cfg["data"].get("val_split") != HOLDOUT or not cfg["data"].get("holdout"):
        raise InputError(f"{args.config} holds nothing out of Training (data.holdout + val_split: holdout)")
    cfg["data"]["teacher"] = None  # only the held-out faces are wanted; no distillation targets
    _, holdout, _ = load_run_data(cfg)
    models = [load_model(m, device="cpu") for m in args.models]
    classes = models[0].classes
    if any(tuple(m.classes) != tuple(classes) for m in models):
        raise InputError("the members predict different labels; cannot ensemble")
    splits = {"holdout": holdout}
    if not args.no_publictest:
        splits["publictest"] = load_dataset(cfg["data"]["dataset"], FER2013, "PublicTest")
    summary = {"config": args.config, "members": [m.source for m in models], "views": args.views,
               "holdout": f"data.holdout={cfg['data']['holdout']} of {cfg['data']['train_split']}, "
                          f"seed {cfg['data'].get('holdout_seed', 0)} ({len(holdout)} faces)"}
    for name, data in splits.items():
        probs = [m.predict_probs(data.images, tta_flip=True, tta_crop=0.0) if args.views == "flip"
                 else m.predict_probs(data.images) for m in models]
        summary[name] = score(probs, data.labels, classes)
        accs = ", ".join(f"{summary[name][f'member_{k}']['accuracy']:.4f}" for k in range(len(models)))
        print(f"{name}: members {accs}; ensemble {summary[name]['ensemble']['accuracy']:.4f} "
              f"(macro-F1 {summary[name]['ensemble']['macro_f1']:.4f}); all agree on "
              f"{summary[name]['members_agree']:.1%}", flush=True)
        for other, test in summary[name]["vs_member_0"].items():
            print(f"  {other} vs member_0: right only by {other} {test['other_only']}, only by member_0 "
                  f"{test['reference_only']}, McNemar p = {test['p_mcnemar']:.3f}", flush=True)
    write_summary(args.out, summary)


if __name__ == "__main__":
    run_cli(main, "ensemble_holdout")
