"""``kind: ssl``: the semi-supervised comparison of issue 9, every method x seed at one label budget.

Why a kind of its own: the SSL methods are only comparable when everything but the objective is
the same, so every cell (``base`` <- its ``grid.method`` entry <- its seed <- the budget options <-
``key=value``) is checked to differ from the others in ``method`` and ``seed`` only. The seed
also draws the labelled split, so within a seed every method sees the same labelled and unlabelled
rows, and methods are compared paired by seed. Cells are trained and scored as the ablation's
(validation split, **last** checkpoint's EMA weights). Extra options: ``steps_per_epoch`` and
``labelled`` (a count or a fraction), which also name the default folders (``<name>-e2-n3000-s20-l400``);
with ``limit_train`` below the labelled count, give ``labelled`` too.

The results folder gets ``table.json`` (every finished cell, per-method mean / std over seeds, the
goal check, the plotted curves, the budget), ``table.md`` (beside the report's Table 1 figures from
the config's ``paper``) and, from the logs of the Ada-CM runs (``plots.methods``),
``margins_<method>.png`` (per-class margins over epochs) and ``pseudo_labels_<method>.png``
(pseudo-label precision and recall of the above- and below-margin sets, and the fraction above),
mean over the seeds with their range.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from ferkit.engine.config import flatten_config
from ferkit.errors import ConfigError
from ferkit.experiments.ablation import score_cell
from ferkit.experiments.core import (
    GridKind,
    budget_suffix,
    cell_status,
    commit_text,
    epoch_rows,
    log,
    method_text,
    pm,
    stats,
)
from ferkit.experiments.registry import register_kind

KEYS = frozenset({"kind", "name", "runs_dir", "results_dir", "base", "grid", "labels", "compare", "plots", "paper"})
METRICS = ("accuracy", "best_val_accuracy", "macro_f1", "ece", "nll", "train_time_s")
PL_KEYS = ("pl_above_precision", "pl_below_precision", "pl_above_recall", "pl_below_recall", "pl_above_fraction")
#: keys that may differ between cells: what a cell is (its method, its seed, its name)
CELL_KEYS = ("name", "seed", "method.")


def check_budget(configs: Mapping[str, Mapping[str, Any]]) -> None:
    """Every cell must share the budget: configs may differ only in the method, the seed and the name."""
    names = list(configs)
    flat = {n: flatten_config(configs[n]) for n in names}
    ref = flat[names[0]]
    for n in names[1:]:
        keys = set(ref) | set(flat[n])
        diff = sorted(k for k in keys if not k.startswith(CELL_KEYS) and ref.get(k) != flat[n].get(k))
        if diff:
            raise ConfigError(f"cells {names[0]} and {n} differ in {', '.join(diff[:6])}: the comparison needs "
                              "one budget (set such keys in base, not in a grid entry)")
    for n, cfg in configs.items():
        d = cfg["data"]
        if d.get("labelled") is None:
            raise ConfigError(f"cell {n}: data.labelled is not set (a count or a fraction of the training split)")
        lab, limit = d["labelled"], d.get("limit_train")
        if limit and isinstance(lab, int) and lab >= int(limit):
            raise ConfigError(f"--limit-train {limit} keeps no more rows than data.labelled={lab}: give --labelled "
                              "(a count below it or a fraction)")


# ---- tables ---------------------------------------------------------------------------------------
def aggregate(rows: Sequence[Mapping[str, Any]], exp: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One entry per method (grid order): mean / std over seeds, per-seed accuracies, gain over ``ce``."""
    paper = (exp.get("paper") or {}).get("accuracy") or {}
    labels = exp.get("labels") or {}
    supervised = (exp.get("compare") or {}).get("supervised", "ce")
    out = []
    for method in exp["grid"]["method"]:
        rs = sorted((r for r in rows if r["method"] == method), key=lambda r: r["seed"])
        if not rs:
            continue
        e: dict[str, Any] = {"method": method, "label": labels.get(method, method), "seeds": [r["seed"] for r in rs],
                             "accuracy_by_seed": {str(r["seed"]): r["accuracy"] for r in rs},
                             "paper_accuracy": paper.get(method)}
        for m in METRICS:
            e[m] = stats([r.get(m) for r in rs])
        out.append(e)
    base = next((e for e in out if e["method"] == supervised), None)
    for e in out:
        ok = base is not None and e["accuracy"]["mean"] is not None and base["accuracy"]["mean"] is not None
        e["gain_over_supervised"] = e["accuracy"]["mean"] - base["accuracy"]["mean"] if ok else None
    return out


def goal_check(rows: Sequence[Mapping[str, Any]], compare: Mapping[str, Any]) -> dict[str, Any]:
    """Issue 9's goal: the method's mean accuracy above each baseline's, with the seed-paired differences.

    ``met`` is None while a side has no finished cell; the paired differences (same seed = same
    labelled split) say how much of a gap is the split's luck.
    """
    method = compare.get("method", "adacm")
    acc = {(r["method"], r["seed"]): r["accuracy"] for r in rows}
    mine = {s: a for (m, s), a in acc.items() if m == method}
    out: dict[str, Any] = {"method": method, "baselines": {}}
    for b in compare.get("baselines") or []:
        theirs = {s: a for (m, s), a in acc.items() if m == b}
        if not mine or not theirs:
            out["baselines"][b] = {"met": None, "reason": f"no finished cell of {method if not mine else b}"}
            continue
        a, c = float(np.mean(list(mine.values()))), float(np.mean(list(theirs.values())))
        seeds = sorted(set(mine) & set(theirs))
        diffs = [mine[s] - theirs[s] for s in seeds]
        out["baselines"][b] = {"met": a > c, "method_mean": a, "baseline_mean": c, "difference": a - c,
                               "paired_seeds": seeds, "paired_differences": diffs,
                               "paired": stats(diffs), "seeds_higher": int(sum(d > 0 for d in diffs))}
    mets = [v["met"] for v in out["baselines"].values()]
    out["met"] = None if not mets or any(m is None for m in mets) else all(mets)
    return out


def markdown_table(groups: Sequence[Mapping[str, Any]], goal: Mapping[str, Any], exp: Mapping[str, Any],
                   env: Mapping[str, Any], budget: Mapping[str, Any], pngs: Sequence[str],
                   missing: Sequence[str]) -> str:
    """The accuracy table beside the report's Table 1, the goal check and the plots."""
    paper = exp.get("paper") or {}
    pdata = list(paper.get("datasets") or [])
    lines = [f"# {exp['name']}: semi-supervised FER (ferkit counterpart of seed 003 Table 1)", "",
             f"{budget['dataset']} {budget['val_split']} accuracy (%) of the **last** epoch (EMA weights), mean ± "
             "sample std over seeds (number of seeds); gain = the method's mean minus the supervised baseline's; "
             "best epoch = selected on the same split (optimistic, shown beside). Every cell has the same labelled "
             f"split per seed and the same budget: " + ", ".join(f"{k} {v}" for k, v in budget.items())
             + f". {commit_text(env)}", ""]
    if paper.get("note"):
        lines += [str(paper["note"]).strip(), ""]
    head = ["method", "what", "accuracy", "gain", "best-epoch acc", "macro-F1", "per seed"]
    head += [f"report {d}" for d in pdata]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for g in groups:
        gain = "-" if g["gain_over_supervised"] is None else f"{g['gain_over_supervised'] * 100:+.2f}"
        seeds = ", ".join(f"s{s}: {a * 100:.2f}" for s, a in g["accuracy_by_seed"].items())
        cells = [g["method"], g["label"], pm(g["accuracy"]), gain, pm(g["best_val_accuracy"]),
                 pm(g["macro_f1"]), seeds]
        pa = g["paper_accuracy"] or []
        cells += [f"{pa[i]:.2f}" if i < len(pa) and pa[i] is not None else "-" for i in range(len(pdata))]
        lines.append("| " + " | ".join(cells) + " |")
    if missing:
        lines += ["", f"Not finished ({len(missing)}): {', '.join(missing)}."]
    verdict = {True: "**met**", False: "**not met**", None: "not yet measurable"}[goal["met"]]
    lines += ["", f"## Goal: {goal['method']} above {', '.join(goal['baselines']) or '-'}: {verdict}", ""]
    for b, r in goal["baselines"].items():
        if r["met"] is None:
            lines.append(f"- vs {b}: {r['reason']}")
            continue
        p = r["paired"]
        spread = f" ± {p['std'] * 100:.2f}" if p["std"] is not None else ""
        lines.append(f"- vs {b}: {r['method_mean'] * 100:.2f} against {r['baseline_mean'] * 100:.2f} "
                     f"({r['difference'] * 100:+.2f} points; paired by seed {p['mean'] * 100:+.2f}{spread}, "
                     f"higher on {r['seeds_higher']} of {len(r['paired_seeds'])} seeds)")
    if pngs:
        lines += ["", "## Plots (mean over seeds, shaded: their range)", ""]
        lines += [f"![{p}]({p})" for p in pngs]
    return "\n".join(lines) + "\n"


# ---- curves and plots -------------------------------------------------------------------------------
def method_curves(run_dirs: Sequence[Path]) -> dict[str, Any]:
    """Per-epoch margins and pseudo-label statistics of one method's runs: mean, min, max over the runs.

    Epoch rows log the margins in use during the epoch (``margin/<class>``) and the pseudo-label
    counts of that epoch (``pl_*``); undefined values (nothing counted) are None and stay gaps.
    """
    runs = [rows for rows in (epoch_rows(Path(d)) for d in run_dirs) if rows]
    if not runs:
        return {}
    epochs = sorted({int(r["epoch"]) for rows in runs for r in rows})
    keys = [k for k in runs[0][0] if k.startswith("margin/")]
    keys += [k for k in PL_KEYS if any(k in r for rows in runs for r in rows)]
    series: dict[str, dict[str, list[float | None]]] = {}
    for k in keys:
        v = np.full((len(runs), len(epochs)), np.nan)
        for i, rows in enumerate(runs):
            for r in rows:
                if r.get(k) is not None:
                    v[i, epochs.index(int(r["epoch"]))] = float(r[k])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN epochs stay NaN (None in the JSON)
            stats = {"mean": np.nanmean(v, 0), "min": np.nanmin(v, 0), "max": np.nanmax(v, 0)}
        series[k] = {s: [None if np.isnan(x) else float(x) for x in arr] for s, arr in stats.items()}
    return {"epochs": [e + 1 for e in epochs], "runs": len(runs), "series": series}


def _line(ax, epochs: list[int], s: Mapping[str, list], label: str, **kw) -> None:
    def arr(name: str) -> np.ndarray:
        return np.array([np.nan if x is None else x for x in s[name]], float)

    from matplotlib.ticker import MaxNLocator

    line, = ax.plot(epochs, arr("mean"), marker="o", markersize=3, label=label, **kw)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    lo, hi = arr("min"), arr("max")
    if np.any(hi > lo):
        ax.fill_between(epochs, lo, hi, color=line.get_color(), alpha=0.15, linewidth=0)


def plot_margins(curves: Mapping[str, Any], path: Path, title: str, floor: float | None) -> Path:
    """Per-class margins over epochs (the margins each epoch trained with)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for k, s in curves["series"].items():
        if k.startswith("margin/"):
            _line(ax, curves["epochs"], s, k.split("/", 1)[1])
    if floor is not None:
        ax.axhline(floor, color="grey", linestyle=":", linewidth=1, label=f"floor {floor:g}")
    ax.set(xlabel="epoch", ylabel="confidence margin", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_pseudo_labels(curves: Mapping[str, Any], path: Path, title: str,
                       reference: tuple[str, Mapping[str, Any]] | None = None) -> Path:
    """Pseudo-label precision and recall of the above- and below-margin sets, and the fraction above."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    panels = (("precision", ("pl_above_precision", "pl_below_precision")),
              ("recall (of all unlabelled rows)", ("pl_above_recall", "pl_below_recall")),
              ("fraction above the margin", ("pl_above_fraction",)))
    colours = {"above": "tab:blue", "below": "tab:orange"}
    for ax, (what, keys) in zip(axes, panels):
        for k in keys:
            part = k.split("_")[1]
            if k in curves["series"]:
                _line(ax, curves["epochs"], curves["series"][k], f"{part} the margin", color=colours[part])
            if reference and k in reference[1].get("series", {}):
                _line(ax, reference[1]["epochs"], reference[1]["series"][k], f"{reference[0]} {part}",
                      color=colours[part], linestyle="--", alpha=0.6)
        ax.set(xlabel="epoch", title=what, ylim=(-0.02, 1.02))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def make_plots(exp: Mapping[str, Any], done: Mapping[str, Sequence[Path]], configs: Mapping[str, Mapping],
               out: Path) -> tuple[dict[str, Any], list[str]]:
    """The curves of the plotted methods (and the reference) and their PNGs in ``out``."""
    plots = exp.get("plots") or {}
    grid = exp["grid"]["method"]
    methods = plots.get("methods") or [m for m, v in grid.items() if (v.get("method") or {}).get("name") == "adacm"]
    ref_name = plots.get("reference")
    ref = method_curves(done.get(ref_name, [])) if ref_name else {}
    curves: dict[str, Any] = {ref_name: ref} if ref else {}
    pngs = []
    for m in methods:
        c = method_curves(done.get(m, []))
        if not c:
            continue
        curves[m] = c
        floor = next((cfg["method"].get("margin_floor") for name, cfg in configs.items()
                      if name.startswith(f"{m}_s")), None)
        n = f" ({c['runs']} runs)" if c["runs"] > 1 else ""
        if any(k.startswith("margin/") for k in c["series"]):
            pngs.append(plot_margins(c, out / f"margins_{m}.png", f"{m}: per-class margins{n}", floor).name)
        if any(k in c["series"] for k in PL_KEYS):
            pngs.append(plot_pseudo_labels(c, out / f"pseudo_labels_{m}.png", f"{m}: pseudo labels{n}",
                                           (ref_name, ref) if ref else None).name)
    return curves, pngs


@register_kind
class Ssl(GridKind):
    """Methods x seeds at one label budget, every cell checked to share that budget."""

    name = "ssl"
    keys = KEYS
    options = {"steps_per_epoch": None, "labelled": None}

    @classmethod
    def check_config(cls, exp: dict[str, Any], path: Path) -> None:
        grid = exp.get("grid") or {}
        if set(grid) != {"method", "seed"} or not isinstance(grid["method"], Mapping) or not grid["method"]:
            raise ConfigError(f"experiment config {path}: grid must have exactly the axes method (a mapping) and "
                              "seed")
        methods = set(map(str, grid["method"]))
        compare = exp.get("compare") or {}
        named = {"labels": set(exp.get("labels") or {}),
                 "paper.accuracy": set((exp.get("paper") or {}).get("accuracy") or {}),
                 "plots.methods": set((exp.get("plots") or {}).get("methods") or []),
                 "compare": {compare.get("method"), *(compare.get("baselines") or [])} - {None}}
        ref = (exp.get("plots") or {}).get("reference")
        if ref:
            named["plots.reference"] = {ref}
        for where, names in named.items():
            bad = sorted(map(str, names - methods))
            if bad:
                raise ConfigError(f"experiment config {path}: {where} names {', '.join(bad)}, not a grid.method "
                                  f"value ({', '.join(grid['method'])})")

    def check_options(self) -> None:
        lab = self.opts.labelled
        if lab is not None:
            try:
                ok = float(lab) > 0
            except ValueError:
                ok = False
            if not ok:
                raise ConfigError(f"--labelled must be a positive count or fraction, not {lab!r}")

    def folder_suffix(self) -> str:
        """``e2-n3000-s20-l400``: the budget options in the folder names, so a quick run never mixes with the
        real one."""
        o = self.opts
        parts = [budget_suffix(o), f"s{o.steps_per_epoch}" if o.steps_per_epoch else "",
                 f"l{o.labelled}" if o.labelled is not None else ""]
        return "-".join(p for p in parts if p)

    def cell_options(self) -> SimpleNamespace:
        """The SSL budget options become key=value overrides of every cell."""
        o = self.opts
        extra = []
        if o.steps_per_epoch:
            extra.append(f"train.steps_per_epoch={int(o.steps_per_epoch)}")
        if o.labelled is not None:
            extra.append(f"data.labelled={o.labelled}")
        return SimpleNamespace(**{**vars(o), "overrides": (*o.overrides, *extra)})

    def plan(self, runs_dir: Path) -> list[dict[str, Any]]:
        cells = super().plan(runs_dir)
        check_budget({c["name"]: c["cfg"] for c in cells})
        return cells

    def budget(self, cells: list[dict[str, Any]]) -> dict[str, Any]:
        first = cells[0]["cfg"]
        d, t, o = first["data"], first["train"], first["optim"]
        return {"dataset": d["dataset"], "train_split": d["train_split"], "val_split": d["val_split"],
                "labelled": d["labelled"], "unlabelled_ratio": d["unlabelled_ratio"], "model": first["model"]["name"],
                "px": d["image_size"], "batch": o["batch_size"], "optimiser": o["name"], "lr": o["lr"],
                "epochs": t["epochs"], "steps_per_epoch": t["steps_per_epoch"], "ema": t["ema"],
                "limit_train": d["limit_train"], "limit_val": d["limit_val"]}

    def dry_run(self, cells: list[dict[str, Any]], chosen: list[dict[str, Any]], runs_dir: Path, out: Path,
                budget: Mapping[str, Any]) -> None:
        log(f"{len(chosen)} of {len(cells)} cells; runs in {runs_dir}, results in {out}")
        log("every cell: " + ", ".join(f"{k}={v}" for k, v in budget.items()))
        for c in chosen:
            log(f"  {c['name']:<22} {cell_status(c, runs_dir, out):<8} seed={c['cfg']['seed']} method={method_text(c)}")

    def score(self, cell: Mapping[str, Any], run_dir: Path, device: str) -> dict[str, Any]:
        return score_cell(cell["cfg"], run_dir, device)

    def write(self, grid: SimpleNamespace) -> tuple[dict[str, Any], str, str]:
        done: dict[str, list[Path]] = {}
        for c in grid.done:
            done.setdefault(c["axes"]["method"], []).append(grid.runs_dir / c["name"])
        groups = aggregate(grid.rows, self.exp)
        goal = goal_check(grid.rows, self.exp.get("compare") or {})
        curves, pngs = make_plots(self.exp, done, {c["name"]: c["cfg"] for c in grid.cells}, grid.out)
        return ({"cells": grid.rows, "methods": groups, "goal": goal, "curves": curves, "pngs": pngs,
                 "missing": grid.missing},
                markdown_table(groups, goal, self.exp, grid.env, grid.budget, pngs, grid.missing),
                f"{len(grid.rows)} of {len(grid.cells)} cells finished; goal {goal['met']}; "
                f"table in {grid.out / 'table.md'}")
