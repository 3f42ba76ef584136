"""What every benchmark writes: results/<name>/ with the metrics, the exact settings and the commit."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ferkit.experiments import DIRTY_MARK, mark_tree_state
from ferkit.experiments import environment as _environment

__all__ = ["DIRTY_MARK", "mark_tree_state"]  # re-exported: benchmarks mark their results folders too

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
FER2013 = SHARED / "fer2013" / "fer2013_dev.csv.gz"
FERPLUS_VOTES = SHARED / "ferplus" / "fer2013new.csv"


#: The metrics a benchmark's summary keeps of ``ferkit.metrics.compute_metrics``'s output.
HEADLINE = ("accuracy", "macro_f1", "mean_class_accuracy", "nll", "ece", "brier", "n")


def headline(metrics: dict[str, Any]) -> dict[str, Any]:
    """The :data:`HEADLINE` entries of a metrics dict, in that order."""
    return {k: metrics[k] for k in HEADLINE}


def results_dir(name: str) -> Path:
    out = REPO / "results" / name
    out.mkdir(parents=True, exist_ok=True)
    mark_tree_state(out, root=REPO)
    return out


def environment(out: Path | None = None) -> dict[str, Any]:
    """The commit of this repository, whether its work tree was dirty, and the software; marks ``out``
    when dirty (``ferkit.experiments.environment``, the one the experiment runner records)."""
    return _environment(REPO, out)


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, default=float) + "\n")


def write_summary(name: str, summary: dict[str, Any]) -> Path:
    """results/NAME/summary.json: ``summary`` with the environment (commit, dirty tree) added; the path."""
    out = results_dir(name)
    summary["environment"] = environment(out)
    write_json(out / "summary.json", summary)
    print(f"wrote {out / 'summary.json'}")
    return out / "summary.json"


def run_cli(main: Callable[[], Any], prog: str) -> None:
    """Run a benchmark's ``main``; a ferkit error (bad config, missing file) is one line and exit 2."""
    from ferkit.errors import FerkitError

    try:
        main()
    except FerkitError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        sys.exit(2)
