"""The APSM experiments of issue 6, each from one config: the ablation grid and the uncertainty analyses.

    python benchmarks/apsm_experiments.py configs/experiments/apsm_ablation.yaml \\
        [--only backbone=resnet18 --only variant=baseline,pe+usl ...] [--epochs N] [--limit-train N] \\
        [--limit-val N] [--device auto] [--runs DIR] [--out DIR] [--dry-run] [key=value ...]
    python benchmarks/apsm_experiments.py configs/experiments/apsm_analyses.yaml [--limit N] [--device auto] \\
        [--out DIR] [--dry-run]

**Ablation** (``kind: ablation``): every cell of ``grid`` (the product of its axes, in file order)
is a ferkit run config = ``base`` <- the cell's axis values <- the ``key=value`` arguments (which
apply to every cell), trained with ferkit's Trainer into ``runs/<name>/<cell>``. A cell whose run
directory holds ``cell_result.json`` is finished and skipped; an interrupted one resumes from its
checkpoint (the Trainer's exact resume); a run directory trained with a different config is an
error rather than a silent mix. ``--epochs`` / ``--limit-train`` / ``--limit-val`` change the
budget, so they also change the default run and result folders (``<name>-e5-n4000``). Each cell is
then scored on its validation split with its **last** checkpoint (the best epoch is selected on
that same split, so its accuracy is optimistic; it is reported beside, never instead). The table
(``results/<name>/table.json`` + ``table.md``) has mean +- sample standard deviation over the seeds,
the gain over the baseline, and the paper's Table 2 figures; it also holds every finished cell of
the grid, so the grid can be run in pieces (``--only``). With the experiment config, the commit and
each cell's resolved run config (``cells/<cell>/``).

**Analyses** (``kind: analyses``): the named trained runs are scored on one split (FER+ PublicTest
in the committed config) and ``results/<name>/`` gets ``analyses.json`` (every number) and the PNGs:
accuracy per uncertainty bin (Figure 3), risk-coverage with AURC (Figure 3), occlusion sweep
(Figure 4), t-SNE with the silhouette score (Figure 5), and beyond the paper the Spearman rho
between uncertainty and the entropy of the FER+ votes, error-detection AUROC against softmax
entropy and 1 - max probability, and ECE.

Relative paths in an experiment config (data, runs, results) are relative to the repository root.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ferkit.engine.config import config_differences as ferkit_config_differences
from ferkit.engine.config import flatten_config, load_config, yaml_load
from ferkit.errors import ConfigError, InputError

from _common import REPO, environment, grid_parser, run_cli

ABLATION_KEYS = {"kind", "name", "title", "runs_dir", "results_dir", "base", "grid", "paper"}
ANALYSES_KEYS = {"kind", "name", "results_dir", "runs", "checkpoint", "data", "device", "compare", "analyses"}
ANALYSES = {"uncertainty_bins", "risk_coverage", "occlusion", "tsne", "ferplus_votes", "error_detection"}
REQUIRED_AXES = ("backbone", "variant", "dataset")
#: run-config keys that may differ between a run directory and the config resuming it
RUNTIME_KEYS = {"train.device", "train.progress", "train.threads", "train.resume", "train.log_every",
                "train.eval_batch_size", "data.path", "data.options.cache"}
RESULT = "cell_result.json"
TABLE_METRICS = ("accuracy", "macro_f1", "ece", "nll", "aurc", "error_auroc", "error_auroc_entropy",
                 "best_val_accuracy", "train_time_s")


# ---- config handling ------------------------------------------------------------------------
def repo_path(p: str | Path) -> Path:
    """``p`` as given when absolute, else relative to the repository root (configs name data so)."""
    p = Path(p).expanduser()
    return p if p.is_absolute() else REPO / p


def read_experiment(path: str | Path, known_by_kind: Mapping[str | None, set[str]]) -> dict[str, Any]:
    """An experiment YAML, checked for what every runner needs: the file exists, holds a mapping,
    its ``kind`` is one of ``known_by_kind`` (a ``None`` key: the config has no kind) and it has no
    key outside that kind's set; ``name`` defaults to the file's stem. Shared by all the runners."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"experiment config not found: {path}")
    exp = yaml_load(path.read_text()) or {}
    if not isinstance(exp, Mapping):
        raise ConfigError(f"experiment config {path} must hold a mapping of keys")
    kind = exp.get("kind")
    known = known_by_kind.get(kind)
    if known is None:
        kinds = " or ".join(str(k) for k in known_by_kind if k is not None)
        raise ConfigError(f"experiment config {path}: 'kind' must be {kinds}, not {kind!r}")
    unknown = sorted(set(exp) - known)
    if unknown:
        raise ConfigError(f"experiment config {path}: unknown key(s) {', '.join(unknown)} "
                          f"(known{' for ' + kind if kind else ''}: {', '.join(sorted(known))})")
    exp = dict(exp)
    exp.setdefault("name", path.stem)
    return exp


def load_experiment(path: str | Path) -> dict[str, Any]:
    """The experiment config, checked: ``kind`` ablation or analyses, known top-level keys only."""
    exp = read_experiment(path, {"ablation": ABLATION_KEYS, "analyses": ANALYSES_KEYS})
    kind = exp["kind"]
    if kind == "ablation":
        grid = exp.get("grid") or {}
        missing = [a for a in REQUIRED_AXES if a not in grid]
        if missing:
            raise ConfigError(f"experiment config {path}: grid needs the axes {', '.join(missing)}")
    else:
        if not exp.get("runs") or not exp.get("data"):
            raise ConfigError(f"experiment config {path}: an analyses config needs 'runs' and 'data'")
        bad = sorted(set(exp.get("analyses") or {}) - ANALYSES)
        if bad:
            raise ConfigError(f"unknown analyses {', '.join(bad)} (known: {', '.join(sorted(ANALYSES))})")
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


def grid_cells(exp: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every cell of the grid: ``{"name", "axes": {axis: value}, "overrides": run-config layer}``.

    An axis is a mapping (value -> run-config layer) or, for ``seed``, a list of seeds.
    """
    axes = []
    for axis, values in exp["grid"].items():
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


def select(cells: list[dict[str, Any]], only: list[str]) -> list[dict[str, Any]]:
    """The cells matching every ``axis=value[,value...]`` filter."""
    wanted: dict[str, set[str]] = {}
    axes = set(cells[0]["axes"]) if cells else set()
    for item in only:
        if "=" not in item:
            raise ConfigError(f"--only {item!r} is not of the form axis=value[,value...]")
        axis, values = item.split("=", 1)
        if axis not in axes:
            raise ConfigError(f"--only: unknown axis {axis!r} (axes: {', '.join(sorted(axes))})")
        wanted.setdefault(axis, set()).update(v.strip() for v in values.split(","))
    for axis, values in wanted.items():
        known = {str(c["axes"][axis]) for c in cells}
        bad = sorted(values - known)
        if bad:
            raise ConfigError(f"--only {axis}: unknown value(s) {', '.join(bad)} (known: {', '.join(sorted(known))})")
    return [c for c in cells if all(str(c["axes"][a]) in v for a, v in wanted.items())]


def budget_suffix(args: argparse.Namespace) -> str:
    parts = [f"e{args.epochs}" if args.epochs else "", f"n{args.limit_train}" if args.limit_train else "",
             f"v{args.limit_val}" if args.limit_val else ""]
    return "-".join(p for p in parts if p)


def cell_config(exp: Mapping[str, Any], cell: Mapping[str, Any], args: argparse.Namespace,
                runs_dir: Path) -> dict[str, Any]:
    """The resolved ferkit run config of one cell: base <- axes <- budget flags <- key=value."""
    layer = merge(exp.get("base") or {}, cell["overrides"])
    extra: dict[str, Any] = {"train": {}, "data": {}}
    if args.epochs:
        extra["train"]["epochs"] = int(args.epochs)
    if args.limit_train:
        extra["data"]["limit_train"] = int(args.limit_train)
    if args.limit_val:
        extra["data"]["limit_val"] = int(args.limit_val)
    if args.device:
        extra["train"]["device"] = args.device
    layer = merge(layer, extra)
    layer.update(name=cell["name"], output_dir=str(runs_dir))
    cfg = load_config(None, args.overrides, extra=layer)
    cfg["name"], cfg["output_dir"] = cell["name"], str(runs_dir)  # key=value may not move a cell
    if cfg["data"].get("path"):
        cfg["data"]["path"] = str(repo_path(cfg["data"]["path"]))
    return cfg


def config_differences(old: Mapping, new: Mapping) -> list[str]:
    """Keys whose values differ between two resolved run configs, runtime-only keys aside.

    A method option or run-config key the old run's config lacks but the new one holds at its
    default is not a difference: it was added to ferkit after that run, which trained as the
    default does (e.g. APSM's ``usl_warmup_epochs: 0``, ``data.holdout: null``)."""
    return [k for k in ferkit_config_differences(old, new, RUNTIME_KEYS)
            if k not in _options_added_at_default(flatten_config(old), new)]


def method_text(cell: Mapping[str, Any]) -> str:
    """The method and the keys its grid entry sets (``adacm weak_views=3 ...``)."""
    m = dict(cell["overrides"].get("method") or {})
    name = m.pop("name", "?")
    return " ".join([str(name), *(f"{k}={v}" for k, v in m.items())])


def _options_added_at_default(old_flat: Mapping[str, Any], new: Mapping[str, Any]) -> set[str]:
    from ferkit.methods import get_method

    method = new.get("method") or {}
    try:
        defaults = get_method(str(method.get("name"))).defaults
    except ConfigError:
        return set()
    return {f"method.{k}" for k, v in defaults.items()
            if f"method.{k}" not in old_flat and k in method and json.loads(json.dumps(method[k])) == v}


# ---- ablation: train, score, tabulate ------------------------------------------------------
def cell_status(run_dir: Path) -> str:
    if (run_dir / RESULT).is_file():
        return "done"
    if (run_dir / "checkpoints" / "last.pt").is_file():
        return "partial"
    return "new"


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
    """The epoch rows of log.jsonl, the last one per epoch (a resumed run may repeat a row)."""
    rows: dict[int, dict[str, Any]] = {}
    log = run_dir / "log.jsonl"
    if log.is_file():
        for line in log.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                if r.get("kind") == "epoch":
                    rows[int(r["epoch"])] = r
    return [rows[k] for k in sorted(rows)]


def score_cell(cfg: Mapping[str, Any], run_dir: Path, device: str) -> dict[str, Any]:
    """Validation metrics of a trained cell's last checkpoint, with its uncertainty's usefulness."""
    from ferkit.data import load_dataset
    from ferkit.data.splits import subsample
    from ferkit.engine.model_io import load_model
    from ferkit.evaluation.uncertainty import ENTROPY, ONE_MINUS_MAX, error_detection
    from ferkit.metrics import compute_metrics

    d = cfg["data"]
    val = load_dataset(d["dataset"], d["path"], d["val_split"], **(d.get("options") or {}))
    if d.get("limit_val"):
        val = val.subset(subsample(val.labels, int(d["limit_val"]), seed=int(cfg["seed"])))
    model = load_model(run_dir / "checkpoints" / "last.pt", device=device)
    probs, unc = model.classify(val.images, batch_size=int(cfg["train"]["eval_batch_size"]))
    m = compute_metrics(probs, val.labels, model.classes)
    det = error_detection(probs, val.labels, {"uncertainty": unc} if unc is not None else {})
    key = "uncertainty" if unc is not None else ENTROPY
    rows = epoch_rows(run_dir)
    best = max(rows, key=lambda r: r.get("val_accuracy", -1.0)) if rows else {}
    meta = json.loads((run_dir / "meta.json").read_text()) if (run_dir / "meta.json").is_file() else {}
    return {
        "n_val": m["n"], "accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "ece": m["ece"], "nll": m["nll"],
        "uncertainty_kind": "method" if unc is not None else "softmax_entropy",
        "aurc": det["aurc"][key], "error_auroc": det["auroc"][key], "error_auroc_entropy": det["auroc"][ENTROPY],
        "error_auroc_maxprob": det["auroc"][ONE_MINUS_MAX],
        "mean_uncertainty": float(np.mean(unc)) if unc is not None and len(unc) else None,
        "best_val_accuracy": best.get("val_accuracy"), "best_epoch": best.get("epoch"),
        "epochs_trained": len(rows), "train_time_s": float(sum(r.get("time_s", 0.0) for r in rows)),
        "git_commit": meta.get("git_commit"), "device": meta.get("device"),
    }


def run_cell(cell: Mapping[str, Any], cfg: dict[str, Any], runs_dir: Path, device: str) -> dict[str, Any]:
    """Train (or resume, or skip) one cell and return its result row."""
    from ferkit.engine.trainer import Trainer
    from ferkit.evaluation.io import write_json_atomic

    run_dir = runs_dir / cell["name"]
    check_same_config(run_dir, cfg)
    if cell_status(run_dir) == "done":
        print(f"[{cell['name']}] done, skipped", flush=True)
        return json.loads((run_dir / RESULT).read_text())
    print(f"[{cell['name']}] training -> {run_dir}", flush=True)
    Trainer(cfg, run_dir=run_dir).fit()
    row = {"cell": cell["name"], **cell["axes"], "run_dir": str(run_dir), "epochs": int(cfg["train"]["epochs"]),
           **score_cell(cfg, run_dir, device)}
    write_json_atomic(row, run_dir / RESULT)
    print(f"[{cell['name']}] accuracy {row['accuracy']:.4f}", flush=True)
    return row


def _stats(values: list[float]) -> dict[str, Any]:
    v = np.array([x for x in values if x is not None], np.float64)
    if not v.size:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else None,
            "min": float(v.min()), "max": float(v.max()), "n": int(v.size)}


def aggregate(rows: list[dict[str, Any]], exp: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One entry per (backbone, variant, dataset) with mean / std / range over its seeds."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(tuple(r[a] for a in REQUIRED_AXES), []).append(r)
    paper = (exp.get("paper") or {}).get("accuracy") or {}
    out = []
    for key, rs in groups.items():
        entry = dict(zip(REQUIRED_AXES, key))
        entry["seeds"] = sorted(r.get("seed", 0) for r in rs)
        for m in TABLE_METRICS:
            entry[m] = _stats([r.get(m) for r in rs])
        entry["paper_accuracy"] = (paper.get(key[0]) or {}).get(key[1])
        out.append(entry)
    base = {(e["backbone"], e["dataset"]): e for e in out if e["variant"] == "baseline"}
    for e in out:
        b = base.get((e["backbone"], e["dataset"]))
        ok = b is not None and e["accuracy"]["mean"] is not None and b["accuracy"]["mean"] is not None
        e["gain_over_baseline"] = e["accuracy"]["mean"] - b["accuracy"]["mean"] if ok else None
        pb = (paper.get(e["backbone"]) or {}).get("baseline")
        e["paper_gain"] = e["paper_accuracy"] - pb if e["paper_accuracy"] is not None and pb is not None else None
    return out


def copy_cell_files(rows: list[dict[str, Any]], out: Path,
                    names: tuple[str, ...] = ("config.yaml", "meta.json", "metrics.csv", RESULT)) -> None:
    """Copy each finished cell's run config, meta, metrics and result into ``out/cells/<cell>/``."""
    for r in rows:
        dst = out / "cells" / r["cell"]
        dst.mkdir(parents=True, exist_ok=True)
        for name in names:
            if (Path(r["run_dir"]) / name).is_file():
                shutil.copy2(Path(r["run_dir"]) / name, dst / name)


def _pm(s: Mapping[str, Any], scale: float = 100.0, digits: int = 2) -> str:
    if s["mean"] is None:
        return "-"
    text = f"{s['mean'] * scale:.{digits}f}"
    if s["std"] is not None:
        text += f" ± {s['std'] * scale:.{digits}f}"
    return text + f" ({s['n']})"


def _num(x: float | None, scale: float = 100.0, digits: int = 2, sign: bool = False) -> str:
    return "-" if x is None else f"{x * scale:{'+' if sign else ''}.{digits}f}"


def markdown_table(groups: list[dict[str, Any]], exp: Mapping[str, Any], env: Mapping[str, Any],
                   budget: Mapping[str, Any]) -> str:
    """The ablation table beside the paper's Table 2 (RAF-DB), and the uncertainty metrics."""
    paper = exp.get("paper") or {}
    datasets = list(dict.fromkeys(g["dataset"] for g in groups))
    order = {(b, v): i for i, (b, v) in enumerate(itertools.product(exp["grid"]["backbone"], exp["grid"]["variant"]))}
    by = {(g["backbone"], g["variant"], g["dataset"]): g for g in groups}
    keys = sorted({(g["backbone"], g["variant"]) for g in groups}, key=lambda k: order.get(k, 1e9))
    title = exp.get("title") or "APSM ablation (ferkit reproduction of seed 000 Table 2)"
    lines = [f"# {exp['name']}: {title}", "",
             f"Validation accuracy (%) of the **last** epoch, mean ± sample std over seeds (number of seeds); "
             f"gain = the variant's mean minus the baseline's. Commit `{env.get('git_commit')}`. Budget: "
             + ", ".join(f"{k} {v}" for k, v in budget.items()) + ".", ""]
    if paper.get("note"):
        lines += [str(paper["note"]).strip(), ""]
    head = ["backbone", "variant"]
    for d in datasets:
        head += [f"{d} acc", f"{d} gain", f"{d} best-epoch acc"]
    head += [f"paper {paper.get('dataset', 'RAF-DB')} acc", "paper gain"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for b, v in keys:
        cells = [b, v]
        any_g = None
        for d in datasets:
            g = by.get((b, v, d))
            any_g = any_g or g
            cells += [_pm(g["accuracy"]), _num(g["gain_over_baseline"], sign=True), _pm(g["best_val_accuracy"])] \
                if g else ["-", "-", "-"]
        pa = any_g["paper_accuracy"] if any_g else None
        pg = any_g["paper_gain"] if any_g else None
        cells += ["-" if pa is None else f"{pa:.2f}", "-" if pg is None else f"{pg:+.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Uncertainty on the validation split (last epoch): ECE (%), AURC (x100, lower is better) and "
              "AUROC for detecting misclassified faces (%) with the method's uncertainty (sigma^2 for APSM "
              "variants, softmax entropy for the baseline) and with softmax entropy.", ""]
    head = ["backbone", "variant", "dataset", "ECE", "AURC", "AUROC uncertainty", "AUROC entropy", "train time (s)"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for b, v in keys:
        for d in datasets:
            g = by.get((b, v, d))
            if g:
                lines.append("| " + " | ".join([b, v, d, _pm(g["ece"]), _pm(g["aurc"]), _pm(g["error_auroc"]),
                                                  _pm(g["error_auroc_entropy"]), _pm(g["train_time_s"], 1.0, 0)])
                             + " |")
    return "\n".join(lines) + "\n"


def run_ablation(exp: dict[str, Any], args: argparse.Namespace, config_path: Path) -> dict[str, Any] | None:
    from ferkit.evaluation.io import write_json_atomic

    suffix = budget_suffix(args)
    folder = exp["name"] + (f"-{suffix}" if suffix else "")
    runs_dir = repo_path(args.runs) if args.runs else repo_path(exp.get("runs_dir") or "runs") / folder
    out = repo_path(args.out) if args.out else repo_path(exp.get("results_dir") or "results") / folder
    cells = grid_cells(exp)
    chosen = select(cells, args.only)
    configs = {c["name"]: cell_config(exp, c, args, runs_dir) for c in cells}
    if args.dry_run:
        print(f"{len(chosen)} of {len(cells)} cells; runs in {runs_dir}, results in {out}")
        for c in chosen:
            cfg = configs[c["name"]]
            print(f"  {c['name']:<40} {cell_status(runs_dir / c['name']):<8} model={cfg['model']['name']} "
                  f"method={method_text(c)} data={cfg['data']['dataset']} {cfg['data'].get('options') or ''} "
                  f"seed={cfg['seed']} epochs={cfg['train']['epochs']} lr={cfg['optim']['lr']} "
                  f"batch={cfg['optim']['batch_size']} px={cfg['data']['image_size']}")
        return None
    device = args.device or "auto"
    for c in chosen:
        run_cell(c, configs[c["name"]], runs_dir, device)
    rows = []
    for c in cells:  # every finished cell of the grid, not only this call's
        if cell_status(runs_dir / c["name"]) == "done":
            check_same_config(runs_dir / c["name"], configs[c["name"]])
            rows.append(json.loads((runs_dir / c["name"] / RESULT).read_text()))
    out.mkdir(parents=True, exist_ok=True)
    env = environment(out)
    first = configs[cells[0]["name"]]
    budget = {"epochs": first["train"]["epochs"], "px": first["data"]["image_size"],
              "batch": first["optim"]["batch_size"], "optimiser": first["optim"]["name"], "lr": first["optim"]["lr"],
              "min_lr": first["schedule"]["min_lr"], "limit_train": first["data"]["limit_train"],
              "limit_val": first["data"]["limit_val"]}
    groups = aggregate(rows, exp)
    table = {"experiment": exp, "config_file": str(config_path), "cli": vars(args), "budget": budget,
             "runs_dir": str(runs_dir), "environment": env, "cells": rows, "groups": groups,
             "missing": [c["name"] for c in cells if cell_status(runs_dir / c["name"]) != "done"]}
    write_json_atomic(table, out / "table.json")
    (out / "table.md").write_text(markdown_table(groups, exp, env, budget))
    shutil.copy2(config_path, out / "config.yaml")
    copy_cell_files(rows, out)
    print(f"{len(rows)} of {len(cells)} cells finished; table in {out / 'table.md'}")
    return table


# ---- analyses ---------------------------------------------------------------------------------
def _analysis_data(exp: Mapping[str, Any], limit: int | None):
    """(dataset, raw FER+ votes or None, FER+ soft targets or None) for the analyses config's split."""
    from ferkit.data import load_dataset
    from ferkit.data.splits import subsample

    d = dict(exp["data"])
    name, path, split = d.get("dataset", "fer2013"), repo_path(d["path"]), d.get("split")
    opts = dict(d.get("options") or {})
    data = load_dataset(name, path, split, **opts)
    limit = limit or d.get("limit")
    idx = subsample(data.labels, int(limit), seed=int(d.get("seed", 0))) if limit else np.arange(len(data))
    data = data.subset(idx)
    votes = soft = None
    if name == "ferplus":
        votes = np.asarray(data.meta["votes"])[:, :8].astype(np.float64)  # the 8 emotions; unknown / NF left out
        wanted = (exp.get("analyses") or {})
        if "ferplus_votes" in wanted and (wanted["ferplus_votes"] or {}).get("soft_targets", True):
            ce = load_dataset(name, path, split, **{**opts, "mode": "crossentropy"}).subset(idx)
            if not np.array_equal(ce.meta["row"], data.meta["row"]):
                raise InputError("FER+ crossentropy and majority readers gave different rows")
            soft = ce.soft_targets
    return data, votes, soft


def _model_labels(model_classes: tuple[str, ...], data) -> np.ndarray:
    """Each row's true label as an index of the model's classes, -1 where the model lacks it."""
    lookup = np.array([model_classes.index(c) if c in model_classes else -1 for c in data.classes] + [-1])
    return lookup[np.where(data.labels >= 0, data.labels, len(data.classes))]


def analyse_run(name: str, source: str, exp: Mapping[str, Any], data, votes, soft, out: Path,
                device: str) -> dict[str, Any]:
    """Every configured analysis of one trained run; its PNGs go to ``out``."""
    from ferkit.engine.model_io import load_model
    from ferkit.evaluation import embedding as emb
    from ferkit.evaluation import uncertainty as U
    from ferkit.evaluation.evaluate import align_labels
    from ferkit.metrics import compute_metrics

    a = exp.get("analyses") or {}
    path = repo_path(source)
    ckpt = exp.get("checkpoint", "last")
    if path.is_dir() and ckpt in ("last", "best"):
        path = path / "checkpoints" / f"{ckpt}.pt"
    model = load_model(path, device=device)
    probs, unc = model.classify(data.images)
    p, labels, classes, mapping = align_labels(probs, model.classes, data.labels, data.classes)
    ml = _model_labels(model.classes, data)
    keep = ml >= 0
    ent = U.softmax_entropy(p)
    u = np.asarray(unc, np.float64)[keep] if unc is not None else ent
    kind = "sigma^2" if unc is not None else "entropy"
    correct = p.argmax(1) == labels
    m = compute_metrics(p, labels, classes)
    res: dict[str, Any] = {"source": str(path), "classes": list(model.classes), "label_mapping": mapping,
                           "uncertainty_kind": "method" if unc is not None else "softmax_entropy",
                           "n": int(keep.sum()), "accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
                           "ece": m["ece"], "nll": m["nll"], "reliability": m["reliability"],
                           "mean_uncertainty": float(u.mean())}
    res["_scores"] = {f"{name}: {kind}": u} | ({f"{name}: entropy": ent} if unc is not None else {}) \
        | {f"{name}: 1 - max p": 1.0 - p.max(1)}
    res["_correct"] = correct
    if "uncertainty_bins" in a:
        cfg = a["uncertainty_bins"] or {}
        table = U.accuracy_by_uncertainty(u, correct, int(cfg.get("bins", 10)), cfg.get("strategy", "quantile"))
        res["uncertainty_bins"] = table
        U.plot_accuracy_by_uncertainty(table, out / f"accuracy_by_uncertainty_{name}.png",
                                       title=f"{name}: accuracy by {kind}", xlabel=kind)
        if cfg.get("uniform_too", True) and cfg.get("strategy", "quantile") != "uniform":
            res["uncertainty_bins_uniform"] = U.accuracy_by_uncertainty(u, correct, int(cfg.get("bins", 10)),
                                                                        "uniform")
    if "risk_coverage" in a or "error_detection" in a:
        det = U.error_detection(p, labels, {"uncertainty": u} if unc is not None else {})
        res["error_detection"] = det
    if "ferplus_votes" in a and votes is not None:
        r = {"votes": U.vote_agreement(u, votes[keep]),
             "votes_softmax_entropy": U.vote_agreement(ent, votes[keep])}
        if soft is not None:
            r["soft_targets"] = U.vote_agreement(u, soft[keep])
            r["soft_targets_softmax_entropy"] = U.vote_agreement(ent, soft[keep])
        res["ferplus_votes"] = r
    if "occlusion" in a:
        cfg = a["occlusion"] or {}
        res["occlusion"] = U.occlusion_sweep(
            model, np.asarray(data.images)[keep], ml[keep], cfg.get("fractions", (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)),
            block=cfg.get("block"), fill=int(cfg.get("fill", 128)), seed=int(cfg.get("seed", 0)))
        res["occlusion"]["accuracy_note"] = "argmax over all the model's classes"
    if "tsne" in a:
        cfg = a["tsne"] or {}
        feats = emb.embeddings(model, np.asarray(data.images)[keep])
        res["tsne"] = emb.tsne_plot(feats, ml[keep], model.classes, out / f"tsne_{name}.png",
                                    seed=int(cfg.get("seed", 0)), sample=cfg.get("sample", 2000),
                                    title=f"{name}: t-SNE of the classifier's features",
                                    metric=cfg.get("metric", "euclidean"), threads=cfg.get("threads"))
        res["tsne"]["path"] = Path(res["tsne"]["path"]).name
        res["tsne"]["feature_dim"] = int(feats.shape[1])
    return res


def goals(results: Mapping[str, Any], compare: Mapping[str, str]) -> dict[str, Any]:
    """Issue 6's goals, checked on the analysed runs (None where an input is missing)."""
    ap, bl = results.get(compare.get("method", "apsm")), results.get(compare.get("baseline", "baseline"))
    out: dict[str, Any] = {}
    if ap and "error_detection" in ap:
        auc = ap["error_detection"]["auroc"]
        out["auroc_uncertainty"] = auc.get("uncertainty")
        out["auroc_own_softmax_entropy"] = auc.get("softmax_entropy")
        out["beats_own_softmax_entropy"] = (None if auc.get("uncertainty") is None or auc.get("softmax_entropy")
                                            is None else auc["uncertainty"] > auc["softmax_entropy"])
        if bl and "error_detection" in bl:
            be = bl["error_detection"]["auroc"].get("softmax_entropy")
            out["auroc_baseline_softmax_entropy"] = be
            out["beats_baseline_softmax_entropy"] = (None if be is None or auc.get("uncertainty") is None
                                                     else auc["uncertainty"] > be)
    if ap and "ferplus_votes" in ap:
        rho = ap["ferplus_votes"]["votes"]["rho"]
        out["vote_rho"] = rho
        out["vote_rho_at_least_0.4"] = None if rho is None else rho >= 0.4
    if ap and bl:
        out["accuracy_method"], out["accuracy_baseline"] = ap["accuracy"], bl["accuracy"]
        out["accuracy_at_least_baseline"] = ap["accuracy"] >= bl["accuracy"]
    return out


def run_analyses(exp: dict[str, Any], args: argparse.Namespace, config_path: Path) -> dict[str, Any] | None:
    from ferkit.evaluation import uncertainty as U
    from ferkit.evaluation.io import write_json_atomic

    out = repo_path(args.out) if args.out else repo_path(exp.get("results_dir") or "results") / exp["name"]
    runs = {str(k): str(v) for k, v in exp["runs"].items()}
    if args.dry_run:
        print(f"analyses {', '.join(sorted(exp.get('analyses') or {}))} on {exp['data']} -> {out}")
        for k, v in runs.items():
            print(f"  {k:<12} {repo_path(v)}  ({'found' if repo_path(v).exists() else 'MISSING'})")
        return None
    missing = [v for v in runs.values() if not repo_path(v).exists()]
    if missing:
        raise InputError(f"trained run(s) not found: {', '.join(missing)} (train them first, e.g. with the "
                         "ablation config)")
    data, votes, soft = _analysis_data(exp, args.limit)
    out.mkdir(parents=True, exist_ok=True)
    device = args.device or exp.get("device", "auto")
    results = {k: analyse_run(k, v, exp, data, votes, soft, out, device) for k, v in runs.items()}
    a = exp.get("analyses") or {}
    report: dict[str, Any] = {"experiment": exp, "config_file": str(config_path), "cli": vars(args),
                              "environment": environment(), "n": len(data), "split": exp["data"].get("split"),
                              "runs": {}}
    if "risk_coverage" in a:
        scores, correct = {}, {}
        for r in results.values():
            for k, s in r["_scores"].items():
                scores[k], correct[k] = s, r["_correct"]
        U.plot_risk_coverage(scores, None, out / "risk_coverage.png", correct_by_score=correct,
                             title=f"Risk-coverage on {exp['data'].get('dataset')} {exp['data'].get('split')}")
        report["risk_coverage"] = {k: U.aurc_table({k: s}, correct[k])["aurc"][k] for k, s in scores.items()}
    if "occlusion" in a:
        U.plot_occlusion({k: r["occlusion"] for k, r in results.items()}, out / "occlusion.png",
                         title="Accuracy and uncertainty under random occluding blocks")
    for k, r in results.items():
        report["runs"][k] = {kk: v for kk, v in r.items() if not kk.startswith("_")}
    report["goals"] = goals(report["runs"], exp.get("compare") or {})
    report["pngs"] = sorted(p.name for p in out.glob("*.png"))
    write_json_atomic(report, out / "analyses.json")
    shutil.copy2(config_path, out / "config.yaml")
    print(json.dumps(report["goals"], indent=2))
    print(f"analyses written to {out}")
    return report


# ---- CLI --------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = grid_parser(__doc__, "configs/experiments/apsm_ablation.yaml or apsm_analyses.yaml", "axis=value[,value]",
                     scope="ablation: ")
    ap.add_argument("--limit", type=int, default=None, help="analyses: stratified subset of the analysed split")
    return ap.parse_intermixed_args(argv)  # key=value may come after the options


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    args = parse_args(argv)
    path = Path(args.config)
    exp = load_experiment(path)
    if exp["kind"] == "ablation":
        return run_ablation(exp, args, path)
    if args.overrides or args.only or args.epochs or args.limit_train or args.limit_val or args.runs:
        raise ConfigError("an analyses config takes only --limit, --device, --out and --dry-run")
    return run_analyses(exp, args, path)


if __name__ == "__main__":
    run_cli(main, "apsm_experiments")
