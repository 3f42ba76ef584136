"""``kind: noise``: the noise benchmark of issue 7, clean accuracy of each method under noisy training labels.

The grid is ``methods`` x (``noise_rates`` + ``natural``). A cell ``<method>_<percent>`` is the
ferkit run config ``base`` <- the method's layer <- ``data.noise_rate`` <- the ``key=value``
overrides, its training labels flipped by :func:`ferkit.data.inject_noise` (seeded by
``data.noise_seed``, so every method sees the same flipped rows), scored with its **last**
checkpoint on the clean validation split (FER2013 PublicTest). A cell ``<method>_natural`` is the
method's 0 % model (cells with the same run config train once) scored against the FER+ majority
labels of the same test faces, classes matched by name: FER2013's own labels as the noise, FER+
votes as the truth. ``--only noise=10`` selects by percent.

``seeds: [0, 1]`` (optional) adds a seed axis: cells ``<method>_<percent>_s<seed>`` (``--only seed=1``),
each seed's natural cell scoring that seed's 0 % model, and the table gives the mean +- sample std
over the finished seeds (the drops are differences of those means). ``data.noise_seed`` stays as
the config sets it, so every seed trains on the same flipped rows: the spread is the training's.
Without ``seeds`` the config's ``seed`` is the one seed and cells carry no suffix.

The results folder gets ``table.json``, ``table.md`` (accuracy and macro-F1 per method and rate,
the drop against 0 %, the issue's goal check beside the paper's reference drops, the detection
table) and ``accuracy_vs_noise.png``. Detection: for every noisy cell, the AUROC with which each
per-sample signal of the final model, computed on its training set, ranks the flipped labels above
the kept ones: the training loss under the given (noisy) label for every method, the uncertainty
of APSM and RUL, and ``1 - weight`` of SCN (for natural cells, the labels that disagree with the
FER+ majority). A cell trained with ``train.cache_frozen`` is scored on its training faces from the
cached frozen-block activations while they are on disk (seconds, against about 2.5 minutes a cell
through the whole network at 112 px on 2 cores); ``detection.input`` says which path was taken.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ferkit.errors import ConfigError, InputError
from ferkit.experiments.core import (
    GridKind,
    cell_config,
    cell_status,
    commit_text,
    epoch_rows,
    grid_cells,
    log,
    pm,
    run_meta,
    stats,
)
from ferkit.experiments.registry import register_kind

if TYPE_CHECKING:
    from torch import Tensor

    from ferkit.data.types import FaceDataset
    from ferkit.engine.model_io import LoadedModel

KEYS = frozenset({"kind", "name", "runs_dir", "results_dir", "base", "methods", "noise_rates", "natural", "goal",
                  "reference", "seeds"})
NATURAL_KEYS = {"dataset", "split", "options", "detection"}
NATURAL = "natural"
PLOT = "accuracy_vs_noise.png"
#: per-sample signals for finding flipped labels: the method's own uncertainty, named as the paper names it
OWN_SIGNAL = {"apsm": "uncertainty", "rul": "uncertainty", "scn": "1 - weight"}


# ---- config and cells -----------------------------------------------------------------------
def rate_name(rate: float) -> str:
    """The noise axis value of a rate: 0.1 -> ``10`` (percent, so ``--only noise=10``)."""
    return f"{round(float(rate) * 100, 6):g}"


def grid(exp: Mapping[str, Any]) -> dict[str, Any]:
    """The grid of the shared runner's form: method axis x noise axis (percent names, then natural),
    x the seed axis when the config lists ``seeds``."""
    noise: dict[str, Any] = {rate_name(r): {"data": {"noise_rate": float(r)}} for r in exp["noise_rates"]}
    if exp.get("natural") is not None:
        noise[NATURAL] = {"data": {"noise_rate": 0.0}}  # FER2013's own labels: the noise is natural
    out: dict[str, Any] = {"method": {str(m): dict(layer or {}) for m, layer in exp["methods"].items()},
                           "noise": noise}
    if exp.get("seeds"):
        out["seed"] = [int(x) for x in exp["seeds"]]
    return out


def _training_key(cfg: Mapping[str, Any]) -> str:
    """Cells whose run configs agree in everything but the name train one model."""
    return json.dumps({k: v for k, v in cfg.items() if k != "name"}, sort_keys=True, default=str)


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


def cached_training_trunk(model: LoadedModel, train: FaceDataset, cfg: Mapping[str, Any]) -> Tensor | None:
    """The training faces' frozen-block activations that the cell's run cached (``train.cache_frozen``), or None.

    Looked up under the run's cache folder by the key its trainer used, for the precision this
    machine would cache in, then fp32 and bf16 (the frozen blocks are the same in all three).
    """
    from ferkit.engine.batches import images_to_tensor
    from ferkit.engine.device import autocast_dtype
    from ferkit.engine.trunk_cache import read_trunk, run_cache_dir, trunk_cache_path, trunk_preprocess

    backbone = getattr(getattr(model.net, "model", None), "backbone", None)
    if not cfg["train"].get("cache_frozen") or not int(getattr(backbone, "trunk_channels", 0) or 0):
        return None
    channels = int(model.preprocess["channels"])
    images = images_to_tensor(train.images, channels)
    for amp in dict.fromkeys([autocast_dtype(model.device, cfg["train"]["amp"]), None, torch.bfloat16]):
        path = trunk_cache_path(backbone, images, run_cache_dir(cfg), trunk_preprocess(cfg, channels, amp))
        feats = read_trunk(path)
        if feats is not None and feats.shape[0] == len(train):
            return feats
    return None


def training_signals(model: LoadedModel, train: FaceDataset, method: str, batch_size: int,
                     trunk: Tensor | None = None) -> dict[str, np.ndarray]:
    """Per training row: the final model's loss under the given label, and the method's own signal
    (from the cached activations ``trunk`` when given: :func:`cached_training_trunk`)."""
    if trunk is not None:
        from ferkit.engine.trunk_cache import classify_cached

        probs, unc = classify_cached(model.net, trunk, model.device, batch_size,
                                     bool(model.preprocess.get("tta_flip", False)))
    else:
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
    elif not cell["natural"] and "flipped" in train.meta:
        noisy, valid = np.asarray(train.meta["flipped"], bool), train.labels >= 0
    else:
        noisy = valid = None
    if noisy is not None:
        trunk = cached_training_trunk(model, train, cfg)
        det = detection(training_signals(model, train, cfg["method"]["name"], bs, trunk), noisy, valid)
        det["input"] = "cached frozen-block activations (bf16)" if trunk is not None else "images"
    rows = epoch_rows(run_dir)
    meta = run_meta(run_dir)
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


# ---- the table ------------------------------------------------------------------------------
def _limits(block: Mapping[str, Any] | None, key: str) -> dict[str, float]:
    """``{10: 1.0}`` (percent -> points) from the config, keyed by the noise axis names."""
    return {rate_name(float(k) / 100): float(v) for k, v in ((block or {}).get(key) or {}).items()}


def _detection_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One detection row per (method, noise): the AUROCs averaged over the seeds (``seeds`` counts them)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        if r.get("detection"):
            groups.setdefault((r["method"], r["noise"]), []).append(r)
    out = []
    for (m, n), rs in groups.items():
        dets = [r["detection"] for r in rs]
        signals = list(dict.fromkeys(k for d in dets for k in d["auroc"]))
        auroc = {k: stats(d["auroc"].get(k) for d in dets)["mean"] for k in signals}
        first = dets[0]
        out.append({"cell": rs[0]["cell"], "method": m, "noise": n, "n": first["n"], "n_noisy": first["n_noisy"],
                    "noisy_fraction": first.get("noisy_fraction"), "auroc": auroc, "seeds": len(rs),
                    "per_seed": [{"cell": r["cell"], "seed": r.get("seed"), **r["detection"]} for r in rs]})
    return out


def _above_baseline(exp: Mapping[str, Any]) -> tuple[str | None, list[str]]:
    """(baseline method, noise axis names) of ``goal.above_baseline``: the rates at which the method
    meeting the goal must also beat the baseline (issue 16), or (None, []) without it."""
    block = (exp.get("goal") or {}).get("above_baseline")
    if not block:
        return None, []
    return str(block["method"]), [rate_name(float(r) / 100) for r in block["rates"]]


def _group(rows: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    by: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        by.setdefault((r["method"], r["noise"]), []).append(r)
    return by


def _common_seeds(by: Mapping[tuple[str, str], list[dict[str, Any]]], methods: list[str],
                  noises: list[str]) -> list[Any]:
    """The seeds every cell of the goal (each method at 0 % and every flipped rate) has finished."""
    sets = [{r.get("seed") for r in by.get((m, n), [])} for m in methods for n in noises]
    return sorted(set.intersection(*sets), key=str) if sets else []


def _goal(acc: Mapping[str, Mapping[str, float]], methods: list[str], rated: list[str],
          exp: Mapping[str, Any]) -> dict[str, Any]:
    """The goal check on mean accuracies: each method's drops against its own 0 %, and against the baseline."""
    zero = rate_name(0)
    drop = {m: {n: (acc[m][zero] - acc[m][n]) * 100 for n in rated if zero in acc[m] and n in acc[m]}
            for m in methods}
    limits = _limits(exp.get("goal"), "max_drop_points")
    base, above_rates = _above_baseline(exp)
    per_method = {}
    for m in methods:
        within = {n: drop[m][n] <= lim if n in drop[m] else None for n, lim in limits.items()}
        above = {n: (False if m == base else acc[m][n] > acc[base][n] if n in acc[m] and n in acc.get(base, {})
                     else None) for n in above_rates}
        checks = [*within.values(), *above.values()]
        per_method[m] = {"within": within, "above_baseline": above,
                         "all": None if None in checks else all(checks)}
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
    return {"max_drop_points": limits, "per_method": per_method, "best_accuracy_per_rate": best,
            "met_by": [m for m, v in per_method.items() if v["all"]], "met": met, "baseline": base,
            "above_rates": above_rates, "drop_points": drop,
            "rule": "met when one method stays within every limit (its drop against its own 0 % accuracy)"
                    + (f" and is more accurate than {base} at {' / '.join(above_rates)} %" if above_rates else "")}


def summarise(rows: list[dict[str, Any]], exp: Mapping[str, Any]) -> dict[str, Any]:
    """Accuracy / macro-F1 per method and noise (the mean over the seeds finished), drops against 0 %,
    the goal check and the detection rows.

    The goal and the most accurate method per rate are judged on the seeds that every method has
    finished at 0 % and at every flipped rate (``goal.seeds``), so that means over different seeds
    are never compared; while no seed is complete everywhere, on all the finished cells.
    """
    methods = [str(m) for m in exp["methods"]]
    axes = grid(exp)
    noises = list(axes["noise"])
    by = _group(rows)
    acc_stats = {m: {n: stats(r["accuracy"] for r in by[(m, n)]) for n in noises if (m, n) in by} for m in methods}
    f1_stats = {m: {n: stats(r["macro_f1"] for r in by[(m, n)]) for n in noises if (m, n) in by} for m in methods}
    acc = {m: {n: v["mean"] for n, v in a.items()} for m, a in acc_stats.items()}
    f1 = {m: {n: v["mean"] for n, v in a.items()} for m, a in f1_stats.items()}
    zero = rate_name(0)
    rated = [n for n in noises if n not in (zero, NATURAL)]
    drop = _goal(acc, methods, rated, exp)["drop_points"]
    common = _common_seeds(by, methods, [zero, *rated])
    goal_by = _group([r for r in rows if r.get("seed") in common]) if common else by
    goal_acc = {m: {n: stats(r["accuracy"] for r in goal_by[(m, n)])["mean"] for n in noises if (m, n) in goal_by}
                for m in methods}
    goal = _goal(goal_acc, methods, rated, exp)
    goal["seeds"] = [s for s in common if s is not None] or None  # None: no seed axis, or none complete
    return {"methods": methods, "noise": noises, "seeds": list(axes.get("seed") or []),
            "accuracy": acc, "macro_f1": f1, "accuracy_stats": acc_stats, "macro_f1_stats": f1_stats,
            "drop_points": drop, "goal": goal,
            "reference": {**(exp.get("reference") or {}), "drop_points": _limits(exp.get("reference"), "drop_points")},
            "detection": _detection_rows(rows)}


def _pct(x: float | None, digits: int = 2, sign: bool = False) -> str:
    return "-" if x is None else f"{x * 100:{'+' if sign else ''}.{digits}f}"


def _pts(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _yes(x: bool | None) -> str:
    return "-" if x is None else ("yes" if x else "no")


def _pct_seeds(st: Mapping[str, Any] | None, several: bool) -> str:
    """Percent: ``67.01`` in a one-seed grid; ``67.01 ± 0.30 (2)`` or ``67.01 (1)`` (seeds finished) when
    the grid has ``several`` seeds."""
    if not st:
        return "-"
    return pm(st) if several else _pct(st["mean"])


def markdown_table(s: Mapping[str, Any], exp: Mapping[str, Any], env: Mapping[str, Any],
                   budget: Mapping[str, Any]) -> str:
    """The accuracy, drop, goal and detection tables of the benchmark."""
    zero = rate_name(0)
    rated = [n for n in s["noise"] if n not in (zero, NATURAL)]
    cols = [n for n in s["noise"] if n != NATURAL]
    nat = NATURAL in s["noise"]
    seeds = s.get("seeds") or []
    seed_text = (f"mean ± sample std over seeds {', '.join(map(str, seeds))} (number finished)" if len(seeds) > 1
                 else "one seed")
    lines = [f"# {exp['name']}: accuracy under label noise (issue 7)", "",
             f"Clean {budget['data']} {budget['test']} accuracy (%) of the **last** epoch, {seed_text}, the "
             f"training labels flipped by ferkit's injector (symmetric, seed {budget['noise_seed']}; every "
             f"method sees the same flipped rows). {commit_text(env)} Budget: "
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
    several = len(seeds) > 1
    for m in s["methods"]:
        a, f = s["accuracy_stats"][m], s["macro_f1_stats"][m]
        cells = [m] + [_pct_seeds(a.get(n), several) for n in cols]
        cells += ([_pct_seeds(a.get(NATURAL), several)] if nat else []) + [_pct_seeds(f.get(n), several) for n in cols]
        lines.append("| " + " | ".join(cells) + " |")
    g, ref = s["goal"], s["reference"]
    lim, rdrop = g["max_drop_points"], ref.get("drop_points") or {}
    on = (f" Drops and goal on seed{'s' if len(g['seeds']) > 1 else ''} {', '.join(map(str, g['seeds']))}, the "
          "seeds every method has finished at 0 % and at every rate." if g.get("seeds") and seeds else "")
    lines += ["", "Drop in points against the method's own 0 % accuracy (lower is better); the goal row is the "
              "issue's limit for the best method." + on, ""]
    above = g.get("above_rates") or []
    above_head = [f"above {g['baseline']} at {' / '.join(above)} %"] if above else []
    head = ["method"] + [f"{n} %" for n in rated] + above_head + ["meets goal"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in s["methods"]:
        pm_ = g["per_method"][m]
        above_cell = [" / ".join(_yes(pm_["above_baseline"].get(n)) for n in above)] if above else []
        lines.append("| " + " | ".join([m] + [_pts(g["drop_points"][m].get(n)) for n in rated] + above_cell
                                       + [_yes(pm_["all"])]) + " |")
    pad = " |" * len(above_head)
    lines.append("| **goal (at most)** | " + " | ".join(_pts(lim.get(n), 1) for n in rated) + pad + " | |")
    if rdrop:
        lines.append(f"| {ref.get('label', 'reference')} | " + " | ".join(_pts(rdrop.get(n), 1) for n in rated)
                     + pad + " | |")
    best = "; ".join(f"{n} %: {b['method']} ({_pct(b['accuracy'])} %, drop {_pts(b['drop_points'])}, "
                     f"{'within' if b['within'] else 'over' if b['within'] is False else 'no limit / no 0 %'})"
                     for n, b in g["best_accuracy_per_rate"].items())
    verdict = {True: f"**met** (by {', '.join(g['met_by'])})", False: "**not met**",
               None: "**open** (cells missing)"}[g["met"]]
    beat = f", and beats {g['baseline']} at {' / '.join(above)} %" if above else ""
    lines += ["", "Goal (one method loses at most "
              + " / ".join(f"{_pts(lim[n], 1)}" for n in rated if n in lim)
              + f" points at {' / '.join(f'{n}' for n in rated if n in lim)} %{beat}): {verdict}. "
              f"Most accurate method per rate: {best or '-'}."]
    if ref.get("note"):
        lines += ["", f"{ref.get('label', 'Reference')}: {str(ref['note']).strip()}"]
    if s["detection"]:
        signals = list(dict.fromkeys(k for d in s["detection"] for k in d["auroc"]))
        lines += ["", "Finding the noisy training labels: AUROC (%) of each per-sample signal of the final model "
                  "on its training set (50 = chance; loss = cross-entropy under the given, noisy label; "
                  "uncertainty = APSM's sigma^2 / RUL's u; 1 - weight = SCN's importance). Noisy = flipped by "
                  "the injector, or for *natural* the FER2013 label disagreeing with the FER+ majority."
                  + (" Mean over the seeds finished (seeds)." if len(seeds) > 1 else ""), ""]
        head = ["method", "noise", "noisy rows"] + (["seeds"] if len(seeds) > 1 else []) + signals
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        order = {n: i for i, n in enumerate(s["noise"])}
        morder = {m: i for i, m in enumerate(s["methods"])}
        for d in sorted(s["detection"], key=lambda d: (order.get(d["noise"], 99), morder.get(d["method"], 99))):
            frac = d.get("noisy_fraction")
            lines.append("| " + " | ".join([d["method"], d["noise"], f"{d['n_noisy']} of {d['n']}"
                                            + (f" ({frac * 100:.1f} %)" if frac is not None else "")]
                                           + ([str(d["seeds"])] if len(seeds) > 1 else [])
                                           + [_pct(d["auroc"].get(k), 1) for k in signals]) + " |")
    return "\n".join(lines) + "\n"


def plot(s: Mapping[str, Any], path: Path, title: str) -> Path:
    """Accuracy against the flipped fraction per method, and the drops beside the goal and the reference."""
    from ferkit.evaluation.plots import new_figure, save_figure

    cols = [n for n in s["noise"] if n != NATURAL]
    fig = new_figure((11, 4.2))
    ax1, ax2 = fig.subplots(1, 2)
    for i, m in enumerate(s["methods"]):  # a method keeps its colour whichever cells are finished
        a, st = s["accuracy"][m], s["accuracy_stats"][m]
        xs = [float(n) for n in cols if n in a]
        if xs:  # error bars: the sample std over the seeds, where there are several
            err = [(st[n]["std"] or 0.0) * 100 for n in cols if n in a]
            ax1.errorbar(xs, [a[n] * 100 for n in cols if n in a], yerr=err, marker="o", capsize=3,
                         color=f"C{i}", label=m)
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


@register_kind
class Noise(GridKind):
    """Methods x noise rates (+ natural noise); cells with equal run configs share one training."""

    name = "noise"
    keys = KEYS

    @classmethod
    def check_config(cls, exp: dict[str, Any], path: Path) -> None:
        methods = exp.get("methods")
        if not isinstance(methods, Mapping) or not methods:
            raise ConfigError(f"experiment config {path}: 'methods' must map each method to its run-config layer")
        rates = exp.get("noise_rates")
        if not isinstance(rates, list) or not rates or not all(isinstance(r, (int, float)) and 0 <= r < 1
                                                               for r in rates):
            raise ConfigError(f"experiment config {path}: 'noise_rates' must be a list of rates in [0, 1)")
        if 0 not in rates:
            raise ConfigError(f"experiment config {path}: 'noise_rates' needs 0, the reference of every drop")
        above = (exp.get("goal") or {}).get("above_baseline")
        known = {rate_name(r) for r in rates}
        if above is not None and (not isinstance(above, Mapping) or set(above) != {"method", "rates"}
                                  or str(above["method"]) not in methods or not isinstance(above["rates"], list)
                                  or not all(isinstance(r, (int, float)) for r in above["rates"])
                                  or not {rate_name(float(r) / 100) for r in above["rates"]} <= known):
            raise ConfigError(f"experiment config {path}: goal.above_baseline takes method (one of the methods) "
                              "and rates (percents of noise_rates)")
        seeds = exp.get("seeds")
        if seeds is not None and (not isinstance(seeds, list) or not seeds
                                  or not all(isinstance(x, int) and not isinstance(x, bool) for x in seeds)
                                  or len(set(seeds)) != len(seeds)):
            raise ConfigError(f"experiment config {path}: 'seeds' must be a list of distinct integers")
        nat = exp.get("natural")
        if nat is not None:
            if not isinstance(nat, Mapping) or set(nat) - NATURAL_KEYS:
                raise ConfigError(f"experiment config {path}: 'natural' takes {', '.join(sorted(NATURAL_KEYS))}")

    def check_options(self) -> None:
        keys = {o.split("=", 1)[0].strip() for o in self.opts.overrides}
        if "data.noise_rate" in keys:
            raise ConfigError("data.noise_rate is the grid's noise axis: choose rates with --only noise=10,20")
        if "seed" in keys and self.exp.get("seeds"):
            raise ConfigError("seed is the grid's seed axis here (the config lists seeds): choose with --only seed=1")

    def plan(self, runs_dir: Path) -> list[dict[str, Any]]:
        cells = grid_cells(grid(self.exp))
        first: dict[str, str] = {}
        configs: dict[str, dict[str, Any]] = {}
        for c in cells:
            cfg = cell_config(self.exp, c, self.opts, runs_dir, self.config_path)
            configs[c["name"]] = cfg
            train = first.setdefault(_training_key(cfg), c["name"])
            c.update(cfg=cfg, train_cell=train, train_cfg=configs[train], natural=c["axes"]["noise"] == NATURAL,
                     noise_rate=float(cfg["data"]["noise_rate"]))
        return cells

    def dry_run(self, cells: list[dict[str, Any]], chosen: list[dict[str, Any]], runs_dir: Path, out: Path,
                budget: Mapping[str, Any]) -> None:
        trainings = len({c["train_cell"] for c in chosen})
        log(f"{len(chosen)} of {len(cells)} cells ({trainings} trainings); runs in {runs_dir}, results in {out}")
        exp = self.exp
        for c in chosen:
            cfg = c["cfg"]
            test = (f"{exp['natural'].get('dataset')} {exp['natural'].get('split')}" if c["natural"]
                    else f"{cfg['data']['dataset']} {cfg['data']['val_split']}")
            shared = f" (model of {c['train_cell']})" if c["train_cell"] != c["name"] else ""
            log(f"  {c['name']:<16} {cell_status(c, runs_dir, out):<8} seed={cfg['seed']} "
                f"method={cfg['method']['name']} "
                f"noise_rate={c['noise_rate']:g}{shared} test={test} model={cfg['model']['name']} "
                f"epochs={cfg['train']['epochs']} lr={cfg['optim']['lr']} batch={cfg['optim']['batch_size']} "
                f"px={cfg['data']['image_size']} limit_train={cfg['data']['limit_train']}")

    def before_training(self, chosen: list[dict[str, Any]]) -> None:
        if any(c["natural"] for c in chosen):  # fail before training when the votes are missing
            from ferkit.data.ferplus import resolve_files

            o = self.exp["natural"].get("options") or {}
            resolve_files(chosen[0]["cfg"]["data"]["path"], o.get("fer2013_path"), o.get("votes_path"))

    def budget(self, cells: list[dict[str, Any]]) -> dict[str, Any]:
        first = cells[0]["cfg"]
        return {"data": first["data"]["dataset"], "test": first["data"]["val_split"],
                "noise_seed": first["data"]["noise_seed"], "model": first["model"]["name"],
                "epochs": first["train"]["epochs"], "px": first["data"]["image_size"],
                "batch": first["optim"]["batch_size"], "optimiser": first["optim"]["name"],
                "lr": first["optim"]["lr"], "schedule": first["schedule"]["name"], "ema": first["train"]["ema"],
                "limit_train": first["data"]["limit_train"], "limit_val": first["data"]["limit_val"]}

    def row_fields(self, cell: Mapping[str, Any]) -> dict[str, Any]:
        return {"noise_rate": cell["noise_rate"], "natural": cell["natural"], "trained_in": cell["train_cell"],
                "seed": int(cell["cfg"]["seed"])}

    def score(self, cell: Mapping[str, Any], run_dir: Path, device: str) -> dict[str, Any]:
        return score_cell(cell, self.exp, run_dir, device)

    def result_line(self, row: Mapping[str, Any]) -> str:
        return f"[{row['cell']}] accuracy {row['accuracy']:.4f} on {row['test']['dataset']} {row['test']['split']}"

    def write(self, grid: SimpleNamespace) -> tuple[dict[str, Any], str, str]:
        summary = summarise(grid.rows, self.exp)
        b = grid.budget
        plot(summary, grid.out / PLOT, f"{self.exp['name']}: clean {b['data']} {b['test']} accuracy")
        return ({**summary, "cells": grid.rows, "missing": grid.missing, "pngs": [PLOT]},
                markdown_table(summary, self.exp, grid.env, b),
                f"{len(grid.rows)} of {len(grid.cells)} cells finished; table in {grid.out / 'table.md'}")
