"""The noise benchmark of issue 7 from one config: clean accuracy of each method under noisy training labels.

    python benchmarks/noise_benchmark.py configs/experiments/noise_fer2013.yaml \\
        [--only method=ce,eac --only noise=0,10,natural ...] [--epochs N] [--limit-train N] [--limit-val N] \\
        [--device auto] [--runs DIR] [--out DIR] [--dry-run] [key=value ...]

The grid is ``methods`` x (``noise_rates`` + ``natural``). A cell ``<method>_<percent>`` is the
ferkit run config ``base`` <- the method's layer <- ``data.noise_rate`` <- the ``key=value``
arguments, trained with ferkit's Trainer into ``runs/<name>/<cell>`` (the training labels flipped
by :func:`ferkit.data.inject_noise`, seeded by ``data.noise_seed``, so every method sees the same
flipped rows) and scored with its **last** checkpoint on the clean validation split (FER2013
PublicTest). A cell ``<method>_natural`` is the method's 0 % model (cells with the same run config
train once) scored against the FER+ majority labels of the same test faces, classes matched by
name: FER2013's own labels as the noise, FER+ votes as the truth.

Cells are resumable, as in ``apsm_experiments.py`` (whose grid machinery this reuses): a cell with
``cell_result.json`` is skipped, an interrupted training resumes from its checkpoint, and a run
directory trained with another config is an error. ``--epochs`` / ``--limit-train`` / ``--limit-val``
change the budget and so the default run and result folders (``noise_fer2013-e1-n2000``).

``results/<name>/`` gets ``table.json`` (every number, the experiment config, the commit and each
cell's row), ``table.md`` (accuracy and macro-F1 per method and rate, the drop against 0 %, the
issue's goal check beside the paper's reference drops, the detection table),
``accuracy_vs_noise.png``, ``config.yaml`` and ``cells/<cell>/`` (the resolved run config, meta,
metrics). Detection: for every noisy cell, the AUROC with which each per-sample signal of the
final model, computed on its training set, ranks the flipped labels above the kept ones: the
training loss under the given (noisy) label for every method, the uncertainty of APSM and RUL, and
``1 - weight`` of SCN (for natural cells, the labels that disagree with the FER+ majority).
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from apsm_experiments import (
    budget_suffix,
    cell_config,
    check_same_config,
    copy_cell_files,
    epoch_rows,
    grid_cells,
    read_experiment,
    repo_path,
    select,
)
from ferkit.errors import ConfigError, InputError

from _common import environment, grid_parser, run_cli

if TYPE_CHECKING:
    from ferkit.data.types import FaceDataset
    from ferkit.engine.model_io import LoadedModel

KEYS = {"kind", "name", "runs_dir", "results_dir", "base", "methods", "noise_rates", "natural", "goal",
        "reference"}
NATURAL_KEYS = {"dataset", "split", "options", "detection"}
NATURAL = "natural"
RESULT = "cell_result.json"
TRAINED = "trained.json"  # written after a training finished: its other cells need no Trainer
PLOT = "accuracy_vs_noise.png"
#: per-sample signals for finding flipped labels: the method's own uncertainty, named as the paper names it
OWN_SIGNAL = {"apsm": "uncertainty", "rul": "uncertainty", "scn": "1 - weight"}


# ---- config and cells -----------------------------------------------------------------------
def rate_name(rate: float) -> str:
    """The noise axis value of a rate: 0.1 -> ``10`` (percent, so ``--only noise=10``)."""
    return f"{round(float(rate) * 100, 6):g}"


def load_experiment(path: str | Path) -> dict[str, Any]:
    """The noise experiment config, checked: ``kind: noise``, known keys, rates in [0, 1] with 0 among them."""
    path = Path(path)
    exp = read_experiment(path, {"noise": KEYS})
    methods = exp.get("methods")
    if not isinstance(methods, Mapping) or not methods:
        raise ConfigError(f"experiment config {path}: 'methods' must map each method to its run-config layer")
    rates = exp.get("noise_rates")
    if not isinstance(rates, list) or not rates or not all(isinstance(r, (int, float)) and 0 <= r < 1
                                                           for r in rates):
        raise ConfigError(f"experiment config {path}: 'noise_rates' must be a list of rates in [0, 1)")
    if 0 not in rates:
        raise ConfigError(f"experiment config {path}: 'noise_rates' needs 0, the reference of every drop")
    nat = exp.get("natural")
    if nat is not None:
        if not isinstance(nat, Mapping) or set(nat) - NATURAL_KEYS:
            raise ConfigError(f"experiment config {path}: 'natural' takes {', '.join(sorted(NATURAL_KEYS))}")
    return exp


def grid(exp: Mapping[str, Any]) -> dict[str, Any]:
    """The ``grid`` of apsm_experiments' form: method axis x noise axis (percent names, then natural)."""
    noise: dict[str, Any] = {rate_name(r): {"data": {"noise_rate": float(r)}} for r in exp["noise_rates"]}
    if exp.get("natural") is not None:
        noise[NATURAL] = {"data": {"noise_rate": 0.0}}  # FER2013's own labels: the noise is natural
    return {"method": {str(m): dict(layer or {}) for m, layer in exp["methods"].items()}, "noise": noise}


def _training_key(cfg: Mapping[str, Any]) -> str:
    """Cells whose run configs agree in everything but the name train one model."""
    return json.dumps({k: v for k, v in cfg.items() if k != "name"}, sort_keys=True, default=str)


def plan(exp: Mapping[str, Any], args: argparse.Namespace, runs_dir: Path) -> list[dict[str, Any]]:
    """Every cell with its resolved run config and the cell whose run directory trains it."""
    cells = grid_cells({"grid": grid(exp)})
    first: dict[str, str] = {}
    configs: dict[str, dict[str, Any]] = {}
    for c in cells:
        cfg = cell_config(exp, c, args, runs_dir)
        configs[c["name"]] = cfg
        train = first.setdefault(_training_key(cfg), c["name"])
        natural = c["axes"]["noise"] == NATURAL
        c.update(cfg=cfg, train_cell=train, train_cfg=configs[train], natural=natural,
                 noise_rate=float(cfg["data"]["noise_rate"]))
    return cells


def status(cell: Mapping[str, Any], runs_dir: Path) -> str:
    """done (scored), trained, partial (a checkpoint to resume) or new."""
    train_dir = runs_dir / cell["train_cell"]
    if (runs_dir / cell["name"] / RESULT).is_file():
        return "done"
    if (train_dir / TRAINED).is_file():
        return "trained"
    return "partial" if (train_dir / "checkpoints" / "last.pt").is_file() else "new"


# ---- per-cell data --------------------------------------------------------------------------
def natural_test(exp: Mapping[str, Any], cfg: Mapping[str, Any]) -> FaceDataset:
    """The natural cells' test set: the FER+ reader on the run's FER2013 file (limit_val applies)."""
    from ferkit.data import load_dataset
    from ferkit.data.splits import subsample

    nat, d = exp["natural"], cfg["data"]
    opts = {**(d.get("options") or {}), **(nat.get("options") or {})}
    test = load_dataset(nat.get("dataset", "ferplus"), d["path"], nat.get("split", "PublicTest"), **opts)
    if d.get("limit_val"):
        test = test.subset(subsample(test.labels, int(d["limit_val"]), seed=int(cfg["seed"])))
    return test


def natural_noise_mask(exp: Mapping[str, Any], cfg: Mapping[str, Any],
                       train: FaceDataset) -> tuple[np.ndarray, np.ndarray]:
    """(disagrees, has_vote) per training row: its FER2013 label is not the FER+ majority of its votes.

    The training rows are matched to the votes by csv row (FER+ shares FER2013's rows); rows
    without a FER+ majority (dropped by the reader, or no strict majority) are left out. A FER+
    majority of a class the training labels lack (contempt) counts as a disagreement.
    """
    from ferkit.data import load_dataset
    from ferkit.data.splits import subsample

    nat, d = exp["natural"], cfg["data"]
    if d.get("labelled") is not None:
        raise ConfigError("natural-noise detection does not support data.labelled")
    opts = dict(d.get("options") or {})
    split = load_dataset(d["dataset"], d["path"], d["train_split"], **opts)
    usage = load_dataset(d["dataset"], d["path"], None, **opts).meta["usage"]
    rows = np.flatnonzero(usage == split.split)
    if len(rows) != len(split):
        raise InputError(f"cannot match {d['dataset']} {split.split} rows to their csv rows")
    if d.get("limit_train"):
        keep = subsample(split.labels, int(d["limit_train"]), seed=int(cfg["seed"]))
        rows, labels = rows[keep], split.labels[keep]
    else:
        labels = split.labels
    if not np.array_equal(labels, train.labels):
        raise InputError("the training rows of the natural cell differ from its run's (noise_rate must be 0)")
    fp_opts = {**opts, **(nat.get("options") or {}), "mode": "majority"}
    votes = load_dataset(nat.get("dataset", "ferplus"), d["path"], split.split, **fp_opts)
    fp_label = np.full(int(max(rows.max(initial=0), votes.meta["row"].max(initial=0))) + 1, -1, np.int64)
    fp_label[votes.meta["row"]] = votes.labels
    truth = fp_label[rows]
    names = np.array(list(votes.classes) + [""])
    own = np.array(list(train.classes) + [""])
    has = (truth >= 0) & (labels >= 0)
    return has & (names[truth] != own[labels]), has


def training_signals(model: LoadedModel, train: FaceDataset, method: str, batch_size: int) -> dict[str, np.ndarray]:
    """Per training row: the final model's loss under the given label, and the method's own signal."""
    probs, unc = model.classify(train.images, batch_size=batch_size)
    labels = np.asarray(train.labels)
    p = probs[np.arange(len(labels)), np.clip(labels, 0, None)]
    out = {"loss": -np.log(np.clip(p.astype(np.float64), 1e-12, None))}
    if unc is not None:
        out[OWN_SIGNAL.get(method, "uncertainty")] = np.asarray(unc, np.float64)
    return out


def detection(signals: Mapping[str, np.ndarray], noisy: np.ndarray, valid: np.ndarray) -> dict[str, Any]:
    """AUROC of each signal for ranking the noisy labels above the clean ones (None when undefined)."""
    from ferkit.metrics import auroc

    n_pos = int((noisy & valid).sum())
    res: dict[str, Any] = {"n": int(valid.sum()), "n_noisy": n_pos,
                           "noisy_fraction": n_pos / int(valid.sum()) if valid.any() else None, "auroc": {}}
    for name, s in signals.items():
        ok = valid & np.isfinite(s)
        try:
            res["auroc"][name] = auroc(s[ok], noisy[ok])
        except ValueError:  # no noisy or no clean row
            res["auroc"][name] = None
    return res


def score_cell(cell: Mapping[str, Any], exp: Mapping[str, Any], run_dir: Path, device: str) -> dict[str, Any]:
    """Clean test accuracy / macro-F1 of the cell's last checkpoint and its flipped-label detection."""
    from ferkit.engine.data import load_run_data
    from ferkit.engine.model_io import load_model
    from ferkit.evaluation.evaluate import align_labels
    from ferkit.metrics import compute_metrics

    cfg = cell["cfg"]
    bs = int(cfg["train"]["eval_batch_size"])
    train, val, _ = load_run_data(cfg)
    test = natural_test(exp, cfg) if cell["natural"] else val
    if test is None:
        raise ConfigError(f"cell {cell['name']}: data.val_split is not set, so there is no test split")
    model = load_model(run_dir / "checkpoints" / "last.pt", device=device)
    probs = model.predict_probs(test.images, batch_size=bs)
    p, labels, classes, mapping = align_labels(probs, model.classes, test.labels, test.classes)
    m = compute_metrics(p, labels, classes)
    det = None
    if cell["natural"] and (exp["natural"].get("detection", True)):
        noisy, valid = natural_noise_mask(exp, cfg, train)
        det = detection(training_signals(model, train, cfg["method"]["name"], bs), noisy, valid)
    elif not cell["natural"] and "flipped" in train.meta:
        noisy = np.asarray(train.meta["flipped"], bool)
        det = detection(training_signals(model, train, cfg["method"]["name"], bs), noisy, train.labels >= 0)
    rows = epoch_rows(run_dir)
    meta = json.loads((run_dir / "meta.json").read_text()) if (run_dir / "meta.json").is_file() else {}
    return {
        "test": {"dataset": exp["natural"].get("dataset", "ferplus") if cell["natural"] else cfg["data"]["dataset"],
                 "split": exp["natural"].get("split", "PublicTest") if cell["natural"] else cfg["data"]["val_split"],
                 "label_mapping": mapping},
        "n_test": m["n"], "accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "ece": m["ece"], "nll": m["nll"],
        "n_train": len(train), "flipped_fraction": float(np.mean(train.meta["flipped"]))
        if "flipped" in train.meta else 0.0,
        "detection": det, "epochs_trained": len(rows),
        "train_time_s": float(sum(r.get("time_s", 0.0) for r in rows)),
        "git_commit": meta.get("git_commit"), "device": meta.get("device"),
    }


def run_cell(cell: Mapping[str, Any], exp: Mapping[str, Any], runs_dir: Path, device: str) -> dict[str, Any]:
    """Train (or resume, or reuse) the cell's model, score it, and keep its row in its own folder."""
    from ferkit.engine.trainer import Trainer
    from ferkit.evaluation.io import write_json_atomic

    run_dir = runs_dir / cell["train_cell"]
    check_same_config(run_dir, cell["train_cfg"])
    if status(cell, runs_dir) == "done":
        print(f"[{cell['name']}] done, skipped", flush=True)
        return json.loads((runs_dir / cell["name"] / RESULT).read_text())
    if not (run_dir / TRAINED).is_file():
        print(f"[{cell['name']}] training -> {run_dir}", flush=True)
        Trainer(copy.deepcopy(cell["train_cfg"]), run_dir=run_dir).fit()
        write_json_atomic({"epochs": int(cell["train_cfg"]["train"]["epochs"])}, run_dir / TRAINED)
    elif cell["train_cell"] != cell["name"]:
        print(f"[{cell['name']}] the model of {cell['train_cell']}", flush=True)
    row = {"cell": cell["name"], **cell["axes"], "noise_rate": cell["noise_rate"], "natural": cell["natural"],
           "trained_in": cell["train_cell"], "run_dir": str(run_dir), "epochs": int(cell["cfg"]["train"]["epochs"]),
           **score_cell(cell, exp, run_dir, device)}
    write_json_atomic(row, runs_dir / cell["name"] / RESULT)
    print(f"[{cell['name']}] accuracy {row['accuracy']:.4f} on {row['test']['dataset']} {row['test']['split']}",
          flush=True)
    return row


# ---- the table ------------------------------------------------------------------------------
def _limits(block: Mapping[str, Any] | None, key: str) -> dict[str, float]:
    """``{10: 1.0}`` (percent -> points) from the config, keyed by the noise axis names."""
    return {rate_name(float(k) / 100): float(v) for k, v in ((block or {}).get(key) or {}).items()}


def summarise(rows: list[dict[str, Any]], exp: Mapping[str, Any]) -> dict[str, Any]:
    """Accuracy / macro-F1 per method and noise, drops against 0 %, the goal check and the detection rows."""
    methods = [str(m) for m in exp["methods"]]
    noises = list(grid(exp)["noise"])
    by = {(r["method"], r["noise"]): r for r in rows}
    acc = {m: {n: by[(m, n)]["accuracy"] for n in noises if (m, n) in by} for m in methods}
    f1 = {m: {n: by[(m, n)]["macro_f1"] for n in noises if (m, n) in by} for m in methods}
    zero = rate_name(0)
    rated = [n for n in noises if n not in (zero, NATURAL)]
    drop = {m: {n: (acc[m][zero] - acc[m][n]) * 100 for n in rated if zero in acc[m] and n in acc[m]}
            for m in methods}
    limits = _limits(exp.get("goal"), "max_drop_points")
    per_method = {}
    for m in methods:
        within = {n: drop[m][n] <= lim if n in drop[m] else None for n, lim in limits.items()}
        per_method[m] = {"within": within,
                         "all": None if None in within.values() else all(within.values())}
    best = {}
    for n in rated:
        have = [m for m in methods if n in acc[m]]
        if have:
            b = max(have, key=lambda m: acc[m][n])
            d = drop[b].get(n)
            best[n] = {"method": b, "accuracy": acc[b][n], "drop_points": d, "limit_points": limits.get(n),
                       "within": None if d is None or n not in limits else d <= limits[n]}
    alls = [v["all"] for v in per_method.values()]
    met = True if True in alls else (False if alls and None not in alls else None)
    goal = {"max_drop_points": limits, "per_method": per_method, "best_accuracy_per_rate": best,
            "met_by": [m for m, v in per_method.items() if v["all"]], "met": met,
            "rule": "met when one method stays within every limit (its drop against its own 0 % accuracy)"}
    det = [{"cell": r["cell"], "method": r["method"], "noise": r["noise"], **r["detection"]}
           for r in rows if r.get("detection")]
    return {"methods": methods, "noise": noises, "accuracy": acc, "macro_f1": f1, "drop_points": drop,
            "goal": goal, "reference": {**(exp.get("reference") or {}),
                                        "drop_points": _limits(exp.get("reference"), "drop_points")},
            "detection": det}


def _pct(x: float | None, digits: int = 2, sign: bool = False) -> str:
    return "-" if x is None else f"{x * 100:{'+' if sign else ''}.{digits}f}"


def _pts(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _yes(x: bool | None) -> str:
    return "-" if x is None else ("yes" if x else "no")


def markdown_table(s: Mapping[str, Any], exp: Mapping[str, Any], env: Mapping[str, Any],
                   budget: Mapping[str, Any]) -> str:
    """The accuracy, drop, goal and detection tables of the benchmark."""
    zero = rate_name(0)
    rated = [n for n in s["noise"] if n not in (zero, NATURAL)]
    cols = [n for n in s["noise"] if n != NATURAL]
    nat = NATURAL in s["noise"]
    lines = [f"# {exp['name']}: accuracy under label noise (issue 7)", "",
             f"Clean {budget['data']} {budget['test']} accuracy (%) of the **last** epoch, one seed, the "
             f"training labels flipped by ferkit's injector (symmetric, seed {budget['noise_seed']}; every "
             f"method sees the same flipped rows). Commit `{env.get('git_commit')}`. Budget: "
             + ", ".join(f"{k} {v}" for k, v in budget.items() if k not in ("data", "test", "noise_seed")) + ".",
             ""]
    if nat:
        nt = exp["natural"]
        lines += [f"*natural*: the 0 % model (FER2013's own labels) scored against the {nt.get('dataset')} "
                  f"{(nt.get('options') or {}).get('mode', '')} labels of {nt.get('split')} (classes matched by "
                  "name; contempt and no-majority faces left out).", ""]
    head = ["method"] + [f"{n} %" for n in cols] + (["natural"] if nat else [])
    head += [f"macro-F1 {n} %" for n in cols]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in s["methods"]:
        a, f = s["accuracy"][m], s["macro_f1"][m]
        cells = [m] + [_pct(a.get(n)) for n in cols] + ([_pct(a.get(NATURAL))] if nat else [])
        cells += [_pct(f.get(n)) for n in cols]
        lines.append("| " + " | ".join(cells) + " |")
    g, ref = s["goal"], s["reference"]
    lim, rdrop = g["max_drop_points"], ref.get("drop_points") or {}
    lines += ["", "Drop in points against the method's own 0 % accuracy (lower is better); the goal row is the "
              "issue's limit for the best method.", ""]
    head = ["method"] + [f"{n} %" for n in rated] + ["within goal"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in s["methods"]:
        lines.append("| " + " | ".join([m] + [_pts(s["drop_points"][m].get(n)) for n in rated]
                                       + [_yes(g["per_method"][m]["all"])]) + " |")
    lines.append("| **goal (at most)** | " + " | ".join(_pts(lim.get(n), 1) for n in rated) + " | |")
    if rdrop:
        lines.append(f"| {ref.get('label', 'reference')} | " + " | ".join(_pts(rdrop.get(n), 1) for n in rated)
                     + " | |")
    best = "; ".join(f"{n} %: {b['method']} ({_pct(b['accuracy'])} %, drop {_pts(b['drop_points'])}, "
                     f"{'within' if b['within'] else 'over' if b['within'] is False else 'no limit / no 0 %'})"
                     for n, b in g["best_accuracy_per_rate"].items())
    verdict = {True: f"**met** (by {', '.join(g['met_by'])})", False: "**not met**",
               None: "**open** (cells missing)"}[g["met"]]
    lines += ["", "Goal (best method loses at most "
              + " / ".join(f"{_pts(lim[n], 1)}" for n in rated if n in lim)
              + f" points at {' / '.join(f'{n}' for n in rated if n in lim)} %): {verdict}. "
              f"Most accurate method per rate: {best or '-'}."]
    if ref.get("note"):
        lines += ["", f"{ref.get('label', 'Reference')}: {str(ref['note']).strip()}"]
    if s["detection"]:
        signals = list(dict.fromkeys(k for d in s["detection"] for k in d["auroc"]))
        lines += ["", "Finding the noisy training labels: AUROC (%) of each per-sample signal of the final model "
                  "on its training set (50 = chance; loss = cross-entropy under the given, noisy label; "
                  "uncertainty = APSM's sigma^2 / RUL's u; 1 - weight = SCN's importance). Noisy = flipped by "
                  "the injector, or for *natural* the FER2013 label disagreeing with the FER+ majority.", ""]
        head = ["method", "noise", "noisy rows"] + signals
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        order = {n: i for i, n in enumerate(s["noise"])}
        morder = {m: i for i, m in enumerate(s["methods"])}
        for d in sorted(s["detection"], key=lambda d: (order.get(d["noise"], 99), morder.get(d["method"], 99))):
            frac = d.get("noisy_fraction")
            lines.append("| " + " | ".join([d["method"], d["noise"], f"{d['n_noisy']} of {d['n']}"
                                            + (f" ({frac * 100:.1f} %)" if frac is not None else "")]
                                           + [_pct(d["auroc"].get(k), 1) for k in signals]) + " |")
    return "\n".join(lines) + "\n"


def plot(s: Mapping[str, Any], path: Path, title: str) -> Path:
    """Accuracy against the flipped fraction per method, and the drops beside the goal and the reference."""
    from ferkit.evaluation.plots import new_figure, save_figure

    cols = [n for n in s["noise"] if n != NATURAL]
    fig = new_figure((11, 4.2))
    ax1, ax2 = fig.subplots(1, 2)
    for i, m in enumerate(s["methods"]):  # a method keeps its colour whichever cells are finished
        a = s["accuracy"][m]
        xs = [float(n) for n in cols if n in a]
        if xs:
            ax1.plot(xs, [a[n] * 100 for n in cols if n in a], marker="o", color=f"C{i}", label=m)
        d = {rate_name(0): 0.0, **s["drop_points"][m]} if s["drop_points"][m] else {}
        xs = [float(n) for n in cols if n in d]
        if xs:
            ax2.plot(xs, [d[n] for n in cols if n in d], marker="o", color=f"C{i}", label=m)
    ax2.axhline(0.0, color="black", linewidth=0.6)
    lim = s["goal"]["max_drop_points"]
    if lim:
        ax2.plot([float(n) for n in lim], list(lim.values()), "k--", marker="_", label="goal (best method)")
    ref = s["reference"].get("drop_points") or {}
    if ref:
        ax2.plot([float(n) for n in ref], list(ref.values()), ":", color="grey", marker="x",
                 label=s["reference"].get("label", "reference"))
    ax1.set(xlabel="flipped training labels (%)", ylabel="clean test accuracy (%)", title=title)
    ax2.set(xlabel="flipped training labels (%)", ylabel="drop against 0 % (points)",
            title="accuracy lost to the noise")
    for ax in (ax1, ax2):
        ax.set_xticks([float(n) for n in cols])
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    return save_figure(fig, path)


# ---- the run --------------------------------------------------------------------------------
def run(exp: dict[str, Any], args: argparse.Namespace, config_path: Path) -> dict[str, Any] | None:
    """Train and score the chosen cells (or list them), then tabulate every finished cell of the grid."""
    from ferkit.evaluation.io import write_json_atomic

    suffix = budget_suffix(args)
    folder = exp["name"] + (f"-{suffix}" if suffix else "")
    runs_dir = repo_path(args.runs) if args.runs else repo_path(exp.get("runs_dir") or "runs") / folder
    out = repo_path(args.out) if args.out else repo_path(exp.get("results_dir") or "results") / folder
    cells = plan(exp, args, runs_dir)
    chosen = select(cells, args.only)
    if args.dry_run:
        trainings = len({c["train_cell"] for c in chosen})
        print(f"{len(chosen)} of {len(cells)} cells ({trainings} trainings); runs in {runs_dir}, results in {out}")
        for c in chosen:
            cfg = c["cfg"]
            test = (f"{exp['natural'].get('dataset')} {exp['natural'].get('split')}" if c["natural"]
                    else f"{cfg['data']['dataset']} {cfg['data']['val_split']}")
            shared = f" (model of {c['train_cell']})" if c["train_cell"] != c["name"] else ""
            print(f"  {c['name']:<16} {status(c, runs_dir):<8} method={cfg['method']['name']} "
                  f"noise_rate={c['noise_rate']:g}{shared} test={test} model={cfg['model']['name']} "
                  f"epochs={cfg['train']['epochs']} lr={cfg['optim']['lr']} batch={cfg['optim']['batch_size']} "
                  f"px={cfg['data']['image_size']} limit_train={cfg['data']['limit_train']}")
        return None
    if any(c["natural"] for c in chosen):  # fail before training when the votes are missing
        from ferkit.data.ferplus import resolve_files

        o = exp["natural"].get("options") or {}
        resolve_files(chosen[0]["cfg"]["data"]["path"], o.get("fer2013_path"), o.get("votes_path"))
    device = args.device or "auto"
    for c in chosen:
        run_cell(c, exp, runs_dir, device)
    rows = []
    for c in cells:  # every finished cell of the grid, not only this call's
        if status(c, runs_dir) == "done":
            check_same_config(runs_dir / c["train_cell"], c["train_cfg"])
            rows.append(json.loads((runs_dir / c["name"] / RESULT).read_text()))
    out.mkdir(parents=True, exist_ok=True)
    env = environment(out)
    first = cells[0]["cfg"]
    budget = {"data": first["data"]["dataset"], "test": first["data"]["val_split"],
              "noise_seed": first["data"]["noise_seed"], "model": first["model"]["name"],
              "epochs": first["train"]["epochs"], "px": first["data"]["image_size"],
              "batch": first["optim"]["batch_size"], "optimiser": first["optim"]["name"], "lr": first["optim"]["lr"],
              "schedule": first["schedule"]["name"], "ema": first["train"]["ema"],
              "limit_train": first["data"]["limit_train"], "limit_val": first["data"]["limit_val"]}
    summary = summarise(rows, exp)
    plot(summary, out / PLOT, f"{exp['name']}: clean {budget['data']} {budget['test']} accuracy")
    table = {"experiment": exp, "config_file": str(config_path), "cli": vars(args), "budget": budget,
             "runs_dir": str(runs_dir), "environment": env, **summary, "cells": rows,
             "missing": [c["name"] for c in cells if status(c, runs_dir) != "done"], "pngs": [PLOT]}
    write_json_atomic(table, out / "table.json")
    (out / "table.md").write_text(markdown_table(summary, exp, env, budget))
    shutil.copy2(config_path, out / "config.yaml")
    copy_cell_files(rows, out, ("config.yaml", "meta.json", "metrics.csv"))
    for r in rows:  # the result sits in the cell's own folder (a natural cell scores another cell's run)
        shutil.copy2(runs_dir / r["cell"] / RESULT, out / "cells" / r["cell"] / RESULT)
    print(f"{len(rows)} of {len(cells)} cells finished; table in {out / 'table.md'}")
    return table


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = grid_parser(__doc__, "configs/experiments/noise_fer2013.yaml",
                     "method=ce,eac or noise=0,10,natural (noise in percent)")
    return ap.parse_intermixed_args(argv)  # key=value may come after the options


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    args = parse_args(argv)
    if any(o.split("=", 1)[0].strip() == "data.noise_rate" for o in args.overrides):
        raise ConfigError("data.noise_rate is the grid's noise axis: choose rates with --only noise=10,20")
    path = Path(args.config)
    return run(load_experiment(path), args, path)


if __name__ == "__main__":
    run_cli(main, "noise_benchmark")
