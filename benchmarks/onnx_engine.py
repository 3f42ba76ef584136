"""torch vs onnxruntime (fp32 and static int8) on the bundled models: accuracy and faces/s.

For each model: PublicTest accuracy and macro-F1 of each engine (the model's own flip setting),
the largest probability difference from torch and the share of faces whose label changes, and
classifier faces/s: uint8 48x48 crops in, probabilities out, batch 256, 2 threads for both
engines, warm-up excluded, median of ``--repeats`` timed passes over ``--faces`` crops.

    python benchmarks/onnx_engine.py [--models NAME=PATH ...] [--threads 2] [--batch 256]

Writes results/onnx_engine/{onnx_engine.json,onnx_engine.md,config.json}.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from ferkit.evaluation.speed import timed_rate

from _common import FER2013, environment, results_dir, write_json


def faces_per_s(fn, faces: np.ndarray, batch: int, repeats: int) -> dict:
    """Faces/s of ``fn`` over ``faces`` in batches, timed by ferkit's one timer
    (``ferkit.evaluation.speed.timed_rate``): two batches of warm-up, then ``repeats`` passes over all faces."""
    def warm() -> None:
        for i in range(0, min(len(faces), 2 * batch), batch):
            fn(faces[i:i + batch])

    def one_pass() -> int:
        for i in range(0, len(faces), batch):
            fn(faces[i:i + batch])
        return len(faces)

    r = timed_rate(one_pass, repeats, warmup=warm, calls=1)
    return {"median": r["median"], "min": r["min"], "max": r["max"], "repeats": repeats}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=None, help="NAME=PATH (default: every bundled model)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--faces", type=int, default=2048, help="crops per timed pass")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--calib-faces", type=int, default=512, help="int8: Training faces calibrating the ranges")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from ferkit.data import load_dataset
    from ferkit.engine.model_io import load_model
    from ferkit.inference.onnx_engine import OnnxModel, export_onnx
    from ferkit.metrics import compute_metrics
    from ferkit.zoo import list_models

    if args.models is None:
        models = {c["name"]: c["file"] for c in list_models()  # torch models only: the classic SVM has no graph
                  if c.get("available") and str(c["file"]).endswith(".pt")}
    else:
        models = dict(s.split("=", 1) for s in args.models)
    data = load_dataset("fer2013", FER2013, "PublicTest")
    # int8 activation ranges are calibrated on Training faces (never on the PublicTest faces scored here)
    from ferkit.data.splits import subsample

    train = load_dataset("fer2013", FER2013, "Training")
    calibration = np.asarray(train.images)[subsample(train.labels, args.calib_faces, seed=0)]
    out = results_dir("onnx_engine")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in models.items():
            ref = load_model(path, "cpu")
            engines = {"torch": ref}
            for q in (None, "int8"):
                f = export_onnx(ref, Path(tmp) / f"{name}-{q or 'fp32'}.onnx", quantize=q,
                                calibration=calibration if q else None)
                engines[f"onnxruntime {q or 'fp32'}"] = (OnnxModel(f, threads=args.threads), f.stat().st_size)
            p_ref = ref.predict_probs(data.images)
            speed_faces = data.images[np.arange(args.faces) % len(data.images)]
            for eng, obj in engines.items():
                m, size = (obj, Path(ref.source).stat().st_size) if eng == "torch" else obj
                print(f"{name} / {eng} ...", flush=True)
                p = p_ref if eng == "torch" else m.predict_probs(data.images)
                met = compute_metrics(p.astype(np.float64), data.labels, data.classes)
                with torch.inference_mode():
                    spd = faces_per_s(lambda x, m=m: m.predict_probs(x, batch_size=args.batch), speed_faces,
                                      args.batch, args.repeats)
                rows.append({"model": name, "engine": eng, "file_mb": size / 1e6,
                             "tta_flip": bool(ref.preprocess.get("tta_flip")), "accuracy": met["accuracy"],
                             "macro_f1": met["macro_f1"], "max_abs_prob_diff_vs_torch": float(np.abs(p - p_ref).max()),
                             "label_changed_vs_torch": float((p.argmax(1) != p_ref.argmax(1)).mean()),
                             "faces_per_s": spd["median"], "timing": spd})
    report = {"rows": rows, "n": len(data.labels), "split": "PublicTest", "environment": environment()}
    write_json(out / "onnx_engine.json", report)
    write_json(out / "config.json", vars(args))
    lines = ["# torch vs onnxruntime on the bundled models", "",
             f"FER2013 PublicTest ({len(data.labels)} faces); classifier faces/s: uint8 48x48 crops in, "
             f"probabilities out, batch {args.batch}, {args.threads} threads, median of {args.repeats} passes "
             f"over {args.faces} crops (each model's own flip setting, so flip models run twice per face).", "",
             "| model | engine | file MB | accuracy | macro-F1 | max abs Δp vs torch | labels changed | faces/s |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['engine']} | {r['file_mb']:.1f} | {r['accuracy']:.4f} | "
                     f"{r['macro_f1']:.4f} | {r['max_abs_prob_diff_vs_torch']:.1e} | "
                     f"{100 * r['label_changed_vs_torch']:.2f}% | {r['faces_per_s']:.0f} "
                     f"({r['timing']['min']:.0f}–{r['timing']['max']:.0f}) |")
    (out / "onnx_engine.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
