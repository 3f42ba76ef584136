"""``Recognizer``: photo or video in, one result per face out (detect -> align -> classify).

The face crop is aligned to the framing of the model's training data (FER2013's loose 48x48
crops, see :mod:`ferkit.inference.align`), converted to the model's channels and classified in
eval mode. Each face's result is a dict with exactly the keys of docs/design.md::

    {"box": [x, y, w, h], "face_score": float, "landmarks": [[x, y]] * 5 (None without a detector),
     "probs": {label: p}, "label": str, "uncertainty": float}

``uncertainty`` is the method's own per-sample uncertainty when it provides one
(``Method.uncertainty``), otherwise the normalised entropy of the probabilities,
``-sum p log p / log K`` in [0, 1] (0: one label is certain; 1: all labels equally likely).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ferkit.atomic import check_output_path
from ferkit.engine.device import torch_threads
from ferkit.errors import ConfigError, InputError
from ferkit.inference.align import ALIGN_METHODS, face_transform, to_channels, warp
from ferkit.inference.detect import Face, get_detector
from ferkit.inference.sources import Source, expand_inputs, iter_frames, load_image
from ferkit.models.predict import check_tta_crop
from ferkit.zoo import resolve_model

if TYPE_CHECKING:
    import pandas as pd

#: the alignment each detector's boxes and landmarks call for (``align="auto"``)
AUTO_ALIGN = {"retinaface": "joint", "haar": "landmarks", "none": "resize"}
ENGINES = ("auto", "torch", "onnx")


def normalised_entropy(probs: np.ndarray) -> np.ndarray:
    """Entropy of each row divided by log K: 0 for a one-hot row, 1 for the uniform one."""
    p = np.clip(np.asarray(probs, np.float64), 1e-12, 1.0)
    k = p.shape[1]
    return (-(p * np.log(p)).sum(1) / np.log(k)) if k > 1 else np.zeros(len(p))


class Recognizer:
    """Facial expression recognition on photos, face crops and videos.

    Args:
        model: a registered model name (``"default"``, see :func:`ferkit.list_models`) or a path
            to a run directory, ``model.pt`` or trainer checkpoint.
        device: ``auto`` | ``cpu`` | ``cuda`` | ``mps``.
        engine: ``auto`` (onnx for a ``.onnx`` model file, such as a bundled int8 model, else torch),
            ``torch`` or ``onnx`` (onnxruntime on the CPU; ``model`` may then also be a ``.onnx``
            file from ``ferkit export``; any other model is exported once and cached, see
            :mod:`ferkit.inference.onnx_engine`).
        detector: ``retinaface`` (default), ``haar``, ``none`` (the whole image is the face) or a
            :class:`~ferkit.inference.detect.FaceDetector` instance.
        align: ``auto`` (what the detector calls for) or one of ``joint``, ``landmarks``, ``box``,
            ``resize`` (see :mod:`ferkit.inference.align`).
        template: the alignment template (``fer2013``).
        threads: CPU threads for torch and the detector (None: leave torch's setting, detector 2);
            torch's process-wide setting is changed only while this recognizer classifies.
            On a busy machine set ``OMP_WAIT_POLICY=PASSIVE`` before torch is imported (the CLI
            does): spinning OpenMP threads made the small per-photo forward pass ~40x slower.
        batch_size: faces per forward pass.
        tta_flip: average with the mirrored face (None: as the model was validated).
        tta_crop: average over the face and its centre and four corner crops of this side fraction
            (``ferkit.models.predict.crop_views``; 0: off; None: as the model was validated). Six
            views cost six times the classifier's time.
        detector_options: extra keywords for the detector (e.g. ``score_threshold``).
    """

    def __init__(self, model: str | Path = "default", device: str = "auto", engine: str = "auto",
                 detector: Any = "retinaface", *, align: str = "auto", template: str = "fer2013",
                 threads: int | None = None, batch_size: int = 64, tta_flip: bool | None = None,
                 tta_crop: float | None = None, detector_options: dict[str, Any] | None = None) -> None:
        from ferkit.engine.model_io import load_model
        from ferkit.inference.onnx_engine import OnnxModel, cached_export, is_onnx_file

        if engine not in ENGINES:
            raise ConfigError(f"unknown engine '{engine}' (available: {', '.join(ENGINES)})")
        if engine == "auto":
            engine = "onnx" if is_onnx_file(resolve_model(model)) else "torch"
        self.threads = threads  # torch's thread count while this recognizer computes (restored after)
        if engine == "onnx":
            if device not in ("auto", "cpu"):
                raise ConfigError(f"engine 'onnx' runs on the CPU (got device={device!r})")
            path = resolve_model(model)
            self.model = OnnxModel(path if is_onnx_file(path) else cached_export(path), threads=threads)
        else:
            if is_onnx_file(resolve_model(model)):  # a bundled name too: 'default' and 'fast' are int8 ONNX files
                raise ConfigError(f"{model} is an ONNX file: use engine='onnx' (--engine onnx); the torch twin "
                                  "of the bundled default is 'accurate'")
            self.model = load_model(resolve_model(model), device)
            if hasattr(self.model, "net"):  # a classic .npz model (ferkit.classic) has no network
                self.model.net.eval()
        self.labels: tuple[str, ...] = tuple(self.model.classes)
        # faces are cropped at the training data's own resolution (``crop_size``: 48 px for FER2013) and
        # the model's view resizes them to its input, so a photo's face looks like a training face: a
        # model fine-tuned on upsampled 48 px faces never sees sharper detail than it learnt from
        pre = self.model.preprocess
        self.size = int(pre.get("crop_size") or pre["image_size"])
        self.channels = int(self.model.preprocess["channels"])
        opts = dict(detector_options or {})
        if threads and detector == "retinaface":
            opts.setdefault("threads", int(threads))
        self.detector = get_detector(detector, **opts)
        det_name = self.detector.name
        self.align = AUTO_ALIGN.get(det_name, "joint") if align == "auto" else align
        if self.align not in ALIGN_METHODS:
            raise ConfigError(f"unknown alignment '{align}' (auto, {', '.join(ALIGN_METHODS)})")
        self.template = template
        self.batch_size = int(batch_size)
        self.tta_flip = tta_flip
        self.tta_crop = None if tta_crop is None else check_tta_crop(tta_crop)
        self.engine = engine

    def __repr__(self) -> str:
        return (f"Recognizer(model={self.model.source!r}, labels={len(self.labels)}, input={self.size}px "
                f"{'gray' if self.channels == 1 else 'RGB'}, detector={self.detector.name!r}, align={self.align!r}, "
                f"device={str(self.model.device)!r})")

    # ---- classification -----------------------------------------------------------------------
    def _classify(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities (N, K) float64 and uncertainty (N,) for uint8 crops at the model's size."""
        if len(crops) == 0:
            return np.zeros((0, len(self.labels))), np.zeros(0)
        with torch_threads(self.threads):
            probs, unc = self.model.classify(crops, batch_size=self.batch_size, tta_flip=self.tta_flip,
                                             tta_crop=self.tta_crop)
        probs = np.asarray(probs, np.float64)
        probs /= probs.sum(1, keepdims=True)
        return probs, (normalised_entropy(probs) if unc is None else np.asarray(unc, np.float64))

    def predict_faces(self, faces: Any) -> np.ndarray:
        """Probabilities (N, len(labels)) for face crops of any size, gray (H, W) or RGB (H, W, 3).

        ``faces`` is a list of crops, or a stack (N, H, W) / (N, H, W, 3), or one crop (H, W).
        Each crop is resized on its own (area when shrinking, bilinear when enlarging) and the
        model is in eval mode, so a crop's row does not depend on the other crops in the call.
        """
        from ferkit.data.images import fit

        if isinstance(faces, np.ndarray):
            if faces.ndim == 2:
                faces = [faces]
            elif faces.ndim not in (3, 4):
                raise InputError(f"face crops must be (N, H, W) or (N, H, W, 3) (got shape {faces.shape})")
        elif not isinstance(faces, (list, tuple)):
            faces = [faces]
        crops = []
        for k, f in enumerate(faces):
            try:
                rgb = load_image(f)
            except InputError as exc:
                raise InputError(f"face {k}: {exc}") from None
            gray_in = isinstance(f, np.ndarray) and (f.ndim == 2 or f.shape[-1] == 1)
            img = rgb[:, :, 0] if gray_in else rgb
            crops.append(to_channels(fit(img, self.size), self.channels))
        if not crops:
            return np.zeros((0, len(self.labels)))
        return self._classify(np.stack(crops))[0]

    # ---- photos -------------------------------------------------------------------------------
    def detect(self, image: Any) -> list[Face]:
        """The faces the detector finds in ``image`` (path, array or PIL image)."""
        return self.detector.detect(load_image(image))

    def crops(self, image: Any, faces: list[Face] | None = None) -> np.ndarray:
        """The aligned crops (N, size, size[, 3]) the model sees for ``image``'s faces."""
        rgb = load_image(image)
        faces = self.detector.detect(rgb) if faces is None else faces
        return self._crops(rgb, faces)

    def _transforms(self, faces: list[Face]) -> list[np.ndarray]:
        return [face_transform(None if f.landmarks is None else np.asarray(f.landmarks, np.float64),
                               f.box if f.raw_box is None else f.raw_box, self.size, self.template, self.align)
                for f in faces]

    def _crops(self, rgb: np.ndarray, faces: list[Face], mats: list[np.ndarray] | None = None) -> np.ndarray:
        shape = (0, self.size, self.size) + (() if self.channels == 1 else (3,))
        if not faces:
            return np.zeros(shape, np.uint8)
        mats = self._transforms(faces) if mats is None else mats
        return np.stack([to_channels(warp(rgb, m, self.size), self.channels) for m in mats])

    def _cam(self, crops: np.ndarray) -> np.ndarray:
        """Class activation maps (N, size, size) in [0, 1] of each crop's top class: the classifier's
        weights of that class over the backbone's feature map (Zhou et al. 2016), ReLU, min-max scaled."""
        from ferkit.engine.batches import images_to_tensor

        if self.engine != "torch":
            raise ConfigError("class activation maps need engine='torch' (the ONNX graph returns probabilities only; "
                              "of the bundled models, 'accurate' is the torch twin of the int8 'default')")
        if not hasattr(self.model, "net"):
            raise ConfigError("class activation maps need a CNN model (this is a classic HOG/LBP + SVM model)")
        if not hasattr(self.model.net, "model"):
            raise ConfigError("class activation maps need a single model, not an ensemble")
        net = self.model.net.model
        x = self.model.view(images_to_tensor(crops, self.channels).to(self.model.device))
        with torch.inference_mode():
            out = net.extract(x)
            # methods with their own head give the linear map from pooled features to logits
            w, b = self.model.net.cam_weights() if hasattr(self.model.net, "cam_weights") else (net.fc.weight,
                                                                                               net.fc.bias)
            k = (out["embedding"] @ w.T + b).argmax(1)
            cam = torch.einsum("nc,nchw->nhw", w[k], out["feature_map"]).clamp_min(0)
            cam = torch.nn.functional.interpolate(cam[:, None], size=(self.size, self.size), mode="bilinear",
                                                  align_corners=False)[:, 0]
            lo = cam.flatten(1).min(1).values[:, None, None]
            hi = cam.flatten(1).max(1).values[:, None, None]
            cam = (cam - lo) / (hi - lo).clamp_min(1e-8)
        return cam.float().cpu().numpy()

    def cam(self, image: Any) -> list[np.ndarray]:
        """Per face, the class activation map of its predicted label in image coordinates:
        float32 (H, W) in [0, 1], zero outside the face crop. Same face order as :meth:`predict`."""
        rgb = load_image(image)
        faces = self.detector.detect(rgb)
        return self._cams_in_image(rgb, faces, self._transforms(faces))

    def _cams_in_image(self, rgb: np.ndarray, faces: list[Face], mats: list[np.ndarray]) -> list[np.ndarray]:
        import cv2

        if not faces:
            return []
        maps = self._cam(self._crops(rgb, faces, mats))
        h, w = rgb.shape[:2]
        return [cv2.warpAffine(cm, m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0) for cm, m in zip(maps, mats)]

    def _predict_rgb(self, rgb: np.ndarray, cam: bool = False) -> tuple[list[dict[str, Any]], list[np.ndarray]]:
        faces = self.detector.detect(rgb)
        mats = self._transforms(faces)
        probs, unc = self._classify(self._crops(rgb, faces, mats))
        out = []
        for f, p, u in zip(faces, probs, unc):
            d = f.to_dict()
            d["probs"] = {lab: float(v) for lab, v in zip(self.labels, p)}
            d["label"] = self.labels[int(np.argmax(p))]
            d["uncertainty"] = float(u)
            out.append(d)
        return out, (self._cams_in_image(rgb, faces, mats) if cam else [])

    def predict(self, image: Any) -> list[dict[str, Any]]:
        """One dict per detected face (best detector score first); [] when there is no face.

        ``image``: a path, a numpy array (H, W) or (H, W, 3) RGB uint8, or a PIL image.
        """
        return self._predict_rgb(load_image(image))[0]

    # ---- many inputs, videos ------------------------------------------------------------------
    def analyze(self, inputs: Any, frame_step: int = 1, *, out: str | Path | None = None,
                annotate: str | Path | None = None, cam: bool = False, webcam: int | None = None,
                max_frames: int | None = None, progress: bool = False, errors: str = "raise",
                track: bool | None = None, smooth: float = 0.6) -> pd.DataFrame:
        """A pandas DataFrame with one row per face per frame (see :mod:`ferkit.inference.results`).

        Args:
            inputs: a path (image, video or folder, searched recursively), an array, a PIL image,
                a webcam index (int), or a list of these.
            frame_step: analyse every n-th video frame.
            out: also write the table to this ``.csv`` or ``.json`` (nested, one record per frame).
            annotate: write a copy of each image (videos: an ``.mp4``) with the results drawn on it
                into this folder.
            cam: in the annotated copies, overlay each face's class activation map (see :meth:`cam`).
            webcam: a webcam index to read from (after ``inputs``); stop with Ctrl-C or ``max_frames``.
            max_frames: at most this many frames per video or webcam.
            progress: show a progress bar (tqdm) over the frames.
            errors: ``raise`` an InputError on an unreadable file, or ``report`` it (one line on
                stderr, a row with ``error`` set) and go on.
            track: follow each face across the frames of a video or webcam (``track_id``) and
                smooth its probabilities over time (``smooth_<label>``, ``label_smooth``), so a
                viewer sees who is who and a steady label. None: on for videos and webcams, off for
                photos; True: also treat consecutive photos / arrays in ``inputs`` as the frames
                of one stream (e.g. frames a program grabbed itself); False: off.
            smooth: the smoothing's weight of the past per source frame, in [0, 1) (0: the raw
                probabilities); frame skipping does not change its time constant
                (see :mod:`ferkit.inference.track`).
        """
        from ferkit.inference.results import frame_rows, make_frame, write_table
        from ferkit.inference.track import StreamTracker
        from ferkit.inference.video import FpsMeter

        if errors not in ("raise", "report"):
            raise ConfigError(f"errors must be 'raise' or 'report' (got {errors!r})")
        if frame_step < 1:
            raise InputError(f"frame step must be >= 1 (got {frame_step})")
        sources = expand_inputs([] if inputs is None else inputs)
        if webcam is not None:
            sources.append(Source("webcam", int(webcam), f"webcam:{webcam}", f"webcam{webcam}"))
        if not sources:
            raise InputError("no images or videos found in the inputs")
        if out is not None and Path(out).suffix.lower() not in (".csv", ".json"):
            raise InputError(f"--out must end in .csv or .json (got {Path(out).name})")
        if out is not None:  # checked now, not after the last frame
            check_output_path(out, "file", "results table")
        if annotate is not None:
            check_output_path(annotate, "folder", "annotation folder")
        writer = _Annotator(Path(annotate), frame_step) if annotate is not None else None
        tracker = StreamTracker(self.labels, smooth)  # checks ``smooth`` even when tracking is off
        stream: Any = None  # the source the tracker follows now
        meter = FpsMeter()
        bar = _progress(sources, frame_step, max_frames) if progress else None
        rows: list[dict[str, Any]] = []
        try:
            for fr in iter_frames(sources, frame_step, max_frames):
                if bar is not None:
                    bar.update(1)
                if fr.error:
                    if errors == "raise":
                        raise InputError(fr.error)
                    _report(fr.error, bar)
                    rows += frame_rows(fr.source.name, fr.index, fr.time_s, [], self.labels, fr.error)
                    continue
                faces, cams = self._predict_rgb(fr.rgb, cam=cam and writer is not None)
                moving = fr.source.kind in ("video", "webcam")
                key = fr.source if moving else (_PHOTOS if track else None)
                if key is not stream:  # a new video: fresh ids, fresh averages, fresh rate
                    stream = key
                    meter.reset()
                    if key is not None and track is not False:
                        tracker.reset(frame_dt=_frame_dt(fr.source))
                if key is not None and track is not False:
                    tracker.update(faces, fr.time_s)
                rate = meter.tick() if moving else None
                rows += frame_rows(fr.source.name, fr.index, fr.time_s, faces, self.labels)
                if writer is not None:
                    writer.add(fr, faces, cams, fps=rate)
        except KeyboardInterrupt:
            if not any(s.kind == "webcam" for s in sources):
                raise
        except BaseException:
            if bar is not None:  # an error ends with its one line, not with a half-drawn bar above it
                bar.leave = False
            raise
        finally:
            if bar is not None:
                bar.close()
            if writer is not None:
                writer.close()
        df = make_frame(rows, self.labels, model=self.model.source, detector=self.detector.name, align=self.align)
        if out is not None:
            write_table(df, out)
        return df


#: the stream of consecutive photos that ``analyze(track=True)`` follows
_PHOTOS = "<photos>"


def _frame_dt(src: Source) -> float | None:
    """A source's frame interval in seconds (the smoothing's time unit): 1/fps of a video file,
    the nominal 1/30 s of a webcam, None for photos (each photo is one step)."""
    from ferkit.inference.video import WEBCAM_FPS

    if src.kind == "webcam":
        return 1.0 / WEBCAM_FPS
    if src.kind == "video":
        from ferkit.inference.video import video_info

        try:
            fps = video_info(src.obj)["fps"]
        except InputError:
            return None
        return 1.0 / fps if fps and 0 < fps < 1000 else None
    return None


def _report(msg: str, bar) -> None:
    line = f"ferkit: warning: {msg} (skipped)"
    import time

    if bar is not None and time.time() - bar.start_t >= bar.delay:  # the bar is on screen: print above it
        bar.write(line, file=sys.stderr)
    else:
        print(line, file=sys.stderr)


def _progress(sources: list[Source], frame_step: int, max_frames: int | None):
    from tqdm import tqdm

    from ferkit.inference.video import video_info

    total: int | None = 0
    for s in sources:
        if s.kind == "video":
            try:
                n = -(-video_info(s.obj)["frames"] // frame_step)
            except InputError:
                n = 1
            total += min(n, max_frames) if max_frames else n
        elif s.kind == "webcam":
            total = None
            break
        else:
            total += 1
    # delay: no bar at all for work that ends (or fails) within a second
    return tqdm(total=total, unit="frame", dynamic_ncols=True, file=sys.stderr, delay=1.0)


class _Annotator:
    """Writes annotated copies: images as files, each video's frames as one .mp4."""

    def __init__(self, folder: Path, frame_step: int = 1) -> None:
        self.folder = folder
        self.frame_step = frame_step
        self.created = not folder.exists()  # made on the first write; removed again if nothing was written
        self.videos: dict[str, Any] = {}
        self.used: set[Path] = set()

    def _target(self, src: Source, suffix: str | None = None) -> Path:
        rel = Path(src.rel or Path(src.name).name)
        if suffix:
            rel = rel.with_name(rel.stem + suffix)
        path = self.folder / rel
        stem, n = path.stem, 1
        while path in self.used:
            path = path.with_name(f"{stem}_{n}{path.suffix}")
            n += 1
        self.used.add(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def add(self, fr, faces: list[dict], cams: list[np.ndarray] | None = None, fps: float | None = None) -> None:
        """Draws one frame's faces (tracked ones with id and smoothed label; ``fps`` in the corner)."""
        import cv2

        from ferkit.inference.draw import annotate

        img = cv2.cvtColor(annotate(fr.rgb, faces, cams=cams, fps=fps), cv2.COLOR_RGB2BGR)
        if fr.source.kind in ("image", "array"):
            path = self._target(fr.source)
            if path.suffix.lower() not in (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"):
                path = path.with_suffix(".png")
            ok, buf = cv2.imencode(path.suffix, img)
            if ok:
                buf.tofile(str(path))
            return
        key = fr.source.name
        if key not in self.videos:
            fps = 10.0
            if fr.source.kind == "video":
                from ferkit.inference.video import video_info

                fps = (video_info(fr.source.obj)["fps"] or 10.0) / self.frame_step
            path = self._target(fr.source, "_annotated.mp4")
            h, w = img.shape[:2]
            self.videos[key] = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
        self.videos[key].write(img)

    def close(self) -> None:
        for vw in self.videos.values():
            vw.release()
        self.videos.clear()
        if self.created and self.folder.is_dir() and not any(self.folder.iterdir()):
            self.folder.rmdir()  # a run that failed before its first picture leaves no empty folder
