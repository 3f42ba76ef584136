"""What every benchmark writes: results/<name>/ with the metrics, the exact settings and the commit."""

from __future__ import annotations

import argparse
import json
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
FER2013 = SHARED / "fer2013" / "fer2013_dev.csv.gz"
FERPLUS_VOTES = SHARED / "ferplus" / "fer2013new.csv"


DIRTY_MARK = "DIRTY_TREE.txt"


def results_dir(name: str) -> Path:
    out = REPO / "results" / name
    out.mkdir(parents=True, exist_ok=True)
    mark_tree_state(out)
    return out


def environment(out: Path | None = None) -> dict[str, Any]:
    """The commit, whether the work tree was dirty, and the software; marks ``out`` when dirty."""
    from ferkit.engine.trainer import git_commit, git_dirty

    env = {"git_commit": git_commit(REPO), "git_dirty": git_dirty(REPO), "python": platform.python_version(),
           "torch": torch.__version__,
           "threads": torch.get_num_threads(), "machine": platform.machine(), "argv": sys.argv}
    if out is not None:
        mark_tree_state(out, env)
    return env


def mark_tree_state(out: Path, env: dict[str, Any] | None = None) -> bool:
    """Results name the code that made them: from a work tree with uncommitted changes they cannot, so
    the folder gets a DIRTY_TREE.txt saying so (and a loud line on stderr); a clean rerun removes it."""
    from ferkit.engine.trainer import git_commit, git_dirty

    dirty = (env or {}).get("git_dirty") if env else git_dirty(REPO)
    mark = Path(out) / DIRTY_MARK
    if dirty:
        commit = (env or {}).get("git_commit") or git_commit(REPO)
        mark.write_text(f"These results were written from a work tree with uncommitted changes (on top of commit "
                        f"{commit}), so no commit names the code that made them. Rerun from a clean, committed "
                        "tree before quoting them.\n")
        print(f"WARNING: the work tree is dirty: results in {out} are marked {DIRTY_MARK}; rerun from a clean "
              "commit before quoting them", file=sys.stderr)
    elif mark.exists():
        mark.unlink()
    return bool(dirty)


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, default=float) + "\n")


def grid_parser(doc: str, config_help: str, only_help: str, *, scope: str = "") -> argparse.ArgumentParser:
    """The options every grid runner (APSM, noise, SSL) shares; each adds its own after.

    ``scope`` prefixes the help of the cell options (``"ablation: "`` where a config kind has none).
    """
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("config", help=config_help)
    ap.add_argument("overrides", nargs="*", help=f"{scope}key=value for every cell's run config")
    ap.add_argument("--only", action="append", default=[], help=f"{scope}{only_help} (repeatable)")
    ap.add_argument("--epochs", type=int, default=None, help=f"{scope}train.epochs for every cell")
    ap.add_argument("--limit-train", type=int, default=None, help=f"{scope}stratified training subset")
    ap.add_argument("--limit-val", type=int, default=None, help=f"{scope}stratified validation subset")
    ap.add_argument("--device", default=None, help="auto | cpu | cuda | mps")
    ap.add_argument("--runs", default=None, help=f"{scope}folder of the cells' run directories")
    ap.add_argument("--out", default=None, help="results folder (default results/<name>[-budget])")
    ap.add_argument("--dry-run", action="store_true", help="print the cells and stop")
    return ap


def run_cli(main: Callable[[], Any], prog: str) -> None:
    """Run a benchmark's ``main``; a ferkit error (bad config, missing file) is one line and exit 2."""
    from ferkit.errors import FerkitError

    try:
        main()
    except FerkitError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        sys.exit(2)
