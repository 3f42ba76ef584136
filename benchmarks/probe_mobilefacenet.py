"""Frozen-feature linear probes of the vendored MobileFaceNet (issue 15: "check it once more").

The issue's first probe used its 128-d embedding only (36.5 % on PublicTest, dominated by one
constant vector). This looks at what fine-tuning would start from: the pooled 512-d map before
its GDC head, the 128-channel stage before that, and the embedding, each standardised, through
the independent TF.js interpreter of the test suite (tests/tfjs_interpreter.py), against the
shipped MobileNet's 1024-d pooled features on the same faces. Logistic regression (C=0.05).

    python benchmarks/probe_mobilefacenet.py [--train 3000] [--val 1500]

Writes results/pretrained_probe/{probe.json,probe.md,config.json}.
"""

from __future__ import annotations

import argparse
import sys
import time

import cv2
import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from ferkit.data import load_dataset
from ferkit.models import build_model, load_pretrained

from _common import FER2013, REPO, environment, results_dir, write_json

sys.path.insert(0, str(REPO / "tests"))
from tfjs_interpreter import run_graph  # noqa: E402

VENDOR = REPO.parent / "shared" / "vendor" / "human-models-3.0.4" / "models"
MFN = "MobileFaceNet/MobileFaceNet/"
NODES = {"stage 4 (128 ch, 7x7) pooled": MFN + "Conv2d_6_InvResBlock_1/Add",
         "conv 512 (7x7) pooled": MFN + "Conv2d_7/add",
         "embedding 192 (L2-normalised)": "embeddings"}


def upsample(images: np.ndarray, size: int) -> np.ndarray:
    return np.stack([np.repeat(cv2.resize(g, (size, size), interpolation=cv2.INTER_LINEAR)[..., None], 3, -1)
                     for g in images]).astype(np.float64)


def mobilefacenet_features(images: np.ndarray, batch: int = 64) -> dict[str, np.ndarray]:
    out: dict[str, list] = {k: [] for k in NODES}
    for i in range(0, len(images), batch):
        x = (upsample(images[i:i + batch], 112) - 127.5) / 128.0  # RGB, the origin's normalisation
        vals = run_graph(VENDOR / "mobilefacenet.json", x, list(NODES.values()))
        for k, node in NODES.items():
            v = vals[node]
            out[k].append(v.mean(axis=(1, 2)) if v.ndim == 4 else v)
    return {k: np.concatenate(v) for k, v in out.items()}


def mobilenet_features(images: np.ndarray, name: str | None) -> np.ndarray:
    m = build_model("mobilenet_v1", 7, 3, 112)
    if name:
        load_pretrained(m, name)
    m.eval()
    mean = np.array([123.68, 116.779, 103.939])
    feats = []
    with torch.no_grad():
        for i in range(0, len(images), 256):
            x = upsample(images[i:i + 256], 112) - mean
            feats.append(m.embed(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).float()).numpy())
    return np.concatenate(feats)


def probe(xtr: np.ndarray, ytr: np.ndarray, xva: np.ndarray, yva: np.ndarray) -> float:
    sc = StandardScaler().fit(xtr)
    clf = LogisticRegression(max_iter=3000, C=0.05).fit(sc.transform(xtr), ytr)
    return float((clf.predict(sc.transform(xva)) == yva).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=3000)
    ap.add_argument("--val", type=int, default=1500)
    ap.add_argument("--out", default="pretrained_probe")
    args = ap.parse_args()
    out = results_dir(args.out)
    env = environment()  # the code that runs: read now, not after the hour this takes
    write_json(out / "config.json", vars(args))
    tr = load_dataset("fer2013", FER2013, "Training")
    va = load_dataset("fer2013", FER2013, "PublicTest")
    rng = np.random.default_rng(0)
    itr = rng.choice(len(tr.labels), args.train, replace=False)
    iva = rng.choice(len(va.labels), args.val, replace=False)
    xtr, ytr, xva, yva = tr.images[itr], tr.labels[itr], va.images[iva], va.labels[iva]
    rows = []
    t = time.time()
    ftr, fva = mobilefacenet_features(xtr), mobilefacenet_features(xva)
    for k in NODES:
        rows.append({"network": "MobileFaceNet (MS1M)", "features": k, "dim": int(ftr[k].shape[1]),
                     "accuracy": probe(ftr[k], ytr, fva[k], yva),
                     "top_pc_variance": float(np.linalg.svd(ftr[k] - ftr[k].mean(0), compute_uv=False)[0] ** 2
                                              / ((ftr[k] - ftr[k].mean(0)) ** 2).sum())})
        print(rows[-1], f"{time.time() - t:.0f}s", flush=True)
    for name in ("vggface2_mobilenet_v1", "vggface2_mobilenet_v1_faceres", None):
        a, b = mobilenet_features(xtr, name), mobilenet_features(xva, name)
        rows.append({"network": f"MobileNet v1 ({name or 'random weights'})", "features": "pooled 1024",
                     "dim": 1024, "accuracy": probe(a, ytr, b, yva)})
        print(rows[-1], flush=True)
    write_json(out / "probe.json", {"rows": rows, "n_train": args.train, "n_val": args.val,
                                    "environment": env})
    lines = ["| network | features | dim | PublicTest accuracy (linear probe) |", "|---|---|---|---|"]
    lines += [f"| {r['network']} | {r['features']} | {r['dim']} | {100 * r['accuracy']:.1f} % |" for r in rows]
    (out / "probe.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
