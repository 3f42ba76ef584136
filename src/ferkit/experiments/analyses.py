"""``kind: analyses``: the uncertainty analyses of issue 6 on trained runs (no training).

The named trained runs (``runs``: name -> run directory or checkpoint) are scored on one split
(``data``; FER+ PublicTest in the committed config) and the results folder gets ``analyses.json``
(every number) and the PNGs: accuracy per uncertainty bin (Figure 3), risk-coverage with AURC
(Figure 3), occlusion sweep (Figure 4), t-SNE with the silhouette score (Figure 5), and beyond the
paper the Spearman rho between uncertainty and the entropy of the FER+ votes, error-detection AUROC
against softmax entropy and 1 - max probability, and ECE. ``limit``: a stratified subset of the split.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ferkit.errors import ConfigError, InputError
from ferkit.experiments.core import ExperimentKind, data_path, log
from ferkit.experiments.registry import register_kind

if TYPE_CHECKING:
    from ferkit.data.types import FaceDataset

KEYS = frozenset({"kind", "name", "results_dir", "runs", "checkpoint", "data", "device", "compare", "analyses"})
ANALYSES = {"uncertainty_bins", "risk_coverage", "occlusion", "tsne", "ferplus_votes", "error_detection"}


def analysis_data(exp: Mapping[str, Any], limit: int | None,
                  config_path: Path) -> tuple[FaceDataset, np.ndarray | None, np.ndarray | None]:
    """(dataset, raw FER+ votes or None, FER+ soft targets or None) for the analyses config's split."""
    from ferkit.data import load_dataset
    from ferkit.data.splits import subsample

    d = dict(exp["data"])
    name, path, split = d.get("dataset", "fer2013"), data_path(d["path"], config_path), d.get("split")
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


def _model_labels(model_classes: tuple[str, ...], data: FaceDataset) -> np.ndarray:
    """Each row's true label as an index of the model's classes, -1 where the model lacks it."""
    lookup = np.array([model_classes.index(c) if c in model_classes else -1 for c in data.classes] + [-1])
    return lookup[np.where(data.labels >= 0, data.labels, len(data.classes))]


def analyse_run(name: str, source: str | Path, exp: Mapping[str, Any], data: FaceDataset, votes: np.ndarray | None,
                soft: np.ndarray | None, out: Path, device: str) -> dict[str, Any]:
    """Every configured analysis of one trained run; its PNGs go to ``out``."""
    from ferkit.engine.model_io import load_model
    from ferkit.evaluation import embedding as emb
    from ferkit.evaluation import uncertainty as U
    from ferkit.evaluation.evaluate import align_labels
    from ferkit.metrics import compute_metrics

    a = exp.get("analyses") or {}
    path = Path(source)
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


@register_kind
class Analyses(ExperimentKind):
    """Analyses of trained runs: takes only ``--limit``, ``--device``, ``--out`` and ``--dry-run``."""

    name = "analyses"
    keys = KEYS
    options = {"limit": None}
    grid = False

    @classmethod
    def check_config(cls, exp: dict[str, Any], path: Path) -> None:
        if not exp.get("runs") or not exp.get("data"):
            raise ConfigError(f"experiment config {path}: an analyses config needs 'runs' and 'data'")
        bad = sorted(set(exp.get("analyses") or {}) - ANALYSES)
        if bad:
            raise ConfigError(f"unknown analyses {', '.join(bad)} (known: {', '.join(sorted(ANALYSES))})")

    def run(self, env: dict[str, Any] | None) -> dict[str, Any] | None:
        from ferkit.evaluation import uncertainty as U

        exp, opts = self.exp, self.opts
        out = self.results_dir(exp["name"])
        runs = {str(k): data_path(v, self.config_path) for k, v in exp["runs"].items()}
        if opts.dry_run:
            log(f"analyses {', '.join(sorted(exp.get('analyses') or {}))} on {exp['data']} -> {out}")
            for k, v in runs.items():
                log(f"  {k:<12} {v}  ({'found' if v.exists() else 'MISSING'})")
            return None
        missing = [str(v) for v in runs.values() if not v.exists()]
        if missing:
            raise InputError(f"trained run(s) not found: {', '.join(missing)} (train them first, e.g. with the "
                             "ablation config)")
        data, votes, soft = analysis_data(exp, opts.limit, self.config_path)
        out.mkdir(parents=True, exist_ok=True)
        device = opts.device or exp.get("device", "auto")
        results = {k: analyse_run(k, v, exp, data, votes, soft, out, device) for k, v in runs.items()}
        a = exp.get("analyses") or {}
        report: dict[str, Any] = {"experiment": exp, "config_file": str(self.config_path), "cli": self.cli_record(),
                                  "environment": env, "n": len(data), "split": exp["data"].get("split"), "runs": {}}
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
        self.finish(out, env or {}, report, json_name="analyses.json")
        log(json.dumps(report["goals"], indent=2))
        log(f"analyses written to {out}")
        return report
