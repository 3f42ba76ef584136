"""The one grid runner every experiment kind shares.

An experiment YAML names its ``kind``; the kind's class (registered in ``ferkit.experiments``)
says which top-level keys it takes, how it expands into cells and how it writes its table. This
module does the rest, the same way for every kind:

* **cells**: each a ferkit run config = the experiment's ``base`` <- the cell's own layer <- the
  budget options (``epochs``, ``limit_train``, ``limit_val``, ``device``) <- ``key=value``
  overrides, named by its axis values (``resnet18_pe-usl_fer2013_s0``); ``only`` keeps the cells
  matching every ``axis=value[,value...]``;
* **resumable**: each cell trains into ``<runs_dir>/<folder>/<cell>``; a cell with
  ``cell_result.json`` is finished and skipped, an interrupted training resumes from its checkpoint
  (the Trainer's exact resume), and a run directory trained with another config is refused with
  the differing keys named (``ferkit.engine.config.config_differences``), never silently mixed;
  a finished cell whose run directory is gone (a fresh clone: ``runs/`` is never committed) but
  whose row the results folder keeps (``cells/<cell>/``, with the same run config) is restored
  from there and not trained again, so a grid run over several sittings on several machines
  loses only its unfinished cells;
* **results**: ``<results_dir>/<folder>/`` gets the kind's ``table.json`` and ``table.md`` (every
  finished cell of the grid, so a grid can be run in pieces), a copy of the experiment config and
  each cell's resolved run config, meta and metrics (``cells/<cell>/``), with the commit and
  whether the work tree was dirty, read once **before** any cell trains (so a commit made during a
  long run cannot be credited with results it did not make); a dirty tree gets ``DIRTY_TREE.txt``.

Budget options change the default folder (``<name>-e5-n4000``), so a quick look never mixes
with the real run. Paths: a relative ``runs_dir`` / ``results_dir`` (and ``runs`` / ``out``) is
relative to the working directory; a relative data path (a cell's ``data.path``, the datasets and
runs an analysis reads) is read as ``ferkit train`` reads a run config's: beside the experiment
config when it is there and not in the working directory, else from the working directory.
"""

from __future__ import annotations

import copy
import itertools
import json
import platform
import shutil
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from ferkit.engine.config import config_differences as ferkit_config_differences
from ferkit.engine.config import flatten_config, load_config, read_yaml_mapping, resolve_data_path, yaml_load
from ferkit.engine.trainer import git_commit, git_dirty, metrics_csv_rows
from ferkit.errors import ConfigError
from ferkit.experiments.registry import get_kind, list_kinds

RESULT = "cell_result.json"
TRAINED = "trained.json"  # written after a training finished: a cell sharing that model needs no Trainer
DIRTY_MARK = "DIRTY_TREE.txt"
#: a finished cell's run files that its results folder keeps (``cells/<cell>/``) and restores from
CELL_FILES = ("config.yaml", "meta.json", "metrics.csv")
#: run-config keys that may differ between a run directory and the config resuming it (``name`` too:
#: a cell renamed, as when a grid gains a seed axis, is the same training under a new folder)
RUNTIME_KEYS = {"train.device", "train.progress", "train.threads", "train.resume", "train.log_every",
                "train.eval_batch_size", "data.path", "data.options.cache", "output_dir", "train.cache_dir", "name"}
#: the options every kind is called with, and their defaults (``ferkit experiment``'s options)
COMMON_OPTIONS: dict[str, Any] = {"only": (), "epochs": None, "limit_train": None, "limit_val": None,
                                  "device": None, "runs": None, "out": None, "dry_run": False}
#: of those, the ones only a grid of trainings takes
GRID_OPTIONS = ("overrides", "only", "epochs", "limit_train", "limit_val", "runs")


# ---- the commit ---------------------------------------------------------------------------------
def _source_root() -> Path:
    """Where the commit is read: the ferkit source (the repository, for an editable install)."""
    return Path(__file__).resolve().parent


def environment(root: str | Path | None = None, out: str | Path | None = None) -> dict[str, Any]:
    """The commit, whether the work tree was dirty, and the software; marks ``out`` when dirty.

    Read it once, before the work, and keep it: results name the code that made them."""
    import torch

    where = Path(root) if root is not None else _source_root()
    env = {"git_commit": git_commit(where), "git_dirty": git_dirty(where), "python": platform.python_version(),
           "torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine(),
           "argv": sys.argv}
    if out is not None:
        mark_tree_state(out, env)
    return env


def mark_tree_state(out: str | Path, env: Mapping[str, Any] | None = None, root: str | Path | None = None) -> bool:
    """Results name the code that made them: from a work tree with uncommitted changes they cannot, so
    the folder gets a DIRTY_TREE.txt saying so (and a loud line on stderr); a clean rerun removes it."""
    where = Path(root) if root is not None else _source_root()
    dirty = env.get("git_dirty") if env else git_dirty(where)
    mark = Path(out) / DIRTY_MARK
    if dirty:
        commit = (env or {}).get("git_commit") or git_commit(where)
        mark.write_text(f"These results were written from a work tree with uncommitted changes (on top of commit "
                        f"{commit}), so no commit names the code that made them. Rerun from a clean, committed "
                        "tree before quoting them.\n")
        print(f"WARNING: the work tree is dirty: results in {out} are marked {DIRTY_MARK}; rerun from a clean "
              "commit before quoting them", file=sys.stderr)
    elif mark.exists():
        mark.unlink()
    return bool(dirty)


def cell_commits(rows: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """How many of a grid's finished cells each commit trained (a grid run over several sittings
    may span commits; each cell's own ``meta.json`` names its commit)."""
    return dict(Counter(str(r.get("git_commit") or "unknown") for r in rows))


def commit_text(env: Mapping[str, Any]) -> str:
    """The sentence of a table that names the code behind it: the commit the table was written at
    and, when its cells were trained at other commits, each of those with its number of cells."""
    head = env.get("git_commit")
    cells = env.get("cell_commits") or {}
    if not cells or set(cells) == {head}:
        return f"Commit `{head}`."
    parts = ", ".join(f"`{c}` ({n})" for c, n in sorted(cells.items(), key=lambda kv: (-kv[1], kv[0])))
    return f"Table written at commit `{head}`; cells trained at {parts}."


# ---- paths ---------------------------------------------------------------------------------------
def work_path(p: str | Path) -> Path:
    """A folder option or ``runs_dir`` / ``results_dir``: as given when absolute, else under the working directory."""
    p = Path(p).expanduser()
    return p if p.is_absolute() else Path.cwd() / p


def data_path(raw: str | Path, config_path: str | Path) -> Path:
    """A data (or trained run) path named in an experiment config, read as ``ferkit train`` reads a run
    config's ``data.path`` (the engine's rule: beside the config file when found there and not in the
    working directory), made absolute so the cells' run configs name the same file wherever they run."""
    cfg = {"data": {"path": str(raw)}}
    resolve_data_path(cfg, Path(config_path))
    return work_path(cfg["data"]["path"])


# ---- the config ------------------------------------------------------------------------------------
def infer_kind(exp: Mapping[str, Any]) -> str | None:
    """The kind of a config written before ``kind`` was required: cross-dataset configs had none."""
    kind = exp.get("kind")
    if kind is None and ("models" in exp or "datasets" in exp):
        return "cross_dataset"
    return kind


def read_experiment(path: str | Path) -> dict[str, Any]:
    """The experiment YAML as a mapping with its ``kind`` (inferred where an old config lacks it) and
    ``name`` (the file's stem by default), checked for what every kind needs: the file exists, the
    kind is registered, and no top-level key is unknown to that kind."""
    path = Path(path)
    exp = read_yaml_mapping(path, "experiment config")
    kind = infer_kind(exp)
    if kind not in list_kinds():
        raise ConfigError(f"experiment config {path}: 'kind' must be {' or '.join(list_kinds())}, not {kind!r}")
    known = get_kind(kind).keys
    unknown = sorted(set(exp) - known)
    if unknown:
        raise ConfigError(f"experiment config {path}: unknown key(s) {', '.join(unknown)} "
                          f"(known for {kind}: {', '.join(sorted(known))})")
    exp = dict(exp)
    exp.setdefault("name", path.stem)
    return exp


def load_experiment(path: str | Path) -> dict[str, Any]:
    """The experiment config, checked by the shared rules and by its kind's own."""
    exp = read_experiment(path)
    get_kind(infer_kind(exp)).check_config(exp, Path(path))
    return exp


def merge(base: Mapping, new: Mapping) -> dict:
    """Deep merge for run-config layers; a ``method`` of another name replaces the base's whole."""
    out = copy.deepcopy(dict(base))
    for k, v in new.items():
        if k == "method" and isinstance(v, Mapping) and isinstance(out.get(k), Mapping) \
                and v.get("name", out[k].get("name")) != out[k].get("name"):
            out[k] = copy.deepcopy(dict(v))
        elif isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def slug(value: Any) -> str:
    """A folder-safe name for an axis value (``pe+usl`` -> ``pe-usl``)."""
    return "".join(c if c.isalnum() or c in "-._" else "-" for c in str(value))


def grid_cells(grid: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every cell of a grid (the product of its axes, in file order):
    ``{"name", "axes": {axis: value}, "overrides": run-config layer}``.

    An axis is a mapping (value -> run-config layer) or, for ``seed``, a list of seeds.
    """
    axes = []
    for axis, values in grid.items():
        if axis == "seed":
            if not isinstance(values, list) or not values:
                raise ConfigError("grid.seed must be a non-empty list of integers")
            axes.append([(axis, int(s), {"seed": int(s)}) for s in values])
        elif isinstance(values, Mapping) and values:
            axes.append([(axis, str(k), dict(v or {})) for k, v in values.items()])
        else:
            raise ConfigError(f"grid.{axis} must map each value to its run-config keys")
    cells = []
    for combo in itertools.product(*axes):
        layer: dict = {}
        for _, _, over in combo:
            layer = merge(layer, over)
        name = "_".join(f"s{v}" if a == "seed" else slug(v) for a, v, _ in combo)
        cells.append({"name": name, "axes": {a: v for a, v, _ in combo}, "overrides": layer})
    return cells


def select(cells: list[dict[str, Any]], only: Iterable[str]) -> list[dict[str, Any]]:
    """The cells matching every ``axis=value[,value...]`` filter (a bad axis or value is an error naming
    the known ones, so a typo never runs nothing, or everything)."""
    wanted: dict[str, set[str]] = {}
    axes = set(cells[0]["axes"]) if cells else set()
    for item in only:
        if "=" not in item:
            raise ConfigError(f"--only {item!r} is not of the form axis=value[,value...]")
        axis, values = item.split("=", 1)
        axis = axis.strip()
        if axis not in axes:
            raise ConfigError(f"--only: unknown axis {axis!r} (axes: {', '.join(sorted(axes))})")
        wanted.setdefault(axis, set()).update(v.strip() for v in values.split(","))
    for axis, values in wanted.items():
        known = {str(c["axes"][axis]) for c in cells}
        bad = sorted(values - known)
        if bad:
            raise ConfigError(f"--only {axis}: unknown value(s) {', '.join(bad)} (known: {', '.join(sorted(known))})")
    return [c for c in cells if all(str(c["axes"][a]) in v for a, v in wanted.items())]


def budget_suffix(opts: Any) -> str:
    """``e5-n4000-v500``: the budget options, in the default folder names."""
    parts = [f"e{opts.epochs}" if opts.epochs else "", f"n{opts.limit_train}" if opts.limit_train else "",
             f"v{opts.limit_val}" if opts.limit_val else ""]
    return "-".join(p for p in parts if p)


def cell_config(exp: Mapping[str, Any], cell: Mapping[str, Any], opts: Any, runs_dir: Path,
                config_path: str | Path) -> dict[str, Any]:
    """The resolved ferkit run config of one cell: base <- axes <- budget options <- key=value."""
    layer = merge(exp.get("base") or {}, cell["overrides"])
    extra: dict[str, Any] = {"train": {}, "data": {}}
    if opts.epochs:
        extra["train"]["epochs"] = int(opts.epochs)
    if opts.limit_train:
        extra["data"]["limit_train"] = int(opts.limit_train)
    if opts.limit_val:
        extra["data"]["limit_val"] = int(opts.limit_val)
    if opts.device:
        extra["train"]["device"] = opts.device
    layer = merge(layer, extra)
    layer.update(name=cell["name"], output_dir=str(runs_dir))
    cfg = load_config(None, opts.overrides, extra=layer)
    cfg["name"], cfg["output_dir"] = cell["name"], str(runs_dir)  # key=value may not move a cell
    if cfg["data"].get("path"):
        cfg["data"]["path"] = str(data_path(cfg["data"]["path"], config_path))
    return cfg


def config_differences(old: Mapping, new: Mapping) -> list[str]:
    """Keys whose values differ between two resolved run configs, runtime-only keys aside.

    A method option or run-config key the old run's config lacks but the new one holds at its
    default is not a difference: it was added to ferkit after that run, which trained as the
    default does (e.g. APSM's ``usl_warmup_epochs: 0``, ``data.holdout: null``)."""
    return [k for k in ferkit_config_differences(old, new, RUNTIME_KEYS)
            if k not in _options_added_at_default(flatten_config(old), new)]


def _options_added_at_default(old_flat: Mapping[str, Any], new: Mapping[str, Any]) -> set[str]:
    from ferkit.methods import get_method

    method = new.get("method") or {}
    try:
        defaults = get_method(str(method.get("name"))).defaults
    except ConfigError:
        return set()
    return {f"method.{k}" for k, v in defaults.items()
            if f"method.{k}" not in old_flat and k in method and json.loads(json.dumps(method[k])) == v}


def method_text(cell: Mapping[str, Any]) -> str:
    """The method and the keys its grid entry sets (``adacm weak_views=3 ...``)."""
    m = dict(cell["overrides"].get("method") or {})
    name = m.pop("name", "?")
    return " ".join([str(name), *(f"{k}={v}" for k, v in m.items())])


# ---- run directories -----------------------------------------------------------------------------
def cell_status(cell: Mapping[str, Any], runs_dir: Path, out: Path | None = None) -> str:
    """done (scored), trained (its model is, the score is not), partial (a checkpoint to resume),
    saved (only ``out``, the results folder, holds its row: a run restores it rather than training it,
    unless a cell sharing its training is not saved, :func:`restore_saved_cells`) or new."""
    train_dir = runs_dir / cell.get("train_cell", cell["name"])
    if (runs_dir / cell["name"] / RESULT).is_file():
        return "done"
    if (train_dir / TRAINED).is_file():
        return "trained"
    if (train_dir / "checkpoints" / "last.pt").is_file():
        return "partial"
    if out is not None and not (train_dir / "config.yaml").is_file() and "train_cfg" in cell \
            and saved_cell(cell, out) is not None:
        return "saved"
    return "new"


def saved_cell(cell: Mapping[str, Any], out: Path) -> Path | None:
    """The results folder's copy of a finished cell (``out/cells/<cell>/``) when it holds the cell's row
    and was trained with the cell's run config, else None."""
    saved = Path(out) / "cells" / cell["name"]
    if not (saved / RESULT).is_file() or not (saved / "config.yaml").is_file():
        return None
    if config_differences(yaml_load((saved / "config.yaml").read_text()) or {}, cell["train_cfg"]):
        return None
    return saved


def restore_saved_cells(cells: Sequence[Mapping[str, Any]], runs_dir: Path, out: Path) -> list[str]:
    """Bring back into ``runs_dir`` the rows of finished cells that only the results folder still holds
    (the run directories of an earlier sitting on another machine); returns their names.

    A training shared by several cells (noise's natural cells score the 0 % model) is restored only
    when every cell scoring it is saved: one of them left to score would otherwise retrain the model
    under rows the new weights did not make. A cell whose run directory exists is left to it (it
    resumes, or is refused as before)."""
    by_training: dict[str, list[Mapping[str, Any]]] = {}
    for c in cells:
        by_training.setdefault(c["train_cell"], []).append(c)
    restored = []
    for train_cell, group in by_training.items():
        train_dir = runs_dir / train_cell
        if (train_dir / "config.yaml").is_file() or any(cell_status(c, runs_dir) == "done" for c in group):
            continue
        saved = [saved_cell(c, out) for c in group]
        if any(s is None for s in saved):
            continue
        train_dir.mkdir(parents=True, exist_ok=True)
        for c, folder in zip(group, saved):
            for name in CELL_FILES:
                if (folder / name).is_file() and not (train_dir / name).is_file():
                    shutil.copy2(folder / name, train_dir / name)
            (runs_dir / c["name"]).mkdir(parents=True, exist_ok=True)
            shutil.copy2(folder / RESULT, runs_dir / c["name"] / RESULT)
            restored.append(c["name"])
    return restored


def check_same_config(run_dir: Path, cfg: Mapping[str, Any]) -> None:
    """Refuse to resume or reuse a run directory trained with another config."""
    saved = run_dir / "config.yaml"
    if not saved.is_file():
        return
    diff = config_differences(yaml_load(saved.read_text()) or {}, cfg)
    if diff:
        raise ConfigError(f"{run_dir} was trained with another config (differs in {', '.join(diff[:6])}); "
                          "give another --runs folder or delete that run directory")


def epoch_rows(run_dir: Path) -> list[dict[str, Any]]:
    """The epoch rows of log.jsonl, the last one per epoch (a resumed run may repeat a row).

    A cell restored from the results folder has no log.jsonl, only the metrics.csv that
    :data:`CELL_FILES` keeps (the same epoch rows): its rows come from there, so the curves and plots
    of a grid finished over several sittings keep every cell."""
    rows: dict[int, dict[str, Any]] = {}
    log = Path(run_dir) / "log.jsonl"
    if log.is_file():
        for line in log.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                if r.get("kind") == "epoch":
                    rows[int(r["epoch"])] = r
    else:
        for r in metrics_csv_rows(Path(run_dir) / "metrics.csv", empty_as_none=True):
            if "epoch" in r:
                rows[int(r["epoch"])] = r
    return [rows[k] for k in sorted(rows)]


def run_meta(run_dir: Path) -> dict[str, Any]:
    """The run's meta.json (commit and device of its training), empty where there is none."""
    p = Path(run_dir) / "meta.json"
    return json.loads(p.read_text()) if p.is_file() else {}


def copy_cell_files(cells: Sequence[Mapping[str, Any]], runs_dir: Path, out: Path,
                    names: tuple[str, ...] = CELL_FILES) -> None:
    """Copy each finished cell's run config, meta and metrics (from the run that trained it) and its
    result into ``out/cells/<cell>/``."""
    for c in cells:
        dst = out / "cells" / c["name"]
        dst.mkdir(parents=True, exist_ok=True)
        src = runs_dir / c.get("train_cell", c["name"])
        for name in names:
            if (src / name).is_file():
                shutil.copy2(src / name, dst / name)
        if (runs_dir / c["name"] / RESULT).is_file():
            shutil.copy2(runs_dir / c["name"] / RESULT, dst / RESULT)


# ---- table helpers -------------------------------------------------------------------------------
def stats(values: Iterable[float | None]) -> dict[str, Any]:
    """Mean, sample std, range and count over the seeds (None values left out)."""
    v = np.array([x for x in values if x is not None], np.float64)
    if not v.size:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else None,
            "min": float(v.min()), "max": float(v.max()), "n": int(v.size)}


def pm(s: Mapping[str, Any], scale: float = 100.0, digits: int = 2) -> str:
    """``61.23 ± 0.45 (2)``: a mean with its spread and count, for the markdown tables."""
    if s["mean"] is None:
        return "-"
    text = f"{s['mean'] * scale:.{digits}f}"
    if s["std"] is not None:
        text += f" ± {s['std'] * scale:.{digits}f}"
    return text + f" ({s['n']})"


def log(text: str) -> None:
    print(text, flush=True)


# ---- the kinds ---------------------------------------------------------------------------------------
class ExperimentKind:
    """One experiment kind: the keys its config takes, its extra options, its run.

    ``keys``: the top-level config keys; ``options``: ``ferkit experiment`` options beyond
    :data:`COMMON_OPTIONS` that it takes, with their defaults; ``grid``: whether it takes the
    options of a grid of trainings (``--only``, budgets, ``--runs``, ``key=value``)."""

    name: str = ""
    keys: frozenset[str] = frozenset()
    options: dict[str, Any] = {}
    grid: bool = True

    def __init__(self, exp: dict[str, Any], config_path: Path, opts: SimpleNamespace) -> None:
        self.exp, self.config_path, self.opts = exp, config_path, opts

    @classmethod
    def check_config(cls, exp: dict[str, Any], path: Path) -> None:
        """Kind-specific checks of the config (before any work)."""

    def check_options(self) -> None:
        """Kind-specific checks of the options (before any work)."""

    def run(self, env: dict[str, Any] | None) -> dict[str, Any] | None:
        """List (dry run: ``env`` is None) or do the work; ``env`` is the environment read at the start."""
        raise NotImplementedError

    def results_dir(self, folder: str) -> Path:
        """``--out``, else ``<results_dir>/<folder>`` (both relative to the working directory)."""
        o = self.opts
        return work_path(o.out) if o.out else work_path(self.exp.get("results_dir") or "results") / folder

    def cli_record(self) -> dict[str, Any]:
        """The options as the results record them (as the old scripts' ``vars(args)``)."""
        o = vars(self.opts)
        rec = {k: (list(o[k]) if isinstance(o[k], tuple) else o[k]) for k in COMMON_OPTIONS}
        rec.update({k: (list(o[k]) if isinstance(o[k], tuple) else o[k]) for k in self.options})
        rec.update(config=o["config"], overrides=list(o["overrides"]))
        return rec

    def finish(self, out: Path, env: Mapping[str, Any], table: dict[str, Any], json_name: str = "table.json",
               markdown: str | None = None) -> None:
        """What every kind writes last: the record, its markdown, the experiment config, the dirty mark."""
        from ferkit.evaluation.io import write_json_atomic

        mark_tree_state(out, env)
        write_json_atomic(table, out / json_name)
        if markdown is not None:
            (out / "table.md").write_text(markdown)
        shutil.copy2(self.config_path, out / "config.yaml")


class GridKind(ExperimentKind):
    """A grid of trainings: each kind says how its cells are made, scored and tabulated."""

    def folder(self) -> str:
        suffix = self.folder_suffix()
        return self.exp["name"] + (f"-{suffix}" if suffix else "")

    def folder_suffix(self) -> str:
        return budget_suffix(self.opts)

    def runs_dir(self) -> Path:
        o = self.opts
        return work_path(o.runs) if o.runs else work_path(self.exp.get("runs_dir") or "runs") / self.folder()

    def cell_options(self) -> SimpleNamespace:
        """The options the cells' run configs are made from (a kind may add overrides)."""
        return self.opts

    def plan(self, runs_dir: Path) -> list[dict[str, Any]]:
        """Every cell with its run config (``cfg``) and the cell whose run trains it (``train_cell``)."""
        cells = grid_cells(self.exp["grid"])
        opts = self.cell_options()
        for c in cells:
            c["cfg"] = cell_config(self.exp, c, opts, runs_dir, self.config_path)
            c["train_cell"], c["train_cfg"] = c["name"], c["cfg"]
        return cells

    def budget(self, cells: list[dict[str, Any]]) -> dict[str, Any]:
        """What every cell shares, for the table's caption."""
        return {}

    def dry_run(self, cells: list[dict[str, Any]], chosen: list[dict[str, Any]], runs_dir: Path, out: Path,
                budget: Mapping[str, Any]) -> None:
        log(f"{len(chosen)} of {len(cells)} cells; runs in {runs_dir}, results in {out}")
        for c in chosen:
            log(f"  {c['name']:<40} {cell_status(c, runs_dir, out):<8} {self.describe(c)}")

    def describe(self, cell: Mapping[str, Any]) -> str:
        return ""

    def before_training(self, chosen: list[dict[str, Any]]) -> None:
        """Checks that would otherwise fail only after hours of training."""

    def row_fields(self, cell: Mapping[str, Any]) -> dict[str, Any]:
        """Kind fields of a cell's result row, between its axes and its scores."""
        return {}

    def score(self, cell: Mapping[str, Any], run_dir: Path, device: str) -> dict[str, Any]:
        raise NotImplementedError

    def result_line(self, row: Mapping[str, Any]) -> str:
        return f"[{row['cell']}] accuracy {row['accuracy']:.4f}"

    def write(self, grid: SimpleNamespace) -> tuple[dict[str, Any], str, str]:
        """(the record's kind part, the markdown table, the closing line) of the finished cells."""
        raise NotImplementedError

    def run_cell(self, cell: Mapping[str, Any], runs_dir: Path, device: str) -> dict[str, Any]:
        """Train (or resume, or reuse) the cell's model, score it, and keep its row in its own folder."""
        from ferkit.engine.trainer import Trainer
        from ferkit.evaluation.io import write_json_atomic

        run_dir = runs_dir / cell["train_cell"]
        check_same_config(run_dir, cell["train_cfg"])
        if cell_status(cell, runs_dir) == "done":
            log(f"[{cell['name']}] done, skipped")
            return json.loads((runs_dir / cell["name"] / RESULT).read_text())
        if not (run_dir / TRAINED).is_file():
            log(f"[{cell['name']}] training -> {run_dir}")
            Trainer(copy.deepcopy(cell["train_cfg"]), run_dir=run_dir).fit()
            write_json_atomic({"epochs": int(cell["train_cfg"]["train"]["epochs"])}, run_dir / TRAINED)
        elif cell["train_cell"] != cell["name"]:
            log(f"[{cell['name']}] the model of {cell['train_cell']}")
        row = {"cell": cell["name"], **cell["axes"], **self.row_fields(cell), "run_dir": str(run_dir),
               "epochs": int(cell["cfg"]["train"]["epochs"]), **self.score(cell, run_dir, device)}
        write_json_atomic(row, runs_dir / cell["name"] / RESULT)
        log(self.result_line(row))
        return row

    def run(self, env: dict[str, Any] | None) -> dict[str, Any] | None:
        runs_dir, out = self.runs_dir(), self.results_dir(self.folder())
        cells = self.plan(runs_dir)
        chosen = select(cells, self.opts.only)
        budget = self.budget(cells)
        if self.opts.dry_run:
            self.dry_run(cells, chosen, runs_dir, out, budget)
            return None
        restored = restore_saved_cells(cells, runs_dir, out)
        if restored:
            log(f"{len(restored)} finished cell(s) restored from {out / 'cells'}: {', '.join(restored)}")
        start = env or {}
        self.before_training(chosen)
        device = self.opts.device or "auto"
        for c in chosen:
            self.run_cell(c, runs_dir, device)
        rows, done = [], []
        for c in cells:  # every finished cell of the grid, not only this call's
            if cell_status(c, runs_dir) == "done":
                check_same_config(runs_dir / c["train_cell"], c["train_cfg"])
                rows.append(json.loads((runs_dir / c["name"] / RESULT).read_text()))
                done.append(c)
        missing = [c["name"] for c in cells if cell_status(c, runs_dir) != "done"]
        out.mkdir(parents=True, exist_ok=True)
        start = {**start, "cell_commits": cell_commits(rows)}
        grid = SimpleNamespace(rows=rows, cells=cells, done=done, missing=missing, env=start, budget=budget,
                               out=out, runs_dir=runs_dir)
        part, markdown, message = self.write(grid)
        table = {"experiment": self.exp, "config_file": str(self.config_path), "cli": self.cli_record(),
                 "budget": budget, "runs_dir": str(runs_dir), "environment": start, **part}
        self.finish(out, start, table, markdown=markdown)
        copy_cell_files(done, runs_dir, out)
        log(message)
        return table


# ---- the entry point -------------------------------------------------------------------------------
def all_options() -> dict[str, Any]:
    """Every option of ``ferkit experiment`` with its default: the common ones and each kind's."""
    out = dict(COMMON_OPTIONS)
    for name in list_kinds():
        out.update(get_kind(name).options)
    return out


def open_experiment(config: str | Path, overrides: Sequence[str] = (), **options: Any) -> ExperimentKind:
    """The runner of ``config``'s kind with these options, everything checked before any work
    (options as :func:`run_experiment`'s); ``.plan(runs_dir)`` gives a grid's cells and run configs."""
    known = all_options()
    bad = sorted(set(options) - set(known))
    if bad:
        raise ConfigError(f"unknown experiment option(s) {', '.join(bad)} (known: {', '.join(sorted(known))})")
    path = Path(config)
    exp = load_experiment(path)
    kind_cls = get_kind(infer_kind(exp))
    given = {k: v for k, v in options.items() if v not in (None, False, (), [])}
    allowed = set(kind_cls.options) | {"device", "out", "dry_run"} | (set(GRID_OPTIONS) if kind_cls.grid else set())
    refused = sorted(k for k in given if k not in allowed)
    if overrides and "overrides" not in allowed:
        refused.insert(0, "key=value overrides")
    if refused:
        names = [k if k.startswith("key=") else "--" + k.replace("_", "-") for k in refused]
        takes = sorted("--" + k.replace("_", "-") for k in allowed if k != "overrides")
        raise ConfigError(f"experiments of kind {kind_cls.name} do not take {', '.join(names)} "
                          f"(they take {', '.join(takes)})")
    opts = SimpleNamespace(config=str(config), overrides=tuple(overrides),
                           **{k: options.get(k, d) for k, d in {**COMMON_OPTIONS, **kind_cls.options}.items()})
    opts.only = tuple(opts.only or ())
    kind = kind_cls(exp, path, opts)
    kind.check_options()
    return kind


def run_experiment(config: str | Path, overrides: Sequence[str] = (), **options: Any) -> dict[str, Any] | None:
    """Run (or, with ``dry_run=True``, list) the experiment of ``config``; returns its record (None for a dry run).

    ``options`` are ``ferkit experiment``'s: ``only`` (``["axis=value[,value]", ...]``), ``epochs``,
    ``limit_train``, ``limit_val``, ``device``, ``runs``, ``out``, ``dry_run``, and the kinds' own
    (analyses: ``limit``; ssl: ``steps_per_epoch``, ``labelled``; cross_dataset: ``model``, ``dataset``,
    ``no_config_datasets``, ``batch_size``, ``threads``). An option the config's kind does not take is
    an error, never silently ignored.
    """
    kind = open_experiment(config, overrides, **options)
    # the commit and the tree state are read once, now, before any cell trains: a commit made during a
    # long run must not be credited with results it did not make
    return kind.run(None if kind.opts.dry_run else environment())
