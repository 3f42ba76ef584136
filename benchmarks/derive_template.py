"""Derive the FER2013 alignment template from the data, then check aligned crops against it.

1. Template: RetinaFace on ``--n`` FER2013 Training faces, each upsampled 4x (48 -> 192 px,
   bicubic) and padded with 48 px of mid-gray per side (faces touching the border are found);
   the five landmarks and the box of the best face (score > 0.9) are mapped back into the 48x48
   frame and averaged, then averaged with their mirror image (training flips faces).
2. Check, on ``--n-check`` PublicTest faces (not used for the template): each face is upsampled
   and padded the same way, optionally rotated (``--rotate`` degrees at most, random) and shrunk
   or grown, re-detected and re-aligned to 48x48 with the template. Reported: the Pearson
   correlation of the aligned crop with the original 48x48 image, and (with ``--model``) how often
   the model's top label on the aligned crop equals its label on the original. A plain box crop
   (detector box resized to 48x48) is scored the same way for comparison.

Writes results/template/template.json and prints the constants for ferkit/inference/align.py.

    PYTHONPATH=src python benchmarks/derive_template.py --model runs/ce_fer2013_baseline_0
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np

from ferkit.data import load_dataset
from ferkit.inference.align import Template, align_face
from ferkit.inference.detect import get_detector

UP, PAD = 4, 48
MIRROR = [1, 0, 2, 4, 3]  # landmark order after a horizontal flip


def upsample(img48: np.ndarray, angle: float = 0.0, zoom: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """The face at 192 px on a gray canvas, optionally rotated/zoomed; returns it and the 48->canvas map."""
    big = cv2.resize(img48, (48 * UP, 48 * UP), interpolation=cv2.INTER_CUBIC)
    big = cv2.copyMakeBorder(big, PAD, PAD, PAD, PAD, cv2.BORDER_CONSTANT, value=128)
    m = np.array([[UP, 0, PAD], [0, UP, PAD]], np.float64)  # 48-frame -> canvas
    if angle or zoom != 1.0:
        c = (big.shape[1] / 2, big.shape[0] / 2)
        r = cv2.getRotationMatrix2D(c, angle, zoom)
        big = cv2.warpAffine(big, r, (big.shape[1], big.shape[0]), borderValue=128)
        m = r @ np.vstack([m, [0, 0, 1]])
    return big, m


def to_frame(points: np.ndarray, m: np.ndarray) -> np.ndarray:
    inv = cv2.invertAffineTransform(m)
    return points @ inv[:, :2].T + inv[:, 2]


def derive(images: np.ndarray, det) -> dict:
    lms, boxes = [], []
    for img in images:
        big, m = upsample(img)
        faces = det.detect(big)
        if faces and faces[0].score > 0.9:
            f = faces[0]
            lms.append(to_frame(f.landmarks, m))
            x, y, w, h = f.box
            corners = to_frame(np.array([[x, y], [x + w, y + h]], np.float64), m)
            boxes.append([*corners[0], *(corners[1] - corners[0])])
    lms, boxes = np.array(lms), np.array(boxes)
    mean = lms.mean(0)
    mirrored = mean[MIRROR].copy()
    mirrored[:, 0] = 48 - mirrored[:, 0]
    sym = (mean + mirrored) / 2
    box = boxes.mean(0)
    sym_box = box.copy()
    sym_box[0] = (box[0] + (48 - box[0] - box[2])) / 2
    return {"n_images": len(images), "n_detected": len(lms), "landmarks_mean": mean.round(2).tolist(),
            "landmarks_std": lms.std(0).round(2).tolist(), "landmarks_template": sym.round(2).tolist(),
            "box_mean": box.round(2).tolist(), "box_template": sym_box.round(2).tolist()}


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.astype(np.float64).ravel(), b.astype(np.float64).ravel())[0, 1])


def check(images: np.ndarray, labels: np.ndarray, det, template: Template, model, rotate: float,
          seed: int = 0) -> dict:
    """Aligned crops of FER faces (re-detected on the upsampled face) against the 48x48 originals."""
    rng = np.random.default_rng(seed)
    ways = ("joint", "landmarks", "box", "box_crop_stretched", "ref_shift_2px", "ref_other_face")
    corr: dict[str, list[float]] = {k: [] for k in ways + ("fixed_point_joint",)}
    crops: dict[str, list[np.ndarray]] = {k: [] for k in ways}
    kept = []
    for i, img in enumerate(images):
        angle = float(rng.uniform(-rotate, rotate)) if rotate else 0.0
        zoom = float(rng.uniform(0.8, 1.2)) if rotate else 1.0
        if img.std() == 0:
            continue
        big, _ = upsample(img, angle, zoom)
        faces = det.detect(big)
        if not faces:
            continue
        f = faces[0]
        x, y, w, h = (int(round(v)) for v in f.box)
        out = {m: align_face(big, f.landmarks, f.box, 48, 1, template, m) for m in ("joint", "landmarks", "box")}
        out["box_crop_stretched"] = cv2.resize(big[y:y + h, x:x + w], (48, 48), interpolation=cv2.INTER_AREA)
        out["ref_shift_2px"] = np.roll(img, 2, axis=1)
        out["ref_other_face"] = images[i - 1]
        for k, v in out.items():
            corr[k].append(_corr(img, v))
            crops[k].append(v)
        # fixed point: a crop already in the template's framing comes back (nearly) unchanged
        big2, _ = upsample(out["joint"])
        f2 = det.detect(big2)
        if f2:
            corr["fixed_point_joint"].append(_corr(out["joint"], align_face(big2, f2[0].landmarks, f2[0].box, 48, 1,
                                                                            template, "joint")))
        kept.append(i)
    res: dict = {"rotate_max_deg": rotate, "zoom": [0.8, 1.2] if rotate else [1, 1], "n": len(images),
                 "n_detected": len(kept)}
    for k, v in corr.items():
        v = np.array(v)
        res[k] = {"corr_mean": round(float(v.mean()), 4), "corr_median": round(float(np.median(v)), 4),
                  "frac_corr_gt_0.8": round(float((v > 0.8).mean()), 4)}
    if model is not None:
        p_orig = model.predict_probs(images[kept])
        orig = p_orig.argmax(1)
        sure = p_orig.max(1) > 0.6
        res["original"] = {"accuracy": round(float((orig == labels[kept]).mean()), 4),
                           "frac_top_p_gt_0.6": round(float(sure.mean()), 4)}
        for k in ways:
            pred = model.predict_probs(np.stack(crops[k])).argmax(1)
            res[k]["top1_agreement"] = round(float((pred == orig).mean()), 4)
            res[k]["top1_agreement_when_sure"] = round(float((pred == orig)[sure].mean()), 4)
            res[k]["accuracy"] = round(float((pred == labels[kept]).mean()), 4)
    return res


WAYS = {"joint": "aligned, `joint` (landmarks + box corners; the default)",
        "landmarks": "aligned, `landmarks` only", "box": "aligned, `box` onto the mean box (no rotation)",
        "box_crop_stretched": "detector box stretched to 48x48 (no template)",
        "ref_shift_2px": "reference: the original shifted 2 px", "ref_other_face": "reference: another face"}


def markdown(p: dict) -> str:
    t = p["template"]
    lines = ["# The FER2013 alignment template", "",
             "Written by `benchmarks/derive_template.py` (procedure in its docstring). FER2013 faces are loose "
             "48x48 crops; the template says where RetinaFace's five landmarks and box fall in that frame on average.",
             "", f"Derived from {t['n_detected']} of {t['n_images']} random Training faces (score > 0.9), "
             "mean then averaged with the mirror image (x, y in the 48x48 frame):", "",
             "| point | mean | std | template |", "|---|---|---|---|"]
    for name, m, sd, tp in zip(("right eye", "left eye", "nose", "mouth right", "mouth left"),
                               t["landmarks_mean"], t["landmarks_std"], t["landmarks_template"]):
        lines.append(f"| {name} | {m} | {sd} | {tp} |")
    lines += ["", f"Mean box (x, y, w, h): {t['box_mean']}; template box {t['box_template']}. The landmarks "
              "vary by 3-5 px (std) from face to face: FER2013 crops were cut from detector boxes, not aligned.", "",
              "## Aligned crops against the originals", "",
              "PublicTest faces (not used above), upsampled, re-detected and aligned back to 48x48; "
              "`corr` is the Pearson correlation with the original 48x48 image, `agree` how often the model's "
              f"top label on the crop equals its label on the original, `agree (sure)` the same on the faces whose "
              "original gets a top probability above 0.6, `acc` accuracy against the FER2013 labels "
              f"(model: `{p.get('model')}`).",
              ""]
    for c in p["checks"]:
        head = ("faces as they are" if not c["rotate_max_deg"] else
                f"faces rotated by up to ±{c['rotate_max_deg']:g}° and zoomed {c['zoom'][0]}-{c['zoom'][1]}x first")
        lines += [f"### {head} ({c['n_detected']} of {c['n']} detected)", "",
                  "| crop | corr mean | corr median | corr > 0.8 | agree | agree (sure) | acc |",
                  "|---|---|---|---|---|---|---|"]
        for k, label in WAYS.items():
            r = c[k]
            lines.append(f"| {label} | {r['corr_mean']} | {r['corr_median']} | {r['frac_corr_gt_0.8']} | "
                         f"{r.get('top1_agreement', '')} | {r.get('top1_agreement_when_sure', '')} | "
                         f"{r.get('accuracy', '')} |")
        if "original" in c:
            lines.append(f"| the originals | 1 | 1 | 1 | 1 | 1 | {c['original']['accuracy']} |")
        fp = c["fixed_point_joint"]
        lines += ["", f"Fixed point: an aligned crop, upsampled, re-detected and aligned again, correlates "
                  f"{fp['corr_mean']} (median {fp['corr_median']}) with itself.", ""]
    lines += ["## Reading", "",
              "A correlation above 0.8 with the original is not reachable by any alignment to one template: a shift "
              "of only 2 px already brings the original down to ~0.73, and each FER2013 face sits 3-5 px (std) away "
              "from the mean. What matters is that the model sees the crops as it sees its training faces."]
    if "original" in p["checks"][0]:
        up, rot = p["checks"][0], p["checks"][-1]
        lines += ["", f"With the default `joint` alignment the model's accuracy on re-aligned crops is "
                  f"{up['joint']['accuracy']:.1%} against {up['original']['accuracy']:.1%} on the originals "
                  f"({rot['joint']['accuracy']:.1%} against {rot['original']['accuracy']:.1%} after random rotations "
                  f"and zooms), and it keeps its label on {up['joint']['top1_agreement']:.0%} of the faces "
                  f"({up['joint']['top1_agreement_when_sure']:.0%} of those it is sure of; a 2 px shift of the "
                  f"original alone keeps {up['ref_shift_2px']['top1_agreement']:.0%}). `joint` (landmarks and box "
                  "corners in one fit) is the default because it has the best agreement and accuracy of the three "
                  "alignments here, rotated or not: the box carries FER2013's box-based framing, the landmarks "
                  "the rotation. All three beat stretching the detector box to a square.", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data/fer2013/fer2013_dev.csv.gz")
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--n-check", type=int, default=1500)
    ap.add_argument("--model", default=None, help="run dir or model.pt for the agreement check")
    ap.add_argument("--out", type=Path, default=Path("results/template"))
    ap.add_argument("--markdown-only", action="store_true", help="rewrite template.md from template.json")
    args = ap.parse_args()
    if args.markdown_only:
        (args.out / "template.md").write_text(markdown(json.loads((args.out / "template.json").read_text())))
        return

    det = get_detector("retinaface", score_threshold=0.5, threads=2)
    rng = np.random.default_rng(0)
    t0 = time.time()
    train = load_dataset("fer2013", args.data, "Training")
    train_imgs = train.images[rng.choice(len(train.images), args.n, replace=False)]
    res = derive(train_imgs, det)
    tpl = Template("fer2013", np.array(res["landmarks_template"], np.float32), tuple(res["box_template"]), 48.0)
    print(json.dumps(res), f"{time.time() - t0:.0f}s", flush=True)

    model = None
    if args.model:
        from ferkit.engine.model_io import load_model

        model = load_model(args.model, "cpu")
    test = load_dataset("fer2013", args.data, "PublicTest")
    pick = rng.choice(len(test.images), args.n_check, replace=False)
    checks = [check(test.images[pick], test.labels[pick], det, tpl, model, rot) for rot in (0.0, 20.0)]
    for c in checks:
        print(json.dumps(c), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "template.json").write_text(json.dumps(
        {"template": res, "checks": checks, "model": args.model,
         "procedure": "see the docstring of benchmarks/derive_template.py", "time_s": round(time.time() - t0)},
        indent=2) + "\n")
    (args.out / "template.md").write_text(markdown(json.loads((args.out / "template.json").read_text())))
    lm = ", ".join(f"[{x}, {y}]" for x, y in res["landmarks_template"])
    print(f"np.array([{lm}], np.float32),\n{tuple(res['box_template'])},")


if __name__ == "__main__":
    main()
