"""``kind: ablation``: a grid of run configs scored on their validation split (the APSM ablation of
issue 6, the RALD and face-pretrained ablations).

Every cell of ``grid`` (the product of its axes, in file order; ``backbone``, ``variant`` and
``dataset`` are required, ``seed`` usual) is trained by the shared runner, then scored on its
validation split with its **last** checkpoint (the best epoch is selected on that same split, so its
accuracy is optimistic; it is reported beside, never instead), with how well its uncertainty (the
method's own, else the softmax entropy) finds its errors. The table (``table.json`` + ``table.md``)
has mean +- sample standard deviation over the seeds, the gain over the baseline variant, and the
paper's figures from ``paper``.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from ferkit.errors import ConfigError
from ferkit.experiments.core import GridKind, commit_text, epoch_rows, method_text, pm, run_meta, stats
from ferkit.experiments.registry import register_kind

KEYS = frozenset({"kind", "name", "title", "runs_dir", "results_dir", "base", "grid", "paper"})
REQUIRED_AXES = ("backbone", "variant", "dataset")
TABLE_METRICS = ("accuracy", "macro_f1", "ece", "nll", "aurc", "error_auroc", "error_auroc_entropy",
                 "best_val_accuracy", "train_time_s")


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
    meta = run_meta(run_dir)
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
            entry[m] = stats([r.get(m) for r in rs])
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
             f"gain = the variant's mean minus the baseline's. {commit_text(env)} Budget: "
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
            cells += [pm(g["accuracy"]), _num(g["gain_over_baseline"], sign=True), pm(g["best_val_accuracy"])] \
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
                lines.append("| " + " | ".join([b, v, d, pm(g["ece"]), pm(g["aurc"]), pm(g["error_auroc"]),
                                                  pm(g["error_auroc_entropy"]), pm(g["train_time_s"], 1.0, 0)])
                             + " |")
    return "\n".join(lines) + "\n"


@register_kind
class Ablation(GridKind):
    """The grid of ``grid`` (axes backbone, variant, dataset, usually seed) over ``base``."""

    name = "ablation"
    keys = KEYS

    @classmethod
    def check_config(cls, exp: dict[str, Any], path: Path) -> None:
        grid = exp.get("grid") or {}
        missing = [a for a in REQUIRED_AXES if a not in grid]
        if missing:
            raise ConfigError(f"experiment config {path}: grid needs the axes {', '.join(missing)}")

    def describe(self, cell: Mapping[str, Any]) -> str:
        cfg = cell["cfg"]
        return (f"model={cfg['model']['name']} method={method_text(cell)} data={cfg['data']['dataset']} "
                f"{cfg['data'].get('options') or ''} seed={cfg['seed']} epochs={cfg['train']['epochs']} "
                f"lr={cfg['optim']['lr']} batch={cfg['optim']['batch_size']} px={cfg['data']['image_size']}")

    def budget(self, cells: list[dict[str, Any]]) -> dict[str, Any]:
        first = cells[0]["cfg"]
        return {"epochs": first["train"]["epochs"], "px": first["data"]["image_size"],
                "batch": first["optim"]["batch_size"], "optimiser": first["optim"]["name"],
                "lr": first["optim"]["lr"], "min_lr": first["schedule"]["min_lr"],
                "limit_train": first["data"]["limit_train"], "limit_val": first["data"]["limit_val"]}

    def score(self, cell: Mapping[str, Any], run_dir: Path, device: str) -> dict[str, Any]:
        return score_cell(cell["cfg"], run_dir, device)

    def write(self, grid: SimpleNamespace) -> tuple[dict[str, Any], str, str]:
        groups = aggregate(grid.rows, self.exp)
        return ({"cells": grid.rows, "groups": groups, "missing": grid.missing},
                markdown_table(groups, self.exp, grid.env, grid.budget),
                f"{len(grid.rows)} of {len(grid.cells)} cells finished; table in {grid.out / 'table.md'}")
