"""``kind: cross_dataset``: each trained model scored on each dataset, labels matched by name (no training).

Why: issue 9 asks how a model trained on one set (FER2013, or an SSL run of it) does on another
(FER+, JAFFE, RAF-DB, AffectNet, any class-per-folder set), seed 003 Table 2's question. Label sets
differ, so each pair is scored with ``ferkit.evaluation.evaluate.evaluate_model``, which keeps the
labels the model and the dataset share (matched through canonical names), drops the rows whose
true label the model cannot output, and renormalises the probabilities over the shared labels;
the table says which labels were matched and which were dropped (with their row counts).

MODEL is a bundled name (``default``, ``fast``), a run directory, a ``model.pt`` or a checkpoint.
A run directory is scored with its **last** checkpoint (EMA weights when on): its ``model.pt`` is
the epoch selected on its validation split, and FER2013 PublicTest, the usual one, holds the very
faces of FER+ PublicTest. Options: ``model`` (``[NAME=]MODEL``, replaces the config's models),
``dataset`` (``READER[:SPLIT]=PATH``, added, replacing a config dataset of the same name; the split
defaults to the reader's test split), ``no_config_datasets``, ``batch_size``, ``threads``. Configs
written before ``kind`` existed have none: a config with ``models`` or ``datasets`` is this kind.

The results folder gets ``table.json`` (every pair's metrics, the label mapping, the config, the
commit), ``table.md``, ``config.yaml`` and ``pairs/<model>__<dataset>.json`` with its
``..._confusion_matrix.png`` and ``..._reliability.png``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ferkit.engine.config import yaml_load
from ferkit.errors import ConfigError, InputError
from ferkit.experiments.core import ExperimentKind, data_path, log, slug, work_path
from ferkit.experiments.registry import register_kind

KEYS = frozenset({"kind", "name", "results_dir", "device", "batch_size", "models", "datasets", "paper", "checkpoint",
                  "note"})
DATASET_KEYS = {"dataset", "path", "split", "options", "role"}
METRICS = ("accuracy", "macro_f1", "mean_class_accuracy", "ece", "nll")


def check_dataset(name: str, spec: Any) -> dict[str, Any]:
    """A dataset entry: a registered reader, a path, optional split / options / role."""
    from ferkit.data import DATASETS
    from ferkit.evaluation.evaluate import default_split

    if not isinstance(spec, Mapping) or not spec.get("dataset") or not spec.get("path"):
        raise ConfigError(f"dataset {name}: give at least 'dataset' (a reader) and 'path'")
    bad = sorted(set(spec) - DATASET_KEYS)
    if bad:
        raise ConfigError(f"dataset {name}: unknown key(s) {', '.join(bad)} (known: {', '.join(sorted(DATASET_KEYS))})")
    reader = str(spec["dataset"]).lower()
    if reader not in DATASETS:
        raise ConfigError(f"dataset {name}: unknown reader {reader!r} (known: {', '.join(sorted(DATASETS))})")
    out = {"dataset": reader, "path": str(spec["path"]), "split": spec.get("split", default_split(reader)),
           "options": dict(spec.get("options") or {})}
    if spec.get("role"):
        out["role"] = str(spec["role"])
    return out


def model_name(source: str) -> str:
    """A table name for a model source: the bundled name, the run directory's name, else the file's stem."""
    p = Path(source)
    if p.name in ("model.pt", "best.pt", "last.pt"):
        p = p.parent.parent if p.parent.name == "checkpoints" else p.parent
    return slug(p.name if p.suffix not in (".pt", ".onnx", ".npz") else p.stem) or "model"


def parse_models(items: Sequence[str]) -> dict[str, str]:
    """``--model`` values (``[NAME=]MODEL``) as name -> source; repeated names get ``-2``, ``-3``."""
    out: dict[str, str] = {}
    for item in items:
        name, src = item.split("=", 1) if "=" in item else (model_name(item), item)
        base, i = slug(name), 2
        name = base
        while name in out:
            name, i = f"{base}-{i}", i + 1
        out[name] = src
    return out


def parse_datasets(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``--dataset`` values (``READER[:SPLIT]=PATH``) as name -> dataset entry."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--dataset {item!r} is not of the form READER[:SPLIT]=PATH (e.g. jaffe=/data/jaffe)")
        key, path = item.split("=", 1)
        reader, _, split = key.partition(":")
        spec: dict[str, Any] = {"dataset": reader.strip(), "path": path}
        if split:
            spec["split"] = split.strip()
        out[slug(f"{reader}-{split}" if split else reader)] = check_dataset(key, spec)
    return out


def local_path(path: str | Path, config_path: str | Path | None) -> Path:
    """A model or dataset path: read as a data path of the experiment config (see ferkit.experiments.core),
    from the working directory where there is no config."""
    return work_path(path) if config_path is None else data_path(path, config_path)


def model_file(source: str, checkpoint: str, config_path: str | Path | None = None) -> Path:
    """The file a model source is scored with (a run directory: its last checkpoint by default, see above)."""
    from ferkit.engine.model_io import resolve_model_path

    p = local_path(source, config_path) if not _bundled(source) else None
    if p is not None and p.is_dir() and checkpoint in ("last", "best"):
        ck = p / "checkpoints" / f"{checkpoint}.pt"
        if ck.is_file():
            return ck
    return resolve_model_path(source if p is None else p)


def _bundled(source: str) -> bool:
    from ferkit.zoo import ALIASES, MODELS

    return source in MODELS or source in ALIASES


def trained_on(source: str, file: Path) -> str | None:
    """What a model was trained on: its card for a bundled model, its run's config.yaml otherwise."""
    if _bundled(source):
        from ferkit.zoo import model_card

        return model_card(source).get("training_data")
    for d in (file.parent, file.parent.parent):
        cfg = d / "config.yaml"
        if cfg.is_file():
            data = (yaml_load(cfg.read_text()) or {}).get("data") or {}
            text = f"{data.get('dataset')} {data.get('train_split')}"
            return text + (f", {data['labelled']} labelled" if data.get("labelled") is not None else "")
    return None


# ---- evaluation -------------------------------------------------------------------------------------
def dataset_info(spec: Mapping[str, Any], config_path: str | Path | None = None) -> dict[str, Any]:
    """Rows per label and what the reader itself left out (FER+ unknown / not-a-face / no-majority rows,
    unreadable files), read once per dataset (the decode cache makes the second read cheap)."""
    import numpy as np

    from ferkit.data import load_dataset

    data = load_dataset(spec["dataset"], local_path(spec["path"], config_path), spec["split"], **spec["options"])
    counts = np.bincount(data.labels[data.labels >= 0], minlength=len(data.classes))
    meta = data.meta or {}
    skipped = meta.get("skipped") or {}
    return {"rows": len(data), "classes": list(data.classes),
            "rows_by_label": {c: int(n) for c, n in zip(data.classes, counts)},
            "reader_dropped": dict(meta.get("dropped") or {}),
            "reader_skipped_files": int(skipped.get("count", 0)) if isinstance(skipped, Mapping) else 0}


def evaluate_pair(model: str, source: str, ds: str, spec: Mapping[str, Any], info: Mapping[str, Any],
                  exp: Mapping[str, Any], out: Path, device: str, config_path: str | Path | None = None
                  ) -> dict[str, Any]:
    """One model on one dataset through evaluate_model; the table row."""
    from ferkit.evaluation.evaluate import evaluate_model

    file = model_file(source, str(exp.get("checkpoint", "last")), config_path)
    stem = f"{model}__{ds}"
    m = evaluate_model(file, spec["dataset"], local_path(spec["path"], config_path), spec["split"],
                       out / "pairs" / f"{stem}.json",
                       spec["options"], device=device, batch_size=int(exp.get("batch_size", 512)))
    mp = m["label_mapping"]
    data_only = list(mp.get("data_only", []))
    row = {"model": model, "source": source, "file": str(file), "trained_on": trained_on(source, file),
           "dataset": ds, "reader": spec["dataset"], "path": str(spec["path"]), "split": spec["split"],
           "role": spec.get("role"), "n": m["n"], "rows_dropped": mp.get("rows_dropped", 0),
           "labels_matched": list(mp["shared"]),
           "labels_with_rows": [c for c in mp["shared"] if m["per_class"].get(c, {}).get("support", 0) > 0],
           "labels_dropped": data_only,
           "rows_dropped_by_label": {c: info["rows_by_label"].get(c, 0) for c in data_only},
           "model_labels_unused": list(mp.get("model_only", [])), "tta_flip": m["tta_flip"],
           **{k: m[k] for k in METRICS}, "per_class": m["per_class"], "confusion_matrix": m["confusion_matrix"],
           "metrics_json": f"pairs/{stem}.json", "confusion_png": f"pairs/{stem}_confusion_matrix.png"}
    log(f"[{model} -> {ds}] accuracy {row['accuracy']:.4f} on {row['n']} rows "
          f"({row['rows_dropped']} dropped: {', '.join(data_only) or 'none'})")
    return row


def _reader_drops(info: Mapping[str, Any]) -> str:
    parts = [f"{k} {v}" for k, v in info["reader_dropped"].items() if v]
    if info["reader_skipped_files"]:
        parts.append(f"unreadable files {info['reader_skipped_files']}")
    return f"{info['rows']} rows kept" + (f" ({', '.join(parts)} left out)" if parts else ", none left out")


def _matched(r: Mapping[str, Any]) -> str:
    """``7``, or ``7 (2 with rows)`` when a reader's label space is wider than the labels its rows use."""
    n, used = len(r["labels_matched"]), len(r["labels_with_rows"])
    return str(n) if n == used else f"{n} ({used} with rows: {', '.join(r['labels_with_rows'])})"


def markdown_table(rows: Sequence[Mapping[str, Any]], exp: Mapping[str, Any], env: Mapping[str, Any],
                   infos: Mapping[str, Mapping[str, Any]]) -> str:
    """The accuracy table with the label matching of each pair, and the report's Table 2 for reference."""
    lines = [f"# {exp['name']}: cross-dataset evaluation (ferkit counterpart of seed 003 Table 2)", "",
             "Each model scored on each dataset over the labels both share (matched by canonical name); rows whose "
             "true label the model cannot output are dropped, and the probabilities renormalised over the shared "
             f"labels. Accuracy, macro-F1, mean class accuracy and ECE in %. Commit `{env.get('git_commit')}`.", "",
             "| model | trained on | dataset | split | rows scored | labels matched | labels dropped (rows) | "
             "model labels unused | accuracy | macro-F1 | mean class acc | ECE | confusion |",
             "|" + "---|" * 13]
    for r in rows:
        dropped = ", ".join(f"{c} ({n})" for c, n in r["rows_dropped_by_label"].items()) or "-"
        ds = r["dataset"] + (f" ({r['role']})" if r.get("role") else "")
        lines.append("| " + " | ".join([
            r["model"], str(r["trained_on"] or "-"), ds, str(r["split"] or "all"), str(r["n"]),
            _matched(r), dropped, ", ".join(r["model_labels_unused"]) or "-",
            f"{r['accuracy'] * 100:.2f}", f"{r['macro_f1'] * 100:.2f}", f"{r['mean_class_accuracy'] * 100:.2f}",
            f"{r['ece'] * 100:.2f}", f"[png]({r['confusion_png']})"]) + " |")
    lines += ["", "Rows each reader left out before scoring: " + "; ".join(
        f"{ds} {_reader_drops(i)}" for ds, i in infos.items()) + "."]
    if exp.get("note"):
        lines += ["", str(exp["note"]).strip()]
    paper = exp.get("paper") or {}
    if paper.get("accuracy"):
        lines += ["", "Seed 003 Table 2 (Ada-CM, %): " + ", ".join(f"{k} {v}" for k, v in paper["accuracy"].items())
                  + "."]
        if paper.get("note"):
            lines.append(str(paper["note"]).strip())
    return "\n".join(lines) + "\n"


@register_kind
class CrossDataset(ExperimentKind):
    """Models x datasets, evaluated (no training)."""

    name = "cross_dataset"
    keys = KEYS
    options = {"model": (), "dataset": (), "no_config_datasets": False, "batch_size": None, "threads": None}
    grid = False

    @classmethod
    def check_config(cls, exp: dict[str, Any], path: Path) -> None:
        """Known keys, each dataset a reader with a path (normalised in place)."""
        exp["models"] = {str(k): str(v) for k, v in (exp.get("models") or {}).items()}
        exp["datasets"] = {str(k): check_dataset(k, v) for k, v in (exp.get("datasets") or {}).items()}
        if exp.get("checkpoint", "last") not in ("last", "best", "model"):
            raise ConfigError("checkpoint must be last, best or model (what a run directory is scored with)")

    def run(self, env: dict[str, Any] | None) -> dict[str, Any] | None:
        exp, opts, where = self.exp, self.opts, self.config_path
        if opts.batch_size:
            exp["batch_size"] = int(opts.batch_size)
        models = parse_models(opts.model) if opts.model else dict(exp["models"])
        datasets = {} if opts.no_config_datasets else dict(exp["datasets"])
        datasets.update(parse_datasets(opts.dataset))
        if not models or not datasets:
            raise ConfigError("nothing to evaluate: give models (config 'models' or --model) and datasets")
        out = self.results_dir(exp["name"])
        if opts.dry_run:
            log(f"{len(models)} model(s) x {len(datasets)} dataset(s) -> {out}")
            for k, v in models.items():
                found = _bundled(v) or local_path(v, where).exists()
                log(f"  model   {k:<14} {v}  ({'found' if found else 'MISSING'})")
            for k, s in datasets.items():
                p = local_path(s["path"], where)
                log(f"  dataset {k:<14} {s['dataset']} {s['split'] or 'all'} {p}  "
                    f"({'found' if p.exists() else 'MISSING'})")
            return None
        missing = [s["path"] for s in datasets.values() if not local_path(s["path"], where).exists()]
        if missing:
            raise InputError(f"dataset path(s) not found: {', '.join(missing)}")
        for src in models.values():  # every model must resolve before anything runs
            model_file(src, str(exp.get("checkpoint", "last")), where)
        if opts.threads:
            import torch

            torch.set_num_threads(int(opts.threads))
        device = opts.device or exp.get("device", "auto")
        out.mkdir(parents=True, exist_ok=True)
        infos = {ds: dataset_info(spec, where) for ds, spec in datasets.items()}
        rows = [evaluate_pair(m, src, ds, spec, infos[ds], exp, out, device, where) for m, src in models.items()
                for ds, spec in datasets.items()]
        env = env or {}
        table = {"experiment": exp, "config_file": str(where), "cli": self.cli_record(), "environment": env,
                 "models": models, "datasets": datasets, "dataset_info": infos, "pairs": rows}
        self.finish(out, env, table, markdown=markdown_table(rows, exp, env, infos))
        log(f"{len(rows)} pairs; table in {out / 'table.md'}")
        return table
