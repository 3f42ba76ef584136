"""ferkit's models against the ``fer`` package (mini-Xception trained on FER2013), on the same faces.

Measured, for ``fer`` and every ferkit model:

- accuracy and macro-F1 on the 3,589 FER2013 PublicTest faces (``ferkit.metrics``),
  with ``fer``'s output columns re-ordered to ferkit's canonical labels (``ferkit.labels``);
- classifier faces/s at batch 256 on 2 threads: preprocessing of the uint8 48x48 crops included,
  warm-up excluded, median of several repeats;
- end-to-end photos/s on 640x480 photos (detect, align, classify): ``ferkit.Recognizer`` for each
  ferkit model, and ``fer``'s own ``FER.detect_emotions`` (OpenCV Haar cascade + its classifier).

How ``fer`` runs here, without TensorFlow: its ``fer/data/emotion_model.hdf5`` is loaded with Keras 3
on the torch backend (``KERAS_BACKEND=torch``), so it runs on the same torch and the same threads as
ferkit. Its input is what ``fer`` itself and the training script of the model's upstream
(oarriaga/face_classification) do: the gray face resized to 64x64 with ``cv2.resize`` and its
default interpolation (``INTER_LINEAR``), then ``(x / 255 - 0.5) * 2``, NHWC (N, 64, 64, 1). The
PublicTest rows are already 48x48 face crops, so no detection, padding or offsets are applied for
the crop benchmarks. When ``ai-edge-litert`` is installed, ``fer``'s *published default* model,
``emotion_model_quantized.tflite``, is measured too (batched through one resized interpreter,
the fastest way to run it). For its full pipeline ``fer.fer`` is imported with two stand-ins
that exist only while it is imported: a ``tensorflow`` module with no Keras (so it falls back
to ``keras``; its ``.lite`` points at ai-edge-litert when that is installed) and
``pkg_resources.resource_filename`` (setuptools >= 81 no longer has ``pkg_resources``).

    pip install -r benchmarks/requirements-compare.txt      # then: pip install --no-deps fer==25.10.3
    python benchmarks/compare_fer.py [--models NAME=PATH ...] [--threads 2] [--batch 256]
        [--repeats 7] [--detectors retinaface,haar] [--wait-load 1.5 --wait-max 1200]

Writes results/compare_fer/{compare_fer.json,compare_fer.md,config.json}.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.resources
import importlib.util
import os
import platform
import sys
import time
import types
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from ferkit.evaluation.speed import timed_rate
from ferkit.labels import canonical, match_labels

from _common import FER2013, REPO, environment, results_dir, write_json

NAME = "compare_fer"
#: fer's output columns, in its order (fer.fer.FER._get_labels)
FER_CLASSES: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
FER_SIZE = 64
FER_PREPROCESS = ("gray uint8 face -> cv2.resize to 64x64 (default INTER_LINEAR, as fer.detect_emotions and the "
                  "upstream training script do) -> float32 (x / 255 - 0.5) * 2 -> NHWC (N, 64, 64, 1)")
PHOTO_W, PHOTO_H = 640, 480
BASELINE_RUN = REPO / "runs" / "ce_fer2013_baseline_0"
#: issue 15's goals, by the role a bundled model plays (its alias); other models are only compared with fer
ROLE_GOALS: dict[str, dict[str, float]] = {
    "default": {"accuracy": 0.70, "macro_f1": 0.66, "photos_per_s": 30.0},
    "fast": {"accuracy": 0.67, "faces_per_s_vs_fer_tflite": 2.0},
}


# ---- settings, machine ------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="*", default=None, metavar="NAME=PATH",
                    help="ferkit run dirs / model.pt files (default: the baseline run and the bundled models)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=7, help="timed repeats; the median is reported")
    ap.add_argument("--min-repeat-s", type=float, default=1.0, help="each repeat runs at least this long")
    ap.add_argument("--warmup", type=int, default=2, help="untimed calls before timing")
    ap.add_argument("--detectors", default="retinaface,haar", help="Recognizer detectors for end-to-end")
    ap.add_argument("--data", default=str(FER2013))
    ap.add_argument("--split", default="PublicTest")
    ap.add_argument("--fer-model", default=None, help="fer's .hdf5 (default: the one inside the fer package)")
    ap.add_argument("--no-tflite", action="store_true", help="skip fer's quantized .tflite even if it can run")
    ap.add_argument("--no-e2e", action="store_true", help="skip the end-to-end photos/s part")
    ap.add_argument("--wait-load", type=float, default=0.0,
                    help="before timing, wait until the 1-minute load average is below this (0: do not wait)")
    ap.add_argument("--wait-max", type=float, default=1200.0, help="give up waiting after this many seconds")
    ap.add_argument("--out", default=None, help="output folder (default results/compare_fer)")
    return ap.parse_args(argv)


def loadavg() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def wait_for_quiet(max_load: float, max_wait: float) -> dict[str, Any]:
    """Wait (polling every 30 s) until the 1-minute load is below ``max_load``: timings on a busy
    2-core machine say more about the other job than about the models."""
    t0 = time.time()
    while os.getloadavg()[0] >= max_load and time.time() - t0 < max_wait:
        print(f"load {loadavg()} >= {max_load}; waiting ({time.time() - t0:.0f}/{max_wait:.0f} s)", flush=True)
        time.sleep(30)
    quiet = os.getloadavg()[0] < max_load
    if not quiet:
        print(f"machine never got below load {max_load} in {max_wait:.0f} s; timing anyway", flush=True)
    return {"wanted_below": max_load, "waited_s": round(time.time() - t0, 1), "quiet": quiet, "load": loadavg()}


def set_threads(n: int) -> None:
    torch.set_num_threads(n)
    with contextlib.suppress(RuntimeError):  # only settable before any inter-op work
        torch.set_num_interop_threads(n)
    cv2.setNumThreads(n)


def package_versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for pkg in ("ferkit", "torch", "numpy", "keras", "h5py", "fer", "ai-edge-litert", "opencv-python-headless",
                "onnxruntime", "tensorflow"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


# ---- timing -------------------------------------------------------------------------------------
def throughput(step: Callable[[], Any], units: int, repeats: int, min_repeat_s: float, warmup: int) -> dict:
    """Units per second of ``step`` (which handles ``units`` items), timed by ferkit's one timer
    (``ferkit.evaluation.speed.timed_rate``): ``warmup`` untimed calls, then ``repeats`` timed repeats
    of k calls each, k chosen so a repeat lasts ``min_repeat_s``; reported as this benchmark always has."""
    def call() -> int:
        step()
        return units

    r = timed_rate(call, repeats, min_repeat_s, warmup=max(1, warmup), calls="calibrate")
    return {"median": r["median"], "min": r["min"], "max": r["max"], "repeats": repeats,
            "calls_per_repeat": r["calls_per_repeat"], "units_per_call": units,
            "rates": [round(x, 2) for x in r["rates"]], "load_before": r["load_before"], "load_after": r["load_after"]}


# ---- classifiers ---------------------------------------------------------------------------------
def fer_data_file(name: str) -> Path:
    spec = importlib.util.find_spec("fer")
    if spec is None:
        raise ImportError("the fer package is not installed (pip install --no-deps fer==25.10.3)")
    return Path(str(importlib.resources.files("fer") / "data" / name))


def fer_column_order(target: tuple[str, ...]) -> list[int]:
    """For each label in ``target``, fer's column (fer's names mapped through ``ferkit.labels.canonical``)."""
    fer_canonical = [canonical(c) for c in FER_CLASSES]
    cols = match_labels(target, fer_canonical)
    missing = [t for t, c in zip(target, cols) if c < 0]
    if missing:
        raise ValueError(f"fer has no output for {missing}")
    return cols


def fer_preprocess(faces: np.ndarray) -> np.ndarray:
    """uint8 gray faces (N, H, W) -> float32 (N, 64, 64, 1), exactly as fer prepares a face."""
    x = np.empty((len(faces), FER_SIZE, FER_SIZE), np.float32)
    for i, f in enumerate(faces):
        x[i] = cv2.resize(f, (FER_SIZE, FER_SIZE))  # cv2's default interpolation: INTER_LINEAR
    x /= 255.0
    x -= 0.5
    x *= 2.0
    return x[..., None]


class FerKeras:
    """fer's emotion_model.hdf5 on Keras 3 / torch; ``probs`` has the columns in ``classes`` order."""

    kind = "fer (Keras 3 on torch, emotion_model.hdf5)"

    def __init__(self, path: Path, classes: tuple[str, ...]) -> None:
        import keras

        self.backend = keras.backend.backend()
        self.model = keras.models.load_model(str(path), compile=False)
        self.source = str(path)
        self.params = int(self.model.count_params())
        self.cols = fer_column_order(classes)
        self.input = "64x64 gray, (x/255-0.5)*2"

    def probs(self, faces: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(fer_preprocess(faces))
        with torch.inference_mode():
            y = self.model([x], training=False)
        y = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
        return y[:, self.cols]


class FerTFLite:
    """fer's published default model (emotion_model_quantized.tflite) via ai-edge-litert, batched."""

    kind = "fer (TFLite, emotion_model_quantized.tflite, ai-edge-litert)"

    def __init__(self, path: Path, classes: tuple[str, ...], threads: int) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.it = Interpreter(model_path=str(path), num_threads=threads)
        self.it.allocate_tensors()
        self.inp = self.it.get_input_details()[0]["index"]
        self.out = self.it.get_output_details()[0]["index"]
        self.batch = 1
        self.source = str(path)
        self.params = None
        self.cols = fer_column_order(classes)
        self.input = "64x64 gray, (x/255-0.5)*2"

    def probs(self, faces: np.ndarray) -> np.ndarray:
        x = fer_preprocess(faces)
        if len(x) != self.batch:
            self.it.resize_tensor_input(self.inp, list(x.shape))
            self.it.allocate_tensors()
            self.batch = len(x)
        self.it.set_tensor(self.inp, x)
        self.it.invoke()
        return np.array(self.it.get_tensor(self.out))[:, self.cols]


class FerkitModel:
    """A ferkit run dir / model.pt; ``probs`` re-ordered (and renormalised) to ``classes``."""

    kind = "ferkit"

    def __init__(self, path: str | Path, classes: tuple[str, ...], batch: int) -> None:
        from ferkit.engine.model_io import load_model

        self.m = load_model(path, device="cpu")
        self.source = self.m.source
        self.batch = batch
        net = getattr(self.m, "net", None)  # the classic HOG/LBP + SVM model has no network
        self.params = int(sum(p.numel() for p in net.parameters())) if net is not None else 0
        p = self.m.preprocess
        self.input = (f"{p['image_size']}x{p['image_size']} {'gray' if int(p['channels']) == 1 else 'RGB'}, "
                      f"(x/255-{p['mean']})/{p['std']}{', flip TTA' if p.get('tta_flip') else ''}")
        self.cols = match_labels(classes, self.m.classes)
        if min(self.cols) < 0:
            missing = [c for c, i in zip(classes, self.cols) if i < 0]
            raise ValueError(f"model {path} has no output for {missing}")
        self.identity = list(self.cols) == list(range(len(self.m.classes)))

    def probs(self, faces: np.ndarray) -> np.ndarray:
        p = self.m.predict_probs(faces, batch_size=self.batch)
        if self.identity:
            return p
        p = p[:, self.cols]
        return p / p.sum(1, keepdims=True)


def default_models() -> dict[str, str]:
    """The baseline run and the bundled models that exist now; nothing that is absent."""
    out: dict[str, str] = {}
    if any((BASELINE_RUN / f).is_file() for f in ("model.pt", "checkpoints/best.pt", "checkpoints/last.pt")):
        out[BASELINE_RUN.name] = str(BASELINE_RUN)
    try:
        from ferkit.zoo import WEIGHTS_DIR, list_models
    except ImportError as exc:
        print(f"ferkit.zoo not importable ({exc}); no bundled models", flush=True)
        return out
    for card in list_models():
        if card.get("available"):
            out[card["name"]] = card["file"]
    seen = {str(Path(p).resolve()) for p in out.values()}
    for pt in sorted(Path(WEIGHTS_DIR).glob("*.pt")):
        if str(pt.resolve()) not in seen and not pt.stem.startswith("backbone_"):  # backbones are no FER models
            out[pt.stem] = str(pt)
    return out


def selection_of(models: dict[str, str]) -> dict[str, str]:
    """How each ferkit model was selected, from its model card (bundled models) or "unknown"."""
    from ferkit.zoo import ALIASES, MODELS, model_card

    out = {}
    for name, path in models.items():
        key = name if name in MODELS or name in ALIASES else next(
            (n for n in MODELS if Path(model_card(n)["file"]).resolve() == Path(path).resolve()), None)
        card = model_card(key) if key else {}
        data = str(card.get("training_data", ""))
        out[name] = data or "unknown (not a bundled model)"
    return out


def roles_of(models: dict[str, str]) -> dict[str, list[str]]:
    """The aliases (default, fast, ...) of each bundled model among ``models``, by weight file."""
    from ferkit.zoo import list_models

    by_file = {str(Path(c["file"]).resolve()): c.get("aliases", []) for c in list_models()}
    return {name: list(by_file.get(str(Path(path).resolve()), [])) for name, path in models.items()}


def parse_models(specs: list[str] | None) -> dict[str, str]:
    if specs is None:
        return default_models()
    out = {}
    for s in specs:
        name, sep, path = s.partition("=")
        if not sep:
            path, name = s, Path(s).stem if Path(s).is_file() else Path(s).name
        out[name] = path
    return out


def accuracy_row(clf: Any, images: np.ndarray, labels: np.ndarray, classes: tuple[str, ...], batch: int) -> dict:
    from ferkit.metrics import compute_metrics

    probs = np.concatenate([clf.probs(images[i:i + batch]) for i in range(0, len(images), batch)])
    m = compute_metrics(probs.astype(np.float64), labels, classes)
    return {"n": m["n"], "accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
            "mean_class_accuracy": m["mean_class_accuracy"], "nll": m["nll"],
            "per_class_f1": {c: v["f1"] for c, v in m["per_class"].items()},
            "confusion_matrix": m["confusion_matrix"]}


# ---- end to end ------------------------------------------------------------------------------------
def _example(name: str) -> np.ndarray | None:
    try:
        path = importlib.resources.files("ferkit.examples") / name
        bgr = cv2.imread(str(path))
    except (ModuleNotFoundError, FileNotFoundError):
        bgr = None
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _paste(canvas: np.ndarray, img: np.ndarray, x: int, y: int) -> np.ndarray:
    h, w = img.shape[:2]
    canvas[y:y + h, x:x + w] = img
    return canvas


def make_photos() -> list[dict[str, Any]]:
    """A few 640x480 RGB photos built from the shipped astronaut (skimage's as a fallback):
    letterboxed, small on a cluttered background, mirrored and large, and two faces side by side."""
    astro = _example("astronaut.jpg")
    if astro is None:
        from skimage import data

        astro = data.astronaut()
    pair = _example("astronaut_pair.jpg")
    if pair is None:
        pair = np.concatenate([astro, astro[:, ::-1]], 1)
        pair = cv2.resize(pair, (640, 320), interpolation=cv2.INTER_AREA)
    coffee = _example("coffee.jpg")
    gray = np.full((PHOTO_H, PHOTO_W, 3), 118, np.uint8)

    def fit(img: np.ndarray, side: int) -> np.ndarray:
        return cv2.resize(img, (side, side * img.shape[0] // img.shape[1]), interpolation=cv2.INTER_AREA)

    bg = (cv2.resize(coffee, (PHOTO_W, PHOTO_H), interpolation=cv2.INTER_LINEAR) if coffee is not None
          else cv2.GaussianBlur(cv2.resize(astro, (PHOTO_W, PHOTO_H)), (31, 31), 0))
    pr = fit(pair, 640)
    photos = [
        ("astronaut_letterbox", _paste(gray.copy(), fit(astro, 480), 80, 0), 1),
        ("astronaut_small_on_coffee", _paste(bg.copy(), fit(astro, 300), 40, 120), 1),
        ("astronaut_mirror_400", _paste(gray.copy(), fit(astro[:, ::-1], 400), 220, 40), 1),
        ("astronaut_pair", _paste(gray.copy(), pr, 0, (PHOTO_H - pr.shape[0]) // 2), 2),
    ]
    return [{"name": n, "rgb": np.ascontiguousarray(img), "faces": k} for n, img, k in photos]


@contextlib.contextmanager
def fer_import_shims() -> Iterator[dict[str, str]]:
    """Stand-ins that let ``fer.fer`` import without TensorFlow or ``pkg_resources``; removed afterwards.

    fer 25.10.3 imports ``tensorflow`` (for ``tf.lite`` only), then ``tensorflow.keras`` and falls back
    to ``keras``; it finds its files with ``pkg_resources.resource_filename``."""
    stubs: dict[str, types.ModuleType] = {}
    notes: dict[str, str] = {}
    if importlib.util.find_spec("tensorflow") is None:
        tf = types.ModuleType("tensorflow")
        if importlib.util.find_spec("ai_edge_litert") is not None:
            from ai_edge_litert.interpreter import Interpreter

            tf.lite = types.SimpleNamespace(Interpreter=Interpreter)
            notes["tensorflow"] = "stub module; tf.lite.Interpreter = ai_edge_litert.interpreter.Interpreter"
        else:
            notes["tensorflow"] = "stub module without tf.lite (fer's TFLite path unavailable)"
        stubs["tensorflow"] = tf
    if importlib.util.find_spec("pkg_resources") is None:
        pr = types.ModuleType("pkg_resources")
        pr.resource_filename = lambda pkg, rel: str(importlib.resources.files(pkg) / rel)
        stubs["pkg_resources"] = pr
        notes["pkg_resources"] = "stub: resource_filename via importlib.resources"
    saved = {k: sys.modules.get(k) for k in stubs}
    sys.modules.update(stubs)
    try:
        yield notes
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def e2e_row(name: str, pipeline: str, run_one: Callable[[np.ndarray], int], photos: list[dict], args) -> dict:
    """Photos/s of ``run_one`` (photo -> faces found), one call per photo, over all the photos."""
    found = [int(run_one(p["input"])) for p in photos]

    def step() -> None:
        for p in photos:
            run_one(p["input"])

    t = throughput(step, len(photos), args.repeats, args.min_repeat_s, args.warmup)
    print(f"  {name:<40s} {t['median']:8.1f} photos/s  faces found {found}", flush=True)
    return {"name": name, "pipeline": pipeline, "photos_per_s": t["median"], "timing": t,
            "faces_found": dict(zip((p["name"] for p in photos), found)),
            "faces_expected": dict(zip((p["name"] for p in photos), (p["faces"] for p in photos)))}


def end_to_end(models: dict[str, str], args) -> dict[str, Any]:
    photos = make_photos()
    rows: list[dict] = []
    skipped: list[str] = []
    out: dict[str, Any] = {"photos": [{"name": p["name"], "shape": list(p["rgb"].shape), "faces": p["faces"]}
                                      for p in photos],
                           "unit": "photos/s, one predict call per 640x480 RGB uint8 array (decoding excluded)"}
    try:
        from ferkit.inference import Recognizer
    except (ImportError, AttributeError) as exc:
        Recognizer = None
        msg = f"ferkit.inference.Recognizer not available ({exc}); ferkit end-to-end skipped"
        print(msg, flush=True)
        skipped.append(msg)
    if Recognizer is not None:
        rgb_photos = [{**p, "input": p["rgb"]} for p in photos]
        for mname, path in models.items():
            for det in [d.strip() for d in args.detectors.split(",") if d.strip()]:
                try:
                    rec = Recognizer(path, device="cpu", detector=det, threads=args.threads)
                except Exception as exc:  # another engineer's module: record and go on
                    skipped.append(f"Recognizer({mname}, detector={det}): {type(exc).__name__}: {exc}")
                    print(skipped[-1], flush=True)
                    continue
                row = e2e_row(f"ferkit {mname} + {det}", f"ferkit.Recognizer(detector={det!r}, align={rec.align!r})",
                              lambda rgb, rec=rec: len(rec.predict(rgb)), rgb_photos, args)
                rows.append({**row, "model": mname, "detector": det, "align": rec.align})
    # fer's own pipeline (expects BGR arrays, as cv2.imread gives)
    bgr_photos = [{**p, "input": cv2.cvtColor(p["rgb"], cv2.COLOR_RGB2BGR)} for p in photos]
    try:
        with fer_import_shims() as notes:
            from fer.fer import FER
    except Exception as exc:
        skipped.append(f"fer pipeline: cannot import fer.fer ({type(exc).__name__}: {exc})")
        print(skipped[-1], flush=True)
        FER = None
    if FER is not None:
        out["fer_import_shims"] = notes
        variants = [(False, "Haar + emotion_model.hdf5 (Keras 3 on torch)")]
        if not args.no_tflite and importlib.util.find_spec("ai_edge_litert") is not None:
            variants.append((True, "Haar + emotion_model_quantized.tflite (fer's default; ai-edge-litert)"))
        for use_tflite, what in variants:
            try:
                fer = FER(use_tflite=use_tflite)
            except Exception as exc:
                skipped.append(f"fer pipeline {what}: {type(exc).__name__}: {exc}")
                print(skipped[-1], flush=True)
                continue

            def run(bgr: np.ndarray, fer=fer) -> int:
                with torch.inference_mode():  # fer calls the Keras model outside any no_grad
                    return len(fer.detect_emotions(bgr))

            row = e2e_row(f"fer {'tflite' if use_tflite else 'keras-torch'} + haar",
                          f"fer.fer.FER(use_tflite={use_tflite}).detect_emotions: {what}; defaults scale 1.1, "
                          "min neighbours 5, min face 50 px, offsets 10 px", run, bgr_photos, args)
            rows.append({**row, "model": "fer-tflite" if use_tflite else "fer", "detector": "haar (fer)"})
    out["rows"] = rows
    out["skipped"] = skipped
    return out


# ---- report -------------------------------------------------------------------------------------------
def _f(v: Any, nd: int = 1) -> str:
    return "–" if v is None else f"{v:.{nd}f}"


def goals(report: dict) -> dict[str, Any]:
    """Each ferkit model against fer, and the bundled default and fast models against their goals."""
    clf = {r["name"]: r for r in report["classifiers"]}
    fer, tfl = clf.get("fer"), clf.get("fer-tflite")
    e2e = report.get("end_to_end", {}).get("rows", [])
    roles = report.get("roles", {})
    out = {}
    for r in report["classifiers"]:
        if r["kind"] != "ferkit":
            continue
        photos = [e["photos_per_s"] for e in e2e if e.get("model") == r["name"] and e["detector"] == "retinaface"]
        measured = {"accuracy": r["accuracy"], "macro_f1": r["macro_f1"],
                    "photos_per_s": photos[0] if photos else None,
                    "faces_per_s_vs_fer_tflite": r["faces_per_s"] / tfl["faces_per_s"] if tfl else None}
        row: dict[str, Any] = {"roles": roles.get(r["name"], []), **measured,
                               "accuracy_vs_fer": r["accuracy"] - fer["accuracy"] if fer else None,
                               "macro_f1_vs_fer": r["macro_f1"] - fer["macro_f1"] if fer else None}
        for role in row["roles"]:
            for key, bar in ROLE_GOALS.get(role, {}).items():
                value = measured[key]
                row.setdefault("goals", {})[f"{role}: {key} >= {bar:g}"] = None if value is None else value >= bar
        out[r["name"]] = row
    return out


def markdown(report: dict) -> str:
    s = report["settings"]
    env = report["environment"]
    lines = [
        "# ferkit vs fer (mini-Xception, FER2013)",
        "",
        f"FER2013 {s['split']} ({report['classifiers'][0]['n'] if report['classifiers'] else 0} faces), "
        f"torch {env['torch']}, {s['threads']} threads, batch {s['batch']}; median of {s['repeats']} repeats "
        f"(each >= {s['min_repeat_s']} s) after {s['warmup']} warm-up calls. Load average (1/5/15 min) at start "
        f"{env['load_average_start']} (before this run's own work), when timing began "
        f"{env['load_average_timing_start']}, at end {env['load_average_end']}; {env['cpu_count']} CPUs. "
        "Each timing's load before/after is in the JSON.",
        "",
        "## Classifier (uint8 face crops in, probabilities out; preprocessing included)",
        "",
        "| model | kind | params | input | accuracy | macro-F1 | faces/s (min–max) | × fer |",
        "|---|---|---:|---|---:|---:|---:|---:|",
    ]
    fer = next((r for r in report["classifiers"] if r["name"] == "fer"), None)
    for r in report["classifiers"]:
        ratio = r["faces_per_s"] / fer["faces_per_s"] if fer else None
        lines.append(f"| {r['name']} | {r['kind']} | {r['params'] if r['params'] else '–'} | {r['input']} | "
                     f"{r['accuracy']:.4f} | {r['macro_f1']:.4f} | {r['faces_per_s']:.0f} "
                     f"({r['timing']['min']:.0f}–{r['timing']['max']:.0f}) | {_f(ratio, 2)} |")
    e2e = report.get("end_to_end")
    if e2e:
        names = [p["name"] for p in e2e["photos"]]
        lines += ["", "## End to end (640x480 RGB photo in: detect, align, classify)", "",
                  "Photos: " + ", ".join(f"`{p['name']}` ({p['faces']} face{'s' if p['faces'] > 1 else ''})"
                                         for p in e2e["photos"]) + ".", "",
                  "| pipeline | photos/s | faces found (" + ", ".join(names) + ") |", "|---|---:|---|"]
        for r in e2e["rows"]:
            found = ", ".join(str(r["faces_found"][n]) for n in names)
            lines.append(f"| {r['name']} | {r['photos_per_s']:.1f} ({r['timing']['min']:.1f}–"
                         f"{r['timing']['max']:.1f}) | {found} |")
        for msg in e2e.get("skipped", []):
            lines.append(f"\nSkipped: {msg}")
    g = report.get("goals")
    if g:
        lines += ["", "## Goals (issue 15: `default` >= 70 % accuracy, >= 0.66 macro-F1 and >= 30 photos/s end to end "
                  "with retinaface; `fast` >= 67 % accuracy at >= 2x fer-tflite's faces/s)", "",
                  "| model | role | accuracy − fer | macro-F1 − fer | faces/s ÷ fer-tflite | photos/s (retinaface) "
                  "| goals |", "|---|---|---:|---:|---:|---:|---|"]
        for name, v in g.items():
            met = "; ".join(f"{k}: {({True: 'met', False: 'NOT met', None: 'n/a'})[ok]}"
                            for k, ok in (v.get("goals") or {}).items()) or "–"
            lines.append(f"| {name} | {', '.join(v['roles']) or '–'} | {_f(v['accuracy_vs_fer'], 4)} | "
                         f"{_f(v['macro_f1_vs_fer'], 4)} | {_f(v['faces_per_s_vs_fer_tflite'], 2)} | "
                         f"{_f(v['photos_per_s'])} | {met} |")
    lines += ["", "Notes:", "",
              f"- fer's input: {FER_PREPROCESS}. Its columns ({', '.join(FER_CLASSES)}) are mapped with "
              "`ferkit.labels.canonical` and re-ordered to the dataset's labels.",
              "- `fer` is fer's `emotion_model.hdf5` on Keras 3 with the torch backend (the same torch and "
              "threads as ferkit); `fer-tflite` (when ai-edge-litert is installed) is fer's published default, "
              "the quantized `emotion_model_quantized.tflite`, run batched.",
              "- The upstream training script of fer's model (oarriaga/face_classification) trains on the first "
              "80 % of fer2013.csv (= the Training rows) and selects checkpoints on the rest (PublicTest + "
              "PrivateTest), so PublicTest was seen for model selection by fer's model. How each ferkit model "
              "was selected, from its model card:",
              *[f"  - {name}: {how}" for name, how in (report.get("selection") or {}).items()],
              "- End to end: one `predict` / `detect_emotions` call per photo array (image decoding excluded); "
              "fer gets BGR (what it expects), ferkit RGB. fer's call is wrapped in `torch.inference_mode()`.",
              ""]
    return "\n".join(lines)


# ---- main -----------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    os.environ.setdefault("KERAS_BACKEND", "torch")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    warnings.filterwarnings("ignore", module="keras")
    set_threads(args.threads)
    out_dir = Path(args.out) if args.out else results_dir(NAME)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "config.json", vars(args))
    # wait first: this run's own work (accuracy passes) would keep the load average up
    quiet = wait_for_quiet(args.wait_load, args.wait_max) if args.wait_load > 0 else None
    load_start = loadavg()

    from ferkit.data import load_dataset

    ds = load_dataset("fer2013", args.data, args.split)
    images, labels, classes = np.array(ds.images), ds.labels, tuple(ds.classes)  # writable copy for torch
    print(f"{args.split}: {len(images)} faces, classes {classes}", flush=True)
    models = parse_models(args.models)
    print(f"ferkit models: {models or 'none found'}", flush=True)

    clfs: list[tuple[str, Any]] = []
    notes: list[str] = []
    fer_path = Path(args.fer_model) if args.fer_model else fer_data_file("emotion_model.hdf5")
    clfs.append(("fer", FerKeras(fer_path, classes)))
    if not args.no_tflite:
        if importlib.util.find_spec("ai_edge_litert") is not None:
            clfs.append(("fer-tflite", FerTFLite(fer_data_file("emotion_model_quantized.tflite"), classes,
                                                 args.threads)))
        else:
            notes.append("ai-edge-litert not installed: fer's .tflite not measured")
    for name, path in models.items():
        try:
            clfs.append((name, FerkitModel(path, classes, args.batch)))
        except Exception as exc:
            notes.append(f"model {name} ({path}) skipped: {type(exc).__name__}: {exc}")
            print(notes[-1], flush=True)

    rows = []
    for name, clf in clfs:
        rows.append({"name": name, "kind": "ferkit" if isinstance(clf, FerkitModel) else clf.kind,
                     "source": clf.source, "params": clf.params, "input": clf.input,
                     **accuracy_row(clf, images, labels, classes, args.batch)})
        if isinstance(clf, FerkitModel):
            rows[-1]["trainer_metrics"] = clf.m.metrics
        print(f"  {name:<28s} accuracy {rows[-1]['accuracy']:.4f}  macro-F1 {rows[-1]['macro_f1']:.4f}", flush=True)

    load_timing = loadavg()
    batch = images[:args.batch]
    for row, (name, clf) in zip(rows, clfs):
        t = throughput(lambda clf=clf: clf.probs(batch), len(batch), args.repeats, args.min_repeat_s, args.warmup)
        row["faces_per_s"], row["timing"] = t["median"], t
        print(f"  {name:<28s} {t['median']:8.0f} faces/s  (load {t['load_after']})", flush=True)

    report: dict[str, Any] = {
        "benchmark": NAME,
        "settings": {**vars(args), "data": str(args.data), "n_faces": int(len(images)), "classes": list(classes),
                     "fer_model": str(fer_path), "models": models},
        "fer": {"classes_in_output_order": list(FER_CLASSES),
                "canonical": [canonical(c) for c in FER_CLASSES], "preprocessing": FER_PREPROCESS,
                "keras_backend": clfs[0][1].backend},
        "classifiers": rows,
    }
    if not args.no_e2e:
        report["end_to_end"] = end_to_end(models, args)
    env = environment()
    env.update({"load_average_start": load_start, "load_average_timing_start": load_timing,
                "load_average_end": loadavg(), "cpu_count": os.cpu_count(),
                "processor": platform.processor(), "packages": package_versions(), "wait_for_quiet": quiet,
                "torch_interop_threads": torch.get_num_interop_threads(), "cv2_threads": cv2.getNumThreads()})
    report["environment"] = env
    report["notes"] = notes
    report["selection"] = selection_of(models)
    report["roles"] = roles_of(models)
    report["goals"] = goals(report)
    write_json(out_dir / f"{NAME}.json", report)
    (out_dir / f"{NAME}.md").write_text(markdown(report))
    print(f"wrote {out_dir}/{NAME}.json, {NAME}.md, config.json", flush=True)
    return report


if __name__ == "__main__":
    main()
