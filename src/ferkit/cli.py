"""The ``ferkit`` command line.

Every user-facing error (a missing file, a bad csv, an unknown label or config key) is a
FerkitError: it is printed as one line, ``ferkit: error: ...``, and the exit code is 2.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import click

from ferkit import __version__
from ferkit.atomic import check_output_path
from ferkit.errors import FerkitError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ferkit")
def cli() -> None:
    """ferkit: train and run facial expression recognition models."""


@cli.command(context_settings={"ignore_unknown_options": False})
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("overrides", nargs=-1)
@click.option("--device", default=None, help="auto | cpu | cuda | mps (overrides train.device).")
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the run is written (default: output_dir/name).")
@click.option("--no-resume", is_flag=True, help="Start afresh even if the run directory has a checkpoint.")
def train(config: Path, overrides: tuple[str, ...], device: str | None, run_dir: Path | None,
          no_resume: bool) -> None:
    """Train the run described by CONFIG (YAML), with optional key=value OVERRIDES.

    Example: ferkit train configs/ce_fer2013_quick_0.yaml train.epochs=2 data.limit_train=2000
    """
    import os

    # as in predict: idle OpenMP threads sleep instead of spinning, which holds training speed when the
    # cores are shared (the issue-15 measurement: 4.2x on fp32 training under load); before torch loads
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from ferkit.engine import distributed as dist
    from ferkit.engine.config import load_config
    from ferkit.engine.trainer import Trainer

    extra: dict = {"train": {}}
    if device:
        extra["train"]["device"] = device
    if no_resume:
        extra["train"]["resume"] = False
    cfg = load_config(config, overrides, extra=extra)
    check_output_path(run_dir or Path(cfg["output_dir"]) / cfg["name"], "folder", "run directory")
    trainer = Trainer(cfg, run_dir=run_dir)
    if no_resume and (trainer.run_dir / "log.jsonl").exists() and dist.is_main():
        (trainer.run_dir / "log.jsonl").unlink()
        (trainer.run_dir / "metrics.csv").unlink(missing_ok=True)
    try:
        trainer.fit()
    finally:
        dist.cleanup()
    if dist.is_main():
        best = trainer.eval_hook.best
        msg = f"run written to {trainer.run_dir}"
        if best is not None:
            msg += f"  (best {cfg['train']['select_metric']} {best:.4f} at epoch {trainer.eval_hook.best_epoch + 1})"
        click.echo(msg)


@cli.command(context_settings={"ignore_unknown_options": False},
             short_help="A paper table: a grid of runs, resumable cell by cell.")
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("overrides", nargs=-1)
@click.option("--only", multiple=True, help="Grid kinds: run only the cells with axis=value[,value...] "
              "(repeatable; e.g. --only backbone=resnet18 --only seed=0).")
@click.option("--dry-run", is_flag=True, help="List the cells (or pairs, or runs) and stop; nothing is trained.")
@click.option("--device", default=None, help="auto | cpu | cuda | mps.")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="Grid kinds: train.epochs for every cell (also names the folders, e.g. <name>-e5).")
@click.option("--limit-train", type=click.IntRange(min=1), default=None,
              help="Grid kinds: a stratified training subset of N faces per cell.")
@click.option("--limit-val", type=click.IntRange(min=1), default=None,
              help="Grid kinds: a stratified validation subset of N faces per cell.")
@click.option("--runs", default=None, help="Grid kinds: the folder of the cells' run directories "
              "(default <runs_dir>/<name>[-budget], relative to the working directory).")
@click.option("--out", default=None, help="The results folder (default <results_dir>/<name>[-budget]).")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="analyses: a stratified subset of the analysed split.")
@click.option("--steps-per-epoch", type=click.IntRange(min=1), default=None,
              help="ssl: train.steps_per_epoch for every cell.")
@click.option("--labelled", default=None, help="ssl: data.labelled, a count or a fraction of the training rows.")
@click.option("--model", "model", multiple=True, help="cross_dataset: [NAME=]MODEL, a bundled name, run directory, "
              "model.pt or checkpoint (repeatable; replaces the config's models).")
@click.option("--dataset", multiple=True, help="cross_dataset: READER[:SPLIT]=PATH, e.g. jaffe=/data/jaffe "
              "(repeatable; added to the config's datasets).")
@click.option("--no-config-datasets", is_flag=True, help="cross_dataset: only the --dataset ones.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="cross_dataset: the evaluation batch (config batch_size).")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="cross_dataset: torch CPU threads.")
def experiment(config: Path, overrides: tuple[str, ...], only: tuple[str, ...], dry_run: bool, device: str | None,
               epochs: int | None, limit_train: int | None, limit_val: int | None, runs: str | None,
               out: str | None, limit: int | None, steps_per_epoch: int | None, labelled: str | None,
               model: tuple[str, ...], dataset: tuple[str, ...], no_config_datasets: bool, batch_size: int | None,
               threads: int | None) -> dict | None:
    """Run the experiment of CONFIG (configs/experiments/*.yaml): a grid of runs, resumable cell by cell,
    written with its table and plots; key=value OVERRIDES apply to every cell's run config.

    The config's `kind` says what it is: ablation, noise or ssl (grids of trainings), analyses
    (uncertainty analyses of trained runs) or cross_dataset (models x datasets). A finished cell is
    skipped and an interrupted one resumes, so run the same command again to continue. Relative
    runs_dir / results_dir / --runs / --out are relative to the working directory.

    Example: ferkit experiment configs/experiments/apsm_ablation.yaml --dry-run --only backbone=resnet18
    """
    import os

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as in train; before torch loads
    from ferkit.experiments import run_experiment

    return run_experiment(config, overrides, only=only, dry_run=dry_run, device=device, epochs=epochs,
                   limit_train=limit_train, limit_val=limit_val, runs=runs, out=out, limit=limit,
                   steps_per_epoch=steps_per_epoch, labelled=labelled, model=model, dataset=dataset,
                   no_config_datasets=no_config_datasets, batch_size=batch_size, threads=threads)


@cli.command()
@click.option("--model", "model", required=True, help="Run directory, model.pt or checkpoint.")
@click.option("--dataset", required=True, help="Dataset reader: fer2013, ferplus, rafdb, affectnet, folder, jaffe.")
@click.option("--path", required=True, help="The dataset's file or folder.")
@click.option("--split", default=None, help="Split to score (default: the reader's test split).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Metrics JSON to write (plots go beside it).")
@click.option("--option", "options", multiple=True, help="Reader option key=value (repeatable).")
@click.option("--device", default="auto", show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=512, show_default=True)
@click.option("--tta-flip/--no-tta-flip", default=None, help="Average with the mirrored face.")
@click.option("--tta-crop", type=click.FloatRange(0.0, 1.0, max_open=True), default=None,
              help="Also average the centre and corner crops of this side fraction (0: off; default: as the model).")
def evaluate(model: str, dataset: str, path: str, split: str | None, out: Path | None,
             options: tuple[str, ...], device: str, batch_size: int, tta_flip: bool | None,
             tta_crop: float | None) -> None:
    """Score a trained model on a dataset: metrics JSON, confusion matrix and reliability PNGs."""
    from ferkit.engine.config import parse_overrides
    from ferkit.evaluation.evaluate import default_split, evaluate_model

    split = split or default_split(dataset)
    if out is None:
        base = Path(model) if Path(model).is_dir() else Path(".")
        out = base / "eval" / f"{dataset}_{split}.json"
    check_output_path(out, "file", "metrics file")
    metrics = evaluate_model(model, dataset, path, split, out, options=parse_overrides(options),
                             device=device, batch_size=batch_size, tta_flip=tta_flip, tta_crop=tta_crop)
    click.echo(f"{dataset}/{split}: n={metrics['n']}  accuracy={metrics['accuracy']:.4f}  "
               f"macro_f1={metrics['macro_f1']:.4f}  nll={metrics['nll']:.4f}  ece={metrics['ece']:.4f}  "
               f"brier={metrics['brier']:.4f}")
    click.echo(f"metrics written to {out}")


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
def report(run_dir: Path) -> None:
    """Curves and tables of a run's logs, written to RUN_DIR/report/."""
    from ferkit.evaluation.report import make_report

    click.echo(f"report written to {make_report(run_dir)}")


@cli.command()
@click.argument("model", default="default")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The .onnx file to write (default: <model name>.onnx here).")
@click.option("--quantize", type=click.Choice(["none", "int8"]), default="none", show_default=True,
              help="int8: static QDQ quantisation (int8 weights, uint8 activations calibrated on faces).")
@click.option("--calib-dataset", default=None, help="int8: dataset reader of the calibration faces (fer2013, ...).")
@click.option("--calib-path", default=None, help="int8: the calibration dataset's file or folder.")
@click.option("--calib-split", default="Training", show_default=True, help="int8: its split (use training faces).")
@click.option("--calib-count", default=512, show_default=True, help="int8: calibration faces (stratified).")
@click.option("--opset", default=17, show_default=True, help="ONNX opset version.")
@click.option("--check/--no-check", default=True, show_default=True,
              help="Compare the export's probabilities with torch's (on the calibration faces for int8).")
def export(model: str, out: Path | None, quantize: str, calib_dataset: str | None, calib_path: str | None,
           calib_split: str, calib_count: int, opset: int, check: bool) -> None:
    """Export MODEL (a bundled name, run directory, model.pt or checkpoint) to ONNX.

    The file carries the labels and preprocessing, so it runs on its own:
    Recognizer("model.onnx", engine="onnx"), ferkit predict --model model.onnx --engine onnx.
    Example (int8): ferkit export default --quantize int8 --calib-dataset fer2013 --calib-path fer2013.csv
    """
    import numpy as np

    from ferkit.engine.model_io import load_model
    from ferkit.errors import InputError
    from ferkit.inference.onnx_engine import OnnxModel, export_onnx

    q = None if quantize == "none" else quantize
    if out is None:
        stem = Path(model).stem if Path(model).suffix else Path(str(model)).name
        out = Path(f"{stem}{'.' + q if q else ''}.onnx")
    check_output_path(out, "file", "ONNX file")  # before the calibration faces and the model are read
    from ferkit.zoo import resolve_model

    if resolve_model(model).suffix.lower() == ".onnx":
        raise InputError(f"{model} is already an ONNX file: export takes a torch model "
                         "(a bundled .pt name such as 'accurate', a run directory, model.pt or checkpoint)")
    calibration = None
    if q == "int8":
        if not (calib_dataset and calib_path):
            raise InputError("--quantize int8 calibrates on faces: give --calib-dataset and --calib-path")
        from ferkit.data import load_dataset
        from ferkit.data.splits import subsample

        data = load_dataset(calib_dataset, calib_path, calib_split)
        calibration = np.asarray(data.images)[subsample(data.labels, min(calib_count, len(data)), seed=0)]
    loaded = load_model(model, "cpu")
    export_onnx(loaded, out, quantize=q, opset=opset, calibration=calibration)
    msg = f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB"
    if check:
        p = loaded.preprocess
        shape = (64, int(p["image_size"]), int(p["image_size"])) + (() if int(p["channels"]) == 1 else (3,))
        faces = calibration if calibration is not None else np.random.default_rng(0).integers(0, 256, shape,
                                                                                              dtype=np.uint8)
        a, b = OnnxModel(out).predict_probs(faces), loaded.predict_probs(faces)
        msg += (f"; max |p_onnx - p_torch| = {np.abs(a - b).max():.1e}, same label on "
                f"{np.mean(a.argmax(1) == b.argmax(1)):.1%} of {len(faces)} {'calibration' if q else 'random'} faces")
    click.echo(msg + ")")


@cli.command()
@click.argument("inputs", nargs=-1)
@click.option("--model", default="default", show_default=True,
              help="Registered model name (see `ferkit models`), run directory, model.pt or checkpoint.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write one row per face per frame to a .csv, or nested records to a .json.")
@click.option("--annotate", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for copies of the inputs with boxes, labels, top-3 bars and uncertainty drawn.")
@click.option("--cam", is_flag=True, help="With --annotate: overlay each face's class activation map.")
@click.option("--frame-step", type=click.IntRange(min=1), default=1, show_default=True,
              help="Analyse every n-th video frame.")
@click.option("--webcam", type=int, is_flag=False, flag_value=0, default=None,
              help="Read a webcam (index, default 0); stop with Ctrl-C or --max-frames.")
@click.option("--max-frames", type=click.IntRange(min=1), default=None, help="At most this many frames per video.")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda | mps.")
@click.option("--detector", default="retinaface", show_default=True, help="Face detector: retinaface, haar, none.")
@click.option("--engine", type=click.Choice(["auto", "torch", "onnx"]), default="auto", show_default=True,
              help="Inference engine: torch, or onnxruntime (CPU; --model may then be a .onnx file); "
                   "auto: onnx for a .onnx model, else torch.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads (torch and the detector).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--track/--no-track", default=None,
              help="Follow faces across video frames (track_id) and smooth their probabilities "
                   "(smooth_* columns, label_smooth). Default: on for videos and webcams; --track also "
                   "treats consecutive photos as frames of one stream.")
@click.option("--smooth", type=click.FloatRange(0.0, 1.0, max_open=True), default=0.6, show_default=True,
              help="Temporal smoothing of tracked faces: weight of the past per source frame (0: off).")
@click.option("--tta-crop", type=click.FloatRange(0.0, 1.0, max_open=True), default=None,
              help="Average each face's centre and corner crops of this side fraction with the face itself "
                   "(six views, six times the classifier's time; 0: off; default: as the model was shipped).")
def predict(inputs: tuple[str, ...], model: str, out: Path | None, annotate: Path | None, cam: bool, frame_step: int,
            webcam: int | None, max_frames: int | None, device: str, detector: str, engine: str,
            threads: int | None, no_progress: bool, track: bool | None, smooth: float, tta_crop: float | None) -> None:
    """Expressions of the faces in INPUTS: images, folders (recursively) and videos.

    Among several inputs, a file that cannot be read is reported on stderr and skipped; a single
    unreadable input is an error.

    Example: ferkit predict photos/ clip.mp4 --out faces.csv --annotate annotated/ --frame-step 5
    """
    import os

    # idle OpenMP threads sleep instead of spinning: on a busy CPU, spinning made the per-face forward
    # pass ~40x slower with 2 threads (results/inference/speed.json); only takes effect before torch loads
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from ferkit.errors import InputError
    from ferkit.inference.recognizer import Recognizer

    if not inputs and webcam is None:
        raise InputError("nothing to analyse: give images, folders or videos, or --webcam")
    rec = Recognizer(model, device=device, engine=engine, detector=detector, threads=threads, tta_crop=tta_crop)
    many = len(inputs) + (webcam is not None) > 1 or any(Path(i).is_dir() for i in inputs)
    df = rec.analyze(list(inputs), frame_step=frame_step, out=out, annotate=annotate, cam=cam, webcam=webcam,
                     max_frames=max_frames, progress=not no_progress, errors="report" if many else "raise",
                     track=track, smooth=smooth)
    if out is None:
        from ferkit.inference.results import summary_lines

        for line in summary_lines(df):
            click.echo(line)
    else:
        click.echo(f"{int(df['face_found'].sum())} faces in {df.groupby(['input', 'frame']).ngroups} frames "
                   f"written to {out}")
    if annotate is not None:
        click.echo(f"annotated copies written to {annotate}")


@cli.command()
@click.option("--model", default="default", show_default=True,
              help="Registered model name (see `ferkit models`), run directory, model.pt or checkpoint.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on (0.0.0.0: every one).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--engine", default="auto", show_default=True, help="Inference engine: auto, torch or onnx.")
@click.option("--detector", default="retinaface", show_default=True, help="Face detector: retinaface, haar, none.")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda | mps.")
@click.option("--max-upload-mb", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True,
              help="Largest accepted upload; bigger ones get 413.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads (torch and the detector).")
@click.option("--detect-size", type=click.IntRange(min=64), default=480, show_default=True,
              help="The detector sees photos shrunk to this long side (faces are still cropped from the full "
                   "photo). 480 finds faces down to about 20 px in a 640 px photo at 2.5x less cost than 640 px; "
                   "raise it for group photos with small faces.")
def serve(model: str, host: str, port: int, engine: str, detector: str, device: str, max_upload_mb: float,
          threads: int | None, detect_size: int) -> None:
    """Serve the REST API (POST /predict, GET /models, GET /health) and a browser page at /.

    Example: ferkit serve --port 8000, then open http://127.0.0.1:8000/ or
    curl -F file=@photo.jpg http://127.0.0.1:8000/predict
    """
    import os

    # as in predict: idle OpenMP threads sleep instead of spinning; only takes effect before torch loads
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from ferkit.errors import InputError

    try:
        import uvicorn

        from ferkit.serve.app import create_app
    except ImportError as exc:
        raise InputError(f"ferkit serve needs the web extra ({exc.name} is missing): "
                         "pip install 'ferkit[serve]'") from None
    from ferkit.inference.recognizer import Recognizer

    opts = {"max_side": detect_size} if detector in ("retinaface", "haar") else {}
    rec = Recognizer(model, device=device, engine=engine, detector=detector, threads=threads, detector_options=opts)
    app = create_app(rec, model=model, engine=engine, detector=detector,
                     max_upload_bytes=int(max_upload_mb * 2**20))
    click.echo(f"ferkit serve: {rec!r} on http://{host}:{port}/", err=True)
    uvicorn.run(app, host=host, port=port, log_level="info")


@cli.command()
@click.argument("video", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--webcam", type=int, is_flag=False, flag_value=0, default=None,
              help="Read a webcam (index, default 0) instead of VIDEO; stop with Ctrl-C, q or --max-frames.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the annotated frames to this .mp4 (or .avi).")
@click.option("--realtime", is_flag=True,
              help="Keep up with the source: drop frames when processing is slower (webcam: always the newest frame).")
@click.option("--frame-step", type=click.IntRange(min=1), default=1, show_default=True,
              help="Process at most every n-th frame.")
@click.option("--max-frames", type=click.IntRange(min=1), default=None, help="Stop after this many processed frames.")
@click.option("--smooth", type=click.FloatRange(0.0, 1.0, max_open=True), default=0.6, show_default=True,
              help="Temporal smoothing of each tracked face: weight of the past per source frame (0: off).")
@click.option("--show", is_flag=True, help="Show the annotated frames in a window (needs OpenCV with GUI support).")
@click.option("--model", default="default", show_default=True,
              help="Registered model name (see `ferkit models`), run directory, model.pt or checkpoint.")
@click.option("--detector", default="retinaface", show_default=True, help="Face detector: retinaface, haar, none.")
@click.option("--engine", default="auto", show_default=True, help="Inference engine: auto, torch or onnx.")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda | mps.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads (torch and the detector).")
@click.option("--no-progress", is_flag=True, help="No progress line.")
def live(video: Path | None, webcam: int | None, out: Path | None, realtime: bool, frame_step: int,
         max_frames: int | None, smooth: float, show: bool, model: str, detector: str, engine: str, device: str,
         threads: int | None, no_progress: bool) -> None:
    """Expressions live on a VIDEO file or a webcam: faces tracked, labels smoothed, frames drawn.

    Prints a progress line with the processing rate while running and the run's statistics at
    the end. Example: ferkit live --webcam 0 --realtime --out session.mp4
    """
    import os

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as in predict
    from ferkit.errors import InputError
    from ferkit.inference.live import run_live
    from ferkit.inference.recognizer import Recognizer

    if (video is None) == (webcam is None):
        raise InputError("give one source: a VIDEO file or --webcam N")
    if not show and out is None:
        click.echo("ferkit: note: no --out and no --show: the annotated frames are not kept", err=True)
    if out is not None:
        check_output_path(out, "file", "annotated video")
    rec = Recognizer(model, device=device, engine=engine, detector=detector, threads=threads)
    stats = run_live(rec, webcam if webcam is not None else video, frame_step=frame_step, realtime=realtime,
                     max_frames=max_frames, out_video=out, show=show, smooth=smooth, progress=not no_progress)
    click.echo(f"{stats['source']}: {stats['frames_processed']} of {stats['frames_read']} frames processed "
               f"({stats['frames_skipped']} skipped, {stats['frames_dropped']} dropped to keep up) "
               f"at {stats['fps']:.1f} fps; {stats['faces_per_frame']:.2f} faces per frame, "
               f"{stats['tracks']} tracks" + (" (interrupted)" if stats["interrupted"] else ""))
    if out is not None:
        click.echo(f"annotated video ({stats['frames_written']} frames) written to {out}")


@cli.command("train-classic")
@click.option("--dataset", required=True, help="Dataset reader: fer2013, ferplus, rafdb, affectnet, folder, jaffe.")
@click.option("--path", required=True, help="The dataset's file or folder.")
@click.option("--split", default=None, help="Split to train on (default: Training / train where the reader has one).")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="The model file (.npz).")
@click.option("--features", default="hog,lbp", show_default=True, help="Comma-separated: hog, lbp.")
@click.option("--svm", type=click.Choice(["linear", "rbf"]), default="linear", show_default=True,
              help="linear: LinearSVC, calibrated (fast); rbf: kernel SVC on PCA features (slow on large sets).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Train on a stratified subset of N faces.")
@click.option("--c", "c", type=click.FloatRange(min=0, min_open=True), default=None,
              help="SVM regularisation C (default: 0.001 linear, 3 rbf).")
@click.option("--pca", type=click.IntRange(min=0), default=None,
              help="PCA components before the SVM, 0 = none (default: none for linear, 150 for rbf).")
@click.option("--option", "options", multiple=True, help="Reader option key=value (repeatable).")
@click.option("--seed", default=0, show_default=True)
def train_classic(dataset: str, path: str, split: str | None, out: Path, features: str, svm: str,
                  limit: int | None, c: float | None, pca: int | None, options: tuple[str, ...], seed: int) -> None:
    """Train the classic route: HOG + LBP features, standardised, an SVM (scikit-learn, scikit-image).

    The result is a .npz that `ferkit evaluate --model` and `ferkit predict --model` take.
    Example: ferkit train-classic --dataset fer2013 --path fer2013.csv --split Training --out classic.npz
    """
    check_output_path(out, "file", "model file")
    from ferkit.classic import FeatureSettings
    from ferkit.classic import train_classic as fit
    from ferkit.data import load_dataset, subsample
    from ferkit.engine.config import parse_overrides
    from ferkit.errors import InputError

    if out.suffix.lower() != ".npz":
        raise InputError(f"--out must end in .npz (got {out.name})")
    names = tuple(f.strip() for f in features.split(",") if f.strip())
    FeatureSettings(features=names)  # a bad name fails before the data are read
    if split is None:
        split = {"fer2013": "Training", "ferplus": "Training", "rafdb": "train", "affectnet": "train"}.get(dataset)
    data = load_dataset(dataset, path, split, **parse_overrides(options))
    if limit is not None and limit < len(data):
        data = data.subset(subsample(data.labels, limit, seed))
    if len(data) == 0:
        raise InputError(f"{dataset} split {split!r} at {path} has no rows")
    click.echo(f"train-classic: {len(data)} faces of {dataset}/{split}, {svm} SVM", err=True)
    model, rep = fit(data.images, data.labels, data.classes, features=names, svm=svm, c=c,
                     pca="auto" if pca is None else pca, seed=seed, progress=lambda m: click.echo(f"  {m}", err=True))
    model.meta["training"].update(dataset=dataset, path=str(path), split=split, limit=limit)
    model.save(out)
    click.echo(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB; {rep.n} faces, {rep.feature_dim} features, "
               f"features {rep.feature_s:.1f} s, SVM {rep.fit_s:.1f} s)")


@cli.command()
@click.option("--model", default="default", show_default=True, help="Bundled name, run directory or model file.")
@click.option("--engine", type=click.Choice(["auto", "torch", "onnx"]), default="auto", show_default=True)
@click.option("--detector", default="retinaface", show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads (default: torch's choice).")
@click.option("--batch", type=click.IntRange(min=1), default=256, show_default=True, help="Faces per classifier call.")
@click.option("--repeats", type=click.IntRange(min=1), default=5, show_default=True,
              help="Timed passes (the median is reported).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Also write the JSON here.")
@click.option("--tta-crop", type=click.FloatRange(0.0, 1.0, max_open=True), default=None,
              help="Average each face's centre and corner crops of this side fraction with the face itself "
                   "(six views, six times the classifier's time; 0: off; default: as the model was shipped).")
def benchmark(model: str, engine: str, detector: str, threads: int | None, batch: int, repeats: int,
              out: Path | None, tta_crop: float | None) -> None:
    """How fast MODEL runs on this machine: classifier faces/s and 640x480 photos/s end to end.

    The speed benchmarks behind the README's tables are in benchmarks/ (compare_fer.py, throughput.py).
    """
    import os

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as in predict; before torch loads
    from ferkit.atomic import atomic_write_text
    from ferkit.evaluation.speed import benchmark as run_benchmark
    from ferkit.inference.recognizer import Recognizer

    if out is not None:
        check_output_path(out, "file", "benchmark file")
    rec = Recognizer(model, device="cpu", engine=engine, detector=detector, threads=threads, tta_crop=tta_crop)
    res = run_benchmark(rec, batch=batch, repeats=repeats)
    c, e = res["classifier"], res["end_to_end"]
    flip = ", flip-averaged" if rec.model.preprocess.get("tta_flip") else ""
    crop = rec.model.preprocess.get("tta_crop", 0.0) if rec.tta_crop is None else rec.tta_crop
    flip += f", 6 crops ({crop:g})" if crop else ""
    click.echo(f"{res['model']} ({engine}, {c['crop']}{flip})")
    click.echo(f"  classifier  {c['median']:8.0f} faces/s  (min {c['min']:.0f}, max {c['max']:.0f}; batch {batch})")
    click.echo(f"  end to end  {e['median']:8.1f} photos/s ({e['size']}, {e['faces']} faces in {e['photos']} photos, "
               f"{detector}; ms/photo: " + ", ".join(f"{k} {v}" for k, v in e["ms_per_photo"].items()) + ")")
    if out is not None:
        atomic_write_text(out, json.dumps(res, indent=2) + "\n")
        click.echo(f"written to {out}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def models(as_json: bool) -> None:
    """List the backbones, methods, dataset readers, pretrained starts and named models this install knows."""
    from ferkit.data import DATASETS
    from ferkit.methods import list_methods
    from ferkit.models import PRETRAINED, list_backbones
    from ferkit.zoo import list_models

    table = {"backbones": list(list_backbones()), "methods": list_methods(), "datasets": sorted(DATASETS),
             "pretrained": [f"{k} ({v['model']})" for k, v in PRETRAINED.items()]}
    table["models"] = [m["name"] + (f" [{', '.join(m['aliases'])}]" if m["aliases"] else "")
                       + ("" if m["available"] else " (not installed)") for m in list_models()]
    if as_json:
        click.echo(json.dumps(table, indent=2))
        return
    for key, names in table.items():
        click.echo(f"{key:10s} {', '.join(names)}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script: FerkitErrors become one line and exit code 2."""
    warnings.formatwarning = _one_line_warning
    import os

    # decoders' own chatter (OpenCV's "[ WARN ] ... PNG input buffer is incomplete", FFmpeg's "moov atom
    # not found") would print before ferkit's one line about the same file; set before cv2 loads
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    try:
        cli.main(args=argv, prog_name="ferkit", standalone_mode=False)
    except FerkitError as exc:
        click.echo(f"ferkit: error: {exc}", err=True)
        return 2
    except click.exceptions.Abort:  # click's form of Ctrl-C
        click.echo(_interrupted_message(argv), err=True)
        return 130
    except click.ClickException as exc:
        if isinstance(exc, getattr(click.exceptions, "NoArgsIsHelpError", ())):  # bare `ferkit`: the help
            exc.show()
            return exc.exit_code
        # a bad option or command: one line too, not click's four (usage, hint, blank, error)
        msg = " ".join(exc.format_message().split())
        ctx = getattr(exc, "ctx", None)
        if ctx is not None:
            msg += f" (see {ctx.command_path} --help)"
        click.echo(f"ferkit: error: {msg}", err=True)
        return 2
    except KeyboardInterrupt:
        click.echo(_interrupted_message(argv), err=True)
        return 130
    return 0


def _interrupted_message(argv: list[str] | None) -> str:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in ("train", "experiment"):
        return "ferkit: interrupted (the last checkpoint is kept; run the same command again to resume)"
    return "ferkit: interrupted"


def _one_line_warning(message, category, filename, lineno, line=None) -> str:  # noqa: ARG001
    """Warnings meant for the user (a skipped file) read as one line, without source lines."""
    return f"ferkit: warning: {message}\n"


if __name__ == "__main__":
    sys.exit(main())
