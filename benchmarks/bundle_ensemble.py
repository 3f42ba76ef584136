"""Ship an ensemble of trained models as one bundled model, scored on PublicTest.

    python benchmarks/bundle_ensemble.py FILE_STEM MODEL [MODEL ...] [--results NAME]

Each MODEL is a model.pt, a run directory or a bundled model name; they must share labels and
input. The ensemble averages their probabilities (``ferkit.engine.model_io.Ensemble``), with
flip averaging. Writes src/ferkit/weights/<stem>.pt and its model card, and
results/<NAME>/ (default: the stem) with the PublicTest metrics JSON, confusion matrix and
reliability diagram with and without flip, each member's own PublicTest figures, the members'
sources and the git commit.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from ferkit.atomic import atomic_write_text
from ferkit.engine.checkpoint import save_checkpoint
from ferkit.engine.model_io import make_ensemble, resolve_model_path
from ferkit.evaluation.evaluate import evaluate_model

from _common import FER2013, REPO, environment, headline, results_dir, write_json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stem")
    ap.add_argument("models", nargs="+")
    ap.add_argument("--results", default=None)
    ap.add_argument("--description", default="")
    ap.add_argument("--limits", nargs="*", default=[])
    args = ap.parse_args()
    out = results_dir(args.results or args.stem)
    members = {}
    with tempfile.TemporaryDirectory() as tmp:
        for k, m in enumerate(args.models):
            mm = evaluate_model(m, "fer2013", FER2013, "PublicTest", Path(tmp) / f"m{k}.json", tta_flip=True)
            members[str(m)] = {"file": str(resolve_model_path(m)), "publictest_flip": headline(mm)}
            print(f"member {m}: PublicTest accuracy with flip {mm['accuracy']:.4f}", flush=True)
    ens = make_ensemble(args.models)
    weights = REPO / "src" / "ferkit" / "weights" / f"{args.stem}.pt"
    save_checkpoint(ens, weights)
    summary = {}
    for flip in (False, True):
        name = "publictest_flip" if flip else "publictest"
        mm = evaluate_model(weights, "fer2013", FER2013, "PublicTest", out / f"{name}.json", tta_flip=flip)
        summary[name] = headline(mm)
        print(f"ensemble, flip={flip}: accuracy {mm['accuracy']:.4f}  macro-F1 {mm['macro_f1']:.4f}", flush=True)
    ens["metrics"] = summary["publictest_flip"]
    save_checkpoint(ens, weights)
    n_params = sum(int(v.numel()) for c in ens["members"] for v in c["state_dict"].values()
                   if hasattr(v, "numel") and v.is_floating_point())
    card = {
        "description": args.description,
        "kind": "ensemble (mean of the members' probabilities), flip-averaged",
        "members": [{"model": c["model"], "method": c["method"], **members[str(m)]}
                    for m, c in zip(args.models, ens["members"])],
        "parameters": n_params,
        "preprocess": ens["preprocess"],
        "training_data": "FER2013 Training (28,709 faces), each member selected on PublicTest (3,589 faces)",
        "publictest": summary["publictest_flip"],
        "publictest_without_flip": summary["publictest"],
        "size_mb": round(weights.stat().st_size / 2**20, 2),
        "known_limits": args.limits,
        "results": str(out.relative_to(REPO)),
    }
    atomic_write_text(weights.with_suffix(".json"), json.dumps(card, indent=2) + "\n")
    write_json(out / "summary.json", {"summary": summary, "members": members, "environment": environment(),
                                      "weights": str(weights.relative_to(REPO))})
    print(f"wrote {weights} ({card['size_mb']} MB), its card and {out}")


if __name__ == "__main__":
    main()
