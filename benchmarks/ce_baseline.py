"""The CE baseline on all of FER2013 Training, selected and scored on PublicTest.

    python benchmarks/ce_baseline.py [--config configs/ce_fer2013_baseline_0.yaml] [key=value ...]

Trains the run (resuming if it was interrupted), evaluates its model.pt on PublicTest (with and
without flip averaging), builds the run report, and copies into results/ce_fer2013_baseline/:
metrics JSON + confusion matrix + reliability diagram, the run report (curves, epoch table), the exact
config, meta.json (git commit, versions) and the model file.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

from ferkit.engine.config import load_config
from ferkit.engine.trainer import Trainer
from ferkit.evaluation.evaluate import evaluate_model
from ferkit.evaluation.report import make_report

from _common import FER2013, REPO, environment, headline, results_dir, write_json


def collect(run_dir: Path, out: Path, data_path: Path) -> dict:
    """Evaluate a finished run and copy what a reader needs into ``out``."""
    summary = {}
    for flip in (False, True):
        name = "publictest_flip" if flip else "publictest"
        m = evaluate_model(run_dir, "fer2013", data_path, "PublicTest", out / f"{name}.json", tta_flip=flip)
        summary[name] = headline(m)
    make_report(run_dir)
    for name in ("config.yaml", "meta.json", "metrics.csv", "log.jsonl", "model.pt"):  # model.pt: for bundle_model.py
        shutil.copy2(run_dir / name, out / name)
    shutil.copytree(run_dir / "report", out / "report", dirs_exist_ok=True)
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(REPO / "configs" / "ce_fer2013_baseline_0.yaml"))
    ap.add_argument("--out", default="ce_fer2013_baseline")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    os.chdir(REPO)  # configs name the data relative to the repository root
    cfg = load_config(args.config, args.overrides)
    trainer = Trainer(cfg)
    trainer.fit()
    out = results_dir(args.out)
    summary = collect(trainer.run_dir, out, FER2013)
    summary["best_epoch"] = trainer.eval_hook.best_epoch + 1
    summary["epochs"] = cfg["train"]["epochs"]
    summary["environment"] = environment()
    write_json(out / "summary.json", summary)
    print(summary)


if __name__ == "__main__":
    main()
