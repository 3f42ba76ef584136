"""Ship a trained run as a bundled model: src/ferkit/weights/<file>.pt plus its model card JSON.

    python benchmarks/bundle_model.py RESULTS_DIR FILE_STEM [--tta-flip] [--half | --int8] [--model FILE]

RESULTS_DIR is a benchmark's results folder holding model.pt, config.yaml, meta.json and
summary.json (e.g. results/ce_fer2013_baseline). The card records the data, the config, the
PublicTest metrics and the commit the weights were trained at; ferkit.zoo merges it
into the registry's card.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from ferkit.atomic import atomic_write_text
from ferkit.engine.checkpoint import load_checkpoint, save_checkpoint
from ferkit.engine.model_io import load_model
from ferkit.inference.onnx_engine import export_onnx
from ferkit.models.pretrained import PRETRAINED, WEIGHTS_DIR

from _common import FER2013, REPO


def _calibration(ck: dict, summary: dict, key: str) -> dict:
    """Temperature scaling (benchmarks/calibrate_model.py), when the model was calibrated."""
    if "calibration" not in ck:
        return {}
    return {"calibration": {**ck["calibration"], "publictest_ece_before": summary["uncalibrated"][key]["ece"],
                            "publictest_ece_after": summary[key]["ece"],
                            "holdout_ece_before": summary["holdout_before"]["ece"],
                            "holdout_ece_after": summary["holdout_after"]["ece"]}}


def _calibration_faces(res: Path, n: int = 512):
    """512 of the run's own training faces (stratified, seed 0; never its holdout or PublicTest)."""
    import numpy as np

    from ferkit.data.splits import subsample
    from ferkit.engine.config import load_config
    from ferkit.engine.data import load_run_data

    run_cfg = load_config(res / "config.yaml", ["data.teacher=null"])  # the faces matter here, not the targets
    train, _, _ = load_run_data(run_cfg)
    return np.asarray(train.images)[subsample(train.labels, n, seed=0)]


def _initial_weights(cfg: dict) -> dict:
    """Where the weights training started from came from: a shipped backbone's card, or random init."""
    name = (cfg.get("model") or {}).get("pretrained")
    if not name:
        return {"initial_weights": "random (trained from scratch)"}
    spec = PRETRAINED.get(str(name))
    if spec is None:
        return {"initial_weights": f"user file {name}"}
    card = json.loads((WEIGHTS_DIR / spec["file"]).with_suffix(".json").read_text())
    keep = ("name", "description", "origin", "source", "licence", "training_data_terms", "converted_by")
    return {"initial_weights": {k: card[k] for k in keep if k in card}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path)
    ap.add_argument("stem")
    ap.add_argument("--tta-flip", action="store_true", help="average with the mirrored face at inference")
    ap.add_argument("--description", default="")
    ap.add_argument("--limits", nargs="*", default=[])
    ap.add_argument("--half", action="store_true", help="store the parameters as float16")
    ap.add_argument("--int8", action="store_true", help="ship a static int8 ONNX file (calibrated on 512 Training "
                    "faces of the run's own training rows) instead of the .pt")
    ap.add_argument("--model", type=Path, default=None, help="the weights to ship (default RESULTS_DIR/model.pt), "
                    "e.g. an already bundled .pt shipped again as int8 ONNX")
    args = ap.parse_args()
    res = args.results
    source = args.model or res / "model.pt"
    ck = load_checkpoint(source)
    ck["preprocess"]["tta_flip"] = bool(args.tta_flip)
    if args.half:  # half the file; BatchNorm statistics stay float32 (load_state_dict casts back on load)
        params = {k for k, _ in load_model(source, "cpu").net.named_parameters()}
        ck["state_dict"] = {k: (v.half() if k in params and v.is_floating_point() else v)
                            for k, v in ck["state_dict"].items()}
        ck["weights_dtype"] = "float16 parameters, float32 buffers"
    out = REPO / "src" / "ferkit" / "weights" / f"{args.stem}.pt"
    save_checkpoint(ck, out)
    if args.int8:  # the shipped file is the static int8 ONNX export; the .pt was only its source
        pt = out
        out = export_onnx(pt, out.with_suffix(".onnx"), quantize="int8", calibration=_calibration_faces(res))
        pt.unlink()
        ck["weights_dtype"] = "int8 weights, uint8 activations (static QDQ ONNX, 512 Training faces calibrating)"
        if args.model is not None:
            ck["weights_dtype"] += f", quantised from {args.model.name}"
        from ferkit.evaluation.evaluate import evaluate_model  # int8 ships only where it holds accuracy: measure it

        int8 = evaluate_model(out, "fer2013", FER2013, "PublicTest", res / f"publictest_int8_{args.stem}.json",
                              device="cpu")
        int8_metrics = {k: int8[k] for k in ("accuracy", "macro_f1", "ece", "nll") if k in int8}
    summary = json.loads((res / "summary.json").read_text())
    meta = json.loads((res / "meta.json").read_text())
    cfg = yaml.safe_load((res / "config.yaml").read_text())
    key = "publictest_flip" if args.tta_flip else "publictest"
    card = {
        "description": args.description,
        "trained_with": f"ferkit train configs/{cfg['name']}.yaml"
                        + (" then benchmarks/calibrate_model.py" if "calibration" in ck else
                           " (benchmarks/ce_baseline.py --config ...)"),
        "method": cfg["method"],
        "model": ck["model"],
        "preprocess": ck["preprocess"],
        "training_data": f"FER2013 Training ({meta['num_train']} faces), "
                         + (summary.get("selection") or f"selected on PublicTest ({meta['num_val']} faces)"),
        "epochs": summary["epochs"], "best_epoch": summary["best_epoch"],
        "publictest": summary[key],
        "publictest_without_flip": summary["publictest"],
        **({"publictest_int8": int8_metrics} if args.int8 else {}),
        "trained_at_commit": meta["git_commit"],
        "size_mb": round(out.stat().st_size / 2**20, 2),
        "weights_dtype": ck.get("weights_dtype", "float32"),
        "known_limits": args.limits,
        **_calibration(ck, summary, key), **_initial_weights(cfg),
        "results": str(res.relative_to(REPO) if res.is_absolute() else res),
    }
    atomic_write_text(out.with_suffix(".json"), json.dumps(card, indent=2) + "\n")
    print(f"wrote {out} ({card['size_mb']} MB) and its card; PublicTest accuracy {card['publictest']['accuracy']:.4f}")


if __name__ == "__main__":
    main()
