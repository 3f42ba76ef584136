"""The classic route (HOG + LBP + SVM) on all of FER2013 Training, scored on PublicTest, on ONE thread.

    nice -n 19 python benchmarks/classic_baseline.py [--svm linear|rbf] [--c C] [--pca N] [--limit N] [--bundle]

Trains with scikit-image features and scikit-learn (ferkit.classic.train_classic), saves the
model as .npz, scores it with ferkit's evaluate_model (metrics JSON, confusion matrix,
reliability diagram; with and without flip averaging), checks the numpy-only inference against
scikit-learn's own probabilities on the PublicTest faces, and times feature extraction (both
backends), training and inference (faces/s, batch 512 and one face at a time). Writes
results/classic_fer2013/: summary.json (settings, timings, metrics, git commit), the metrics
JSONs and plots, and model.npz. ``--bundle`` also copies the model into src/ferkit/weights/ with
its model card, if it is under 5 MB.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # one thread, set before numpy loads
    os.environ[_var] = "1"

import argparse  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from ferkit.classic import DEFAULT_C, DEFAULT_PCA, extract_features, load_classic, train_classic  # noqa: E402
from ferkit.data import load_dataset  # noqa: E402
from ferkit.evaluation.evaluate import evaluate_model  # noqa: E402

from _common import FER2013, REPO, environment, headline, results_dir, write_json  # noqa: E402

BUNDLE_NAME = "fer2013_hoglbp_svm_48g_7"
BUNDLE_MAX_MB = 5.0


def rate(fn: Callable[[], object], n: int, repeat: int = 1) -> float:
    """Items per second of ``fn()`` over ``n`` items (best of ``repeat``)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return n / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--svm", choices=("linear", "rbf"), default="linear")
    ap.add_argument("--c", type=float, default=None)
    ap.add_argument("--pca", type=int, default=None, help="components (0: none; default per SVM)")
    ap.add_argument("--features", default="hog,lbp")
    ap.add_argument("--limit", type=int, default=None, help="train on a stratified subset (quick checks)")
    ap.add_argument("--out", default="classic_fer2013")
    ap.add_argument("--bundle", action="store_true", help=f"copy into src/ferkit/weights/ if < {BUNDLE_MAX_MB} MB")
    args = ap.parse_args()
    torch.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:
        pass
    out = results_dir(args.out)
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    train = load_dataset("fer2013", FER2013, "Training")
    test = load_dataset("fer2013", FER2013, "PublicTest")
    timings["load_s"] = time.perf_counter() - t0
    if args.limit:
        from ferkit.data import subsample

        train = train.subset(subsample(train.labels, args.limit, 0))
    print(f"FER2013: {len(train)} training faces, {len(test)} PublicTest faces", flush=True)

    pca = "auto" if args.pca is None else args.pca
    features = tuple(f for f in args.features.split(",") if f)
    model, rep = train_classic(train.images, train.labels, train.classes, features=features, svm=args.svm,
                               c=args.c, pca=pca, backend="skimage", progress=lambda m: print(m, flush=True))
    timings.update(features_train_skimage_s=rep.feature_s, fit_s=rep.fit_s)
    model.meta["training"].update(dataset="fer2013", path=str(FER2013.relative_to(REPO.parent)), split="Training",
                                  limit=args.limit)
    path = model.save(out / "model.npz")
    size_mb = path.stat().st_size / 1e6
    model = load_classic(path)  # everything below uses the file, as a user would
    print(f"saved {path} ({size_mb:.2f} MB)", flush=True)

    # numpy-only inference vs scikit-learn's own predict_proba, on the real PublicTest faces
    est = rep.estimators
    feats_test = extract_features(test.images, model.settings)
    z = est["scaler"].transform(feats_test)
    if est["pca"] is not None:
        z = est["pca"].transform(z)
    ref = est["svm"].predict_proba(z)

    # speed: features (both backends), SVM, whole predict_probs; batch 512 and one face at a time
    n = len(test)
    speed = {
        "features_numpy_faces_per_s": rate(lambda: extract_features(test.images, model.settings), n),
        "features_skimage_faces_per_s": rate(lambda: extract_features(test.images[:1000], model.settings,
                                                                      "skimage"), 1000),
        "svm_faces_per_s": rate(lambda: model.probs_from_transformed(model.transform(feats_test)), n),
        "predict_probs_batch512_faces_per_s": rate(lambda: model.predict_probs(test.images, batch_size=512), n),
        "predict_probs_one_face_faces_per_s": rate(lambda: [model.predict_probs(test.images[i:i + 1])
                                                            for i in range(300)], 300),
    }
    timings["features_train_numpy_s_estimated"] = len(train) / speed["features_numpy_faces_per_s"]
    probs = model.predict_probs(test.images)
    max_diff = float(np.abs(probs - ref).max())
    print(f"max |p_numpy - p_sklearn| on PublicTest: {max_diff:.1e}; speed {speed}", flush=True)

    summary: dict = {}
    for flip in (False, True):
        name = "publictest_flip" if flip else "publictest"
        m = evaluate_model(path, "fer2013", FER2013, "PublicTest", out / f"{name}.json", tta_flip=flip)
        summary[name] = headline(m)
        if not flip:
            recall = {c: v["recall"] for c, v in m["per_class"].items()}
            summary["weakest"] = sorted(recall.items(), key=lambda kv: kv[1])[:4]
        print(name, summary[name], flush=True)
    summary.update(
        config={"svm": args.svm, "C": model.meta["svm"]["C"], "pca": model.meta["svm"].get("pca"),
                "default_C": DEFAULT_C[args.svm], "default_pca": DEFAULT_PCA[args.svm],
                "features": model.settings.to_dict(), "calibration": model.meta["svm"]["estimator"],
                "train_faces": len(train), "limit": args.limit, "threads": 1, "feature_backend_train": rep.backend},
        model={"file": "model.npz", "size_mb": round(size_mb, 3), "feature_dim": rep.feature_dim,
               "svm": model.meta["svm"]},
        timings_s={k: round(v, 2) for k, v in timings.items()},
        speed={k: round(v, 1) for k, v in speed.items()},
        numpy_vs_sklearn_max_abs_diff=max_diff,
        port_vs_skimage_max_abs_diff=rep.port_max_abs_diff,
        environment={**environment(), "scikit_learn": _version("sklearn"), "scikit_image": _version("skimage"),
                     "numpy": np.__version__, "nice": os.nice(0)},
    )
    write_json(out / "summary.json", summary)
    print(f"written to {out}", flush=True)
    if args.bundle:
        bundle(path, summary)


def _version(module: str) -> str:
    import importlib

    return importlib.import_module(module).__version__


def bundle(path: Path, summary: dict) -> None:
    """Copy the model into ferkit/weights/ with its model card, if it is small enough to ship."""
    size = summary["model"]["size_mb"]
    if size >= BUNDLE_MAX_MB:
        print(f"not bundled: {size:.1f} MB >= {BUNDLE_MAX_MB} MB", flush=True)
        return
    weights = REPO / "src" / "ferkit" / "weights"
    shutil.copy2(path, weights / f"{BUNDLE_NAME}.npz")
    cfg, pt = summary["config"], summary["publictest"]
    card = {
        "description": "The classic route: HOG + uniform LBP histograms, standardised, a linear SVM with Platt-"
                       "calibrated probabilities (no neural network; numpy-only inference)",
        "trained_with": "python benchmarks/classic_baseline.py --bundle (ferkit.classic.train_classic)",
        "method": {"features": cfg["features"], "svm": summary["model"]["svm"]},
        "preprocess": {"image_size": 48, "channels": 1, "tta_flip": False},
        "training_data": f"FER2013 Training ({cfg['train_faces']} faces); C=0.001 chosen on a hold-out of Training "
                         "(19,000 fit / 9,709 scored), not on PublicTest",
        "publictest": pt,
        "publictest_flip": summary["publictest_flip"],
        "speed_faces_per_s_one_thread": summary["speed"]["predict_probs_batch512_faces_per_s"],
        "trained_at_commit": summary["environment"]["git_commit"],
        "size_mb": size,
        "known_limits": [
            f"PublicTest accuracy {100 * pt['accuracy']:.1f} %, far below the CNN models: a baseline, not a "
            "recogniser to rely on",
            "weak on " + ", ".join(f"{c} ({100 * r:.0f} % recall)" for c, r in summary["weakest"]),
            "hand-made features of FER2013's loose 48x48 grayscale crops; no contempt class",
            "no class activation maps (--cam needs a CNN) and no ONNX export (it already runs on numpy)",
        ],
        "results": "results/classic_fer2013",
    }
    write_json(weights / f"{BUNDLE_NAME}.json", card)
    print(f"bundled as {weights / (BUNDLE_NAME + '.npz')} ({size:.2f} MB) with its card", flush=True)


if __name__ == "__main__":
    main()
