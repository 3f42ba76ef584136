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
from ferkit.evaluation.speed import end_to_end_speed, letterbox
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
    res = end_to_end_speed(rec, photos, repeats=args.rounds)
    out = {"photos": [p.name for p in paths], "size": res["size"], "faces_per_round": res["faces"],
           "rounds": args.rounds, "threads": args.threads, "detector": args.detector, "model": rec.model.source,
           "photos_per_s_predict": round(res["median"], 1), "ms_per_photo_predict": round(1000 / res["median"], 1),
           "ms_per_photo_stages": res["ms_per_photo"],
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
