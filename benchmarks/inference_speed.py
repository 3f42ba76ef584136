"""End-to-end speed of ``Recognizer.predict`` on 640x480 photos: detect + align + classify.

Photos: the shipped examples (and, with ``--photos DIR``, every image there) letterboxed to
640x480. Reports photos per second and the time of each stage, with ``--threads`` CPU threads
for torch and onnxruntime. Appends a record to results/inference/speed.json. Run it with and without
``OMP_WAIT_POLICY=PASSIVE`` (the CLI sets it) to see what spinning OpenMP threads cost on a busy CPU.

    PYTHONPATH=src python benchmarks/inference_speed.py --model runs/ce_fer2013_baseline_0
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import ferkit
from ferkit import examples
from ferkit.evaluation.speed import letterbox
from ferkit.inference.sources import IMAGE_EXTS, load_image


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="default")
    ap.add_argument("--photos", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--detector", default="retinaface")
    ap.add_argument("--out", type=Path, default=Path("results/inference/speed.json"))
    args = ap.parse_args()

    paths = [examples.path(n) for n in examples.names()]
    if args.photos:
        paths += sorted(p for p in args.photos.iterdir() if p.suffix.lower() in IMAGE_EXTS)
    photos = [letterbox(load_image(p)) for p in paths]
    rec = ferkit.Recognizer(args.model, device="cpu", detector=args.detector, threads=args.threads)
    for img in photos:  # warm-up
        rec.predict(img)
    n_faces = sum(len(rec.predict(img)) for img in photos)
    t_det = t_align = t_cls = 0.0
    t0 = time.perf_counter()
    for _ in range(args.rounds):
        for img in photos:
            a = time.perf_counter()
            faces = rec.detector.detect(img)
            b = time.perf_counter()
            crops = rec._crops(img, faces)
            c = time.perf_counter()
            rec._classify(crops)
            d = time.perf_counter()
            t_det, t_align, t_cls = t_det + b - a, t_align + c - b, t_cls + d - c
    total = time.perf_counter() - t0
    n = args.rounds * len(photos)
    e2e_t = time.perf_counter()
    for _ in range(args.rounds):
        for img in photos:
            rec.predict(img)
    e2e = time.perf_counter() - e2e_t
    out = {"photos": [p.name for p in paths], "size": "640x480", "faces_per_round": n_faces,
           "rounds": args.rounds, "threads": args.threads, "detector": args.detector, "model": rec.model.source,
           "photos_per_s_predict": round(n / e2e, 1), "ms_per_photo_predict": round(1000 * e2e / n, 1),
           "ms_per_photo_stages": {"detect": round(1000 * t_det / n, 1), "align": round(1000 * t_align / n, 2),
                                   "classify": round(1000 * t_cls / n, 2), "sum": round(1000 * total / n, 1)},
           "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset)"),
           "load_avg_1min": round(os.getloadavg()[0], 2), "cpu_count": os.cpu_count()}
    out["when"] = time.strftime("%Y-%m-%d %H:%M")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    runs = json.loads(args.out.read_text())["runs"] if args.out.is_file() else []
    args.out.write_text(json.dumps({"what": "Recognizer.predict on 640x480 photos; one record per run of "
                                    "benchmarks/inference_speed.py", "runs": runs + [out]}, indent=2) + "\n")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
