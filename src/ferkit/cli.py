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
    from ferkit.engine import distributed as dist
    from ferkit.engine.config import load_config
    from ferkit.engine.trainer import Trainer

    extra: dict = {"train": {}}
    if device:
        extra["train"]["device"] = device
    if no_resume:
        extra["train"]["resume"] = False
    cfg = load_config(config, overrides, extra=extra)
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


@cli.command()
@click.option("--model", "model", required=True, help="Run directory, model.pt or checkpoint.")
@click.option("--dataset", required=True, help="Dataset reader: fer2013, ferplus, rafdb, affectnet, folder, jaffe.")
@click.option("--path", required=True, help="The dataset's file or folder.")
@click.option("--split", default=None, help="Split to score (default: the reader's test split).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Metrics JSON to write (plots go beside it).")
@click.option("--option", "options", multiple=True, help="Reader option key=value (repeatable).")
@click.option("--device", default="auto", show_default=True)
@click.option("--batch-size", default=512, show_default=True)
@click.option("--tta-flip/--no-tta-flip", default=None, help="Average with the mirrored face.")
def evaluate(model: str, dataset: str, path: str, split: str | None, out: Path | None,
             options: tuple[str, ...], device: str, batch_size: int, tta_flip: bool | None) -> None:
    """Score a trained model on a dataset: metrics JSON, confusion matrix and reliability PNGs."""
    from ferkit.engine.config import parse_overrides
    from ferkit.evaluation.evaluate import default_split, evaluate_model

    split = split or default_split(dataset)
    if out is None:
        base = Path(model) if Path(model).is_dir() else Path(".")
        out = base / "eval" / f"{dataset}_{split}.json"
    metrics = evaluate_model(model, dataset, path, split, out, options=parse_overrides(options),
                             device=device, batch_size=batch_size, tta_flip=tta_flip)
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
@click.option("--engine", default="torch", show_default=True, help="Inference engine.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads (torch and the detector).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def predict(inputs: tuple[str, ...], model: str, out: Path | None, annotate: Path | None, cam: bool, frame_step: int,
            webcam: int | None, max_frames: int | None, device: str, detector: str, engine: str,
            threads: int | None, no_progress: bool) -> None:
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
    rec = Recognizer(model, device=device, engine=engine, detector=detector, threads=threads)
    many = len(inputs) + (webcam is not None) > 1 or any(Path(i).is_dir() for i in inputs)
    df = rec.analyze(list(inputs), frame_step=frame_step, out=out, annotate=annotate, cam=cam, webcam=webcam,
                     max_frames=max_frames, progress=not no_progress, errors="report" if many else "raise")
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
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def models(as_json: bool) -> None:
    """List the backbones, methods, dataset readers and named models this install knows."""
    from ferkit.data import DATASETS
    from ferkit.inference.zoo import list_models
    from ferkit.methods import list_methods
    from ferkit.models import list_backbones

    table = {"backbones": list(list_backbones()), "methods": list_methods(), "datasets": sorted(DATASETS)}
    table["models"] = [m["name"] + ("" if m["available"] else " (not installed)") for m in list_models()]
    if as_json:
        click.echo(json.dumps(table, indent=2))
        return
    for key, names in table.items():
        click.echo(f"{key:10s} {', '.join(names)}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script: FerkitErrors become one line and exit code 2."""
    warnings.formatwarning = _one_line_warning
    try:
        cli.main(args=argv, prog_name="ferkit", standalone_mode=False)
    except FerkitError as exc:
        click.echo(f"ferkit: error: {exc}", err=True)
        return 2
    except click.exceptions.Abort:
        click.echo("ferkit: aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("ferkit: interrupted (the last checkpoint is kept; run again to resume)", err=True)
        return 130
    return 0


def _one_line_warning(message, category, filename, lineno, line=None) -> str:  # noqa: ARG001
    """Warnings meant for the user (a skipped file) read as one line, without source lines."""
    return f"ferkit: warning: {message}\n"


if __name__ == "__main__":
    sys.exit(main())
