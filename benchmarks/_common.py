"""What every benchmark writes: results/<name>/ with the metrics, the exact settings and the commit."""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
FER2013 = SHARED / "fer2013" / "fer2013_dev.csv.gz"
FERPLUS_VOTES = SHARED / "ferplus" / "fer2013new.csv"


def results_dir(name: str) -> Path:
    out = REPO / "results" / name
    out.mkdir(parents=True, exist_ok=True)
    return out


def environment() -> dict[str, Any]:
    from ferkit.engine.trainer import git_commit

    return {"git_commit": git_commit(REPO), "python": platform.python_version(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "machine": platform.machine(), "argv": sys.argv}


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, default=float) + "\n")
