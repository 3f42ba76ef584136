"""RALD at inference (issue 8): memory-bank vs in-batch accuracy, batch independence, and speed.

    python benchmarks/rald_inference.py [--runs DIR ...] [--backbones compact,resnet18] [--device cpu]
        [--max-seconds 6] [--out results/rald_inference]

**Accuracy both ways.** Each trained run (default: every finished RALD cell of the CPU ablation
grid, ``runs/apsm_ablation_cpu/*rald*`` and the other RALD variants with ITRR) is scored on its
validation split (its config's dataset and split, its last checkpoint) with memory-bank
inference and with in-batch inference at batch 128 (the training batch) and 32, in the data's
order and shuffled, flip averaging off. **Batch independence:** the same 512 faces predicted one
at a time and inside batches; the largest probability difference (memory mode: ~1e-6) and the
share of faces whose predicted class changes (batch mode).

**Speed.** Inference images/s of each backbone's plain classifier (FERModel, the CE baseline) and
of full RALD (memory mode, and in-batch mode) on random 48 px input at batch 128, and training
step images/s of both, with the threads and device given. The paper reports 1291 FPS on a GPU for
RALD with ResNet-18 (and 1942 for the ResNet-18 baseline, 1.50x); the issue's goal is a CPU cost of
at most 1.2x the baseline.

Writes ``metrics.json``, ``rald_inference.md`` and ``config.json`` (settings and commit).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ferkit.engine.data import load_run_data
from ferkit.engine.model_io import load_model
from ferkit.methods import get_method
from ferkit.models import build_model
from throughput import timed

from _common import REPO, environment, results_dir, write_json

PAPER = {"rald_fps": 1291, "resnet18_fps": 1942, "device": "GPU (seed 002 Table 1)"}


# ---- accuracy both ways -----------------------------------------------------------------
def _shown(path: Path) -> str:
    """``path`` relative to the repository when inside it (results stay portable), else as given."""
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def run_config(run_dir: Path) -> dict[str, Any]:
    """The resolved run config a trained run saved (config.yaml)."""
    from ferkit.engine.config import yaml_load

    return yaml_load((run_dir / "config.yaml").read_text())


def _probs(net, view, images: np.ndarray, batch: int, order: np.ndarray, device) -> np.ndarray:
    from ferkit.engine.batches import images_to_tensor

    out = np.zeros((len(images), net.num_classes), np.float32)
    with torch.inference_mode():
        for i in range(0, len(order), batch):
            idx = order[i:i + batch]
            x = view(images_to_tensor(images[idx], net.model.in_channels).to(device))
            out[idx] = net.predict_logits(x).float().softmax(1).cpu().numpy()
    return out


def score_run(run_dir: Path, device: str, check: int = 512) -> dict[str, Any]:
    cfg = run_config(run_dir)
    loaded = load_model(run_dir / "checkpoints" / "last.pt" if (run_dir / "checkpoints" / "last.pt").exists()
                        else run_dir, device=device)
    net, view = loaded.net, loaded.view
    if getattr(net, "itrr_block", None) is None:
        return {"run": _shown(run_dir), "skipped": "no ITRR: memory and batch modes are the same"}
    _, val, _ = load_run_data(cfg)
    images, labels = val.images, val.labels
    rng = np.random.default_rng(0)
    order, shuffled = np.arange(len(images)), rng.permutation(len(images))
    res: dict[str, Any] = {"run": _shown(run_dir), "n": int(len(images)),
                           "memory_rows": int(net.memory_rows), "accuracy": {}}
    net.inference = "memory"
    p_mem = _probs(net, view, images, 128, order, loaded.device)
    res["accuracy"]["memory"] = float((p_mem.argmax(1) == labels).mean())
    net.inference = "batch"
    preds = {}
    for b in (128, 32):
        for name, o in (("ordered", order), ("shuffled", shuffled)):
            p = _probs(net, view, images, b, o, loaded.device)
            preds[(b, name)] = p.argmax(1)
            res["accuracy"][f"batch{b}_{name}"] = float((p.argmax(1) == labels).mean())
    res["memory_minus_batch128_points"] = 100 * (res["accuracy"]["memory"] - res["accuracy"]["batch128_shuffled"])
    res["batch_prediction_changes"] = {  # share of faces whose class changes with the batch around them
        "batch128_ordered_vs_shuffled": float((preds[(128, "ordered")] != preds[(128, "shuffled")]).mean()),
        "batch128_vs_batch32": float((preds[(128, "shuffled")] != preds[(32, "shuffled")]).mean()),
    }
    sub = rng.choice(len(images), size=min(check, len(images)), replace=False)
    net.inference = "memory"
    singles = np.concatenate([_probs(net, view, images[[i]], 1, np.arange(1), loaded.device) for i in sub])
    batched = _probs(net, view, images[sub], 128, rng.permutation(len(sub)), loaded.device)
    res["memory_single_vs_batched_max_abs_diff"] = float(np.abs(singles - batched).max())
    res["memory_single_vs_batched_class_changes"] = float((singles.argmax(1) != batched.argmax(1)).mean())
    return res


# ---- speed ----------------------------------------------------------------------------
def speed(backbone: str, device: torch.device, batch: int, max_seconds: float, rounds: int = 3) -> dict[str, Any]:
    """Images/s of the baseline and of RALD, timed in ``rounds`` interleaved rounds (baseline, RALD
    memory, RALD in-batch, then again), keeping each one's best round: a busy or warming machine
    then slows every variant alike instead of whichever happened to run first."""
    classes = ["neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt"]
    torch.manual_seed(0)
    x = torch.randn(batch, 1, 48, 48, device=device)
    y = torch.randint(0, 8, (batch,), device=device)
    variants = {"baseline": ("ce", {}), "rald_memory": ("rald", {"graph": "ferplus-valence", "inference": "memory"}),
                "rald_batch": ("rald", {"graph": "ferplus-valence", "inference": "batch"})}
    infer_fns, train_fns = {}, {}
    for key, (method, opts) in variants.items():
        model = build_model(backbone, num_classes=8, in_channels=1, image_size=48)
        net = get_method(method)(model, {"name": method, **opts}, 8, {"classes": classes}).to(device)
        if method == "rald":
            net.set_memory(torch.randn(net.memory_size, 1, 48, 48, device=device))
        net.views = {"train": lambda t: t}

        def infer(net=net):
            net.eval()
            with torch.inference_mode():
                net.predict_logits(x)
            if device.type == "cuda":
                torch.cuda.synchronize()
        infer_fns[key] = infer
        if key == "rald_batch":
            continue  # training always attends in-batch: one training figure for RALD
        opt = torch.optim.SGD(net.parameters(), lr=1e-3)

        def train(net=net, opt=opt, method=method):
            net.train()
            if method == "ce":
                loss = F.cross_entropy(net.model(x), y)
            else:
                loss = net.train_step({"images": x, "labels": y})[0]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
        train_fns["rald" if method == "rald" else key] = train
    out: dict[str, Any] = {"backbone": backbone, "batch": batch, "rounds": rounds}
    for kind, fns in (("infer", infer_fns), ("train", train_fns)):
        for fn in fns.values():
            fn()  # warm-up
        best = {k: 0.0 for k in fns}
        for _ in range(rounds):
            for k, fn in fns.items():
                best[k] = max(best[k], batch / timed(fn, max_seconds / rounds, min_steps=1, warmup=0)[0])
        out.update({f"{k}_{kind}_img_s": v for k, v in best.items()})
    out["rald_memory_infer_cost_x"] = out["baseline_infer_img_s"] / out["rald_memory_infer_img_s"]
    out["rald_batch_infer_cost_x"] = out["baseline_infer_img_s"] / out["rald_batch_infer_img_s"]
    out["rald_train_cost_x"] = out["baseline_train_img_s"] / out["rald_train_img_s"]
    return out


def k_sweep(table: Path, out: Path, dataset: str = "ferplus") -> dict[str, Any] | None:
    """Figure 6 counterpart from the ablation grid's table: accuracy against k (variants ``rald``
    = k 5 and ``rald_k<k>``), with the baseline as a line. None when fewer than two k are done."""
    if not table.is_file():
        return None
    groups = [g for g in json.loads(table.read_text())["groups"] if g["dataset"] == dataset]
    ks = {}
    for g in groups:
        v = g["variant"]
        k = 5 if v == "rald" else int(v.split("_k")[1]) if v.startswith("rald_k") else None
        if k is not None:
            ks[k] = g["accuracy"]["mean"]
    if len(ks) < 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = next((g["accuracy"]["mean"] for g in groups if g["variant"] == "baseline"), None)
    order = sorted(ks)
    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.plot(order, [100 * ks[k] for k in order], "o-", label="RALD")
    if base is not None:
        ax.axhline(100 * base, color="gray", ls="--", label="CE baseline")
    ax.set_xlabel("k (neighbours in NNLDL)")
    ax.set_ylabel(f"{dataset} PublicTest accuracy (%)")
    ax.set_xticks(order)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("RALD: accuracy against k (seed 002 Figure 6 counterpart)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "k_sweep.png", dpi=120)
    plt.close(fig)
    return {"dataset": dataset, "accuracy_by_k": {str(k): ks[k] for k in order}, "baseline": base,
            "png": "k_sweep.png"}


def default_runs() -> list[Path]:
    root = REPO / "runs" / "apsm_ablation_cpu"
    return sorted(p for p in root.glob("compact_*_s0") if (p / "cell_result.json").exists()
                  and run_config(p)["method"]["name"] == "rald") if root.exists() else []


def markdown(metrics: dict[str, Any]) -> str:
    env = metrics["environment"]
    lines = ["# RALD at inference: memory bank vs in-batch, batch independence, speed", "",
             f"Commit `{env['git_commit']}`, device {metrics['device']}, {env['threads']} threads.", "",
             "## Accuracy (%) on the validation split, last epoch, no flip averaging", "",
             "| run | memory bank | in-batch 128 | in-batch 128 shuffled | in-batch 32 shuffled "
             "| memory - batch (points) | classes changed by the batch (128 vs 32) "
             "| memory: single vs batched max diff |",
             "|---|---|---|---|---|---|---|---|"]
    for r in metrics["runs"]:
        if "skipped" in r:
            continue
        a = r["accuracy"]
        lines.append(f"| {Path(r['run']).name} | {100 * a['memory']:.2f} | {100 * a['batch128_ordered']:.2f} | "
                     f"{100 * a['batch128_shuffled']:.2f} | {100 * a['batch32_shuffled']:.2f} | "
                     f"{r['memory_minus_batch128_points']:+.2f} | "
                     f"{100 * r['batch_prediction_changes']['batch128_vs_batch32']:.1f} % | "
                     f"{r['memory_single_vs_batched_max_abs_diff']:.1e} |")
    lines += ["", f"## Speed (images/s, random 48 px input, batch {metrics['batch']})", "",
              "| backbone | baseline infer | RALD memory infer | RALD in-batch infer | cost (memory) | "
              "baseline train | RALD train | train cost |", "|---|---|---|---|---|---|---|---|"]
    for s in metrics["speed"]:
        lines.append(f"| {s['backbone']} | {s['baseline_infer_img_s']:.0f} | {s['rald_memory_infer_img_s']:.0f} | "
                     f"{s['rald_batch_infer_img_s']:.0f} | {s['rald_memory_infer_cost_x']:.2f}x | "
                     f"{s['baseline_train_img_s']:.1f} | {s['rald_train_img_s']:.1f} | {s['rald_train_cost_x']:.2f}x |")
    kept = sorted({s["measured_at_commit"][:7] for s in metrics["speed"] if s.get("measured_at_commit")})
    if kept:
        lines += ["", f"Timings kept from the run at commit {', '.join(kept)} (`--skip-speed`)."]
    if metrics.get("k_sweep"):
        ks = metrics["k_sweep"]
        base = "-" if ks["baseline"] is None else f"{100 * ks['baseline']:.2f}"
        lines += ["", f"## k sweep ({ks['dataset']}, `k_sweep.png`)", "",
                  "| k | " + " | ".join(ks["accuracy_by_k"]) + " | CE baseline |",
                  "|---|" + "---|" * (len(ks["accuracy_by_k"]) + 1),
                  "| accuracy (%) | " + " | ".join(f"{100 * a:.2f}" for a in ks["accuracy_by_k"].values())
                  + f" | {base} |"]
    lines += ["", f"Paper ({PAPER['device']}): RALD {PAPER['rald_fps']} FPS vs ResNet-18 {PAPER['resnet18_fps']} FPS "
              f"({PAPER['resnet18_fps'] / PAPER['rald_fps']:.2f}x)."]
    return "\n".join(lines) + "\n"


def previous_speeds(metrics_file: Path) -> list[dict[str, Any]]:
    """The timings of an earlier run, each tagged with the commit it was measured at."""
    if not metrics_file.is_file():
        return []
    old = json.loads(metrics_file.read_text())
    commit = old.get("environment", {}).get("git_commit")
    return [{**s, "measured_at_commit": s.get("measured_at_commit", commit)} for s in old.get("speed", [])]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", nargs="*", type=Path, help="trained RALD run directories (default: the CPU grid's)")
    ap.add_argument("--backbones", default="compact,resnet18")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--max-seconds", type=float, default=6.0)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--table", type=Path, default=REPO / "results" / "rald_ablation_cpu" / "table.json",
                    help="the ablation grid's table.json, for the k plot")
    ap.add_argument("--skip-speed", action="store_true",
                    help="do not time; keep the timings of the metrics.json already in the results folder "
                    "(they need a quiet machine, the scoring does not)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    out = args.out or results_dir("rald_inference")
    out.mkdir(parents=True, exist_ok=True)
    runs = [r if r.is_absolute() else REPO / r for r in (args.runs if args.runs is not None else default_runs())]
    scored = []
    for r in runs:
        print(f"scoring {r.name} ...", flush=True)
        scored.append(score_run(r, args.device))
    speeds = previous_speeds(out / "metrics.json") if args.skip_speed else []
    for b in [] if args.skip_speed else [b for b in args.backbones.split(",") if b]:
        print(f"timing {b} ...", flush=True)
        speeds.append(speed(b, device, args.batch, args.max_seconds))
    metrics = {"device": str(device), "batch": args.batch, "runs": scored, "speed": speeds, "paper": PAPER,
               "k_sweep": k_sweep(args.table, out), "environment": environment()}
    write_json(out / "metrics.json", metrics)
    write_json(out / "config.json", {"args": {k: str(v) for k, v in vars(args).items()}, **environment()})
    (out / "rald_inference.md").write_text(markdown(metrics))
    print(markdown(metrics))
    return metrics


if __name__ == "__main__":
    main()
