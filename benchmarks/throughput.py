"""Training and inference images/s of each backbone at 48-112 px, in fp32 and bf16, and what the pipeline adds.

The training loop is synchronous: a step is the pipeline (index the in-memory uint8 FER2013
rows, batched "train" augmentation or "eval" resize, normalisation) followed by the model's
forward/backward/step. So for every backbone and size this times the two parts separately:
the pipeline over many batches, and the model step on a ready random tensor (the "random input"
figure), and reports ``overhead = pipeline / model``: real images/s is ``batch / (pipeline +
model)``. Where a step is cheap enough, the full real step is also timed directly as a check
(``*_overhead_direct``). Batch 128, 2 threads, CPU. Rows are written as they finish, cheapest
backbones first, so a long run can be stopped and still leaves its table.

Two precisions, as the trainer runs them: ``fp32`` (full precision, NCHW, plain AdamW: ferkit's
CPU training before bf16) and ``bf16`` (bf16 autocast, channels_last, fused AdamW: what
``train.amp`` / ``channels_last`` / ``optim.fused: auto`` pick on a CPU with native bf16).
Backbones built for RGB (``mobilenet_v1``) get 3-channel input.

    python benchmarks/throughput.py [--backbones compact,resnet18] [--sizes 48,64] [--precisions fp32,bf16]

Writes results/throughput/{throughput.json,throughput.md,config.json}.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time

import torch
import torch.nn.functional as F

from ferkit.augment import build_augment
from ferkit.data import load_dataset
from ferkit.engine.batches import BatchLoader, make_view
from ferkit.models import build_model

from _common import FER2013, environment, results_dir, write_json


def timed(step, max_seconds: float, min_steps: int = 2, warmup: int = 1) -> tuple[float, int]:
    """Seconds per call of ``step`` (after ``warmup`` calls), over at least ``min_steps`` calls."""
    for _ in range(warmup):
        step()
    n, t0 = 0, time.perf_counter()
    while n < min_steps or (time.perf_counter() - t0 < max_seconds and n < 50):
        step()
        n += 1
    return (time.perf_counter() - t0) / n, n


RGB_BACKBONES = {"mobilenet_v1"}


def bench(name: str, size: int, loader: BatchLoader, batch: int, max_seconds: float, direct_below: float,
          precision: str = "fp32") -> dict:
    torch.manual_seed(0)
    ch = loader.images.shape[1]
    model = build_model(name, num_classes=7, in_channels=ch, image_size=size)
    bf16 = precision == "bf16"
    if bf16:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=bf16 or None)
    train_view = make_view(build_augment("train", size, ch), 0.5, 0.5)
    eval_view = make_view(build_augment("eval", size, ch), 0.5, 0.5)
    batches = loader.batches(epoch=0)

    def next_batch():
        nonlocal batches
        try:
            return next(batches)
        except StopIteration:
            batches = loader.batches(epoch=1)
            return next(batches)

    def train_step(x, y):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def infer(x):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return model(x)

    rand_x, rand_y = torch.randn(batch, ch, size, size), torch.randint(0, 7, (batch,))
    small_x, small_y = rand_x[:16], rand_y[:16]
    row = {"backbone": name, "size": size, "precision": precision, "batch": batch,
           "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 3)}

    # the pipeline alone: cheap, so many repeats (after warm-up calls, like the model's)
    pipe_train, _ = timed(lambda: train_view(next_batch()["images"]), 1.0, min_steps=5, warmup=3)
    with torch.no_grad():
        pipe_infer, _ = timed(lambda: eval_view(next_batch()["images"]), 1.0, min_steps=5, warmup=3)

    # the model alone on a ready tensor; warm-up on a small batch so a slow model costs one big step
    model.train()
    train_step(small_x, small_y)
    t_train, n_train = timed(lambda: train_step(rand_x, rand_y), max_seconds, min_steps=1, warmup=0)
    model.eval()
    with torch.no_grad():
        infer(small_x)
        t_infer, n_infer = timed(lambda: infer(rand_x), max_seconds, min_steps=1, warmup=0)

    row.update({
        "train_img_s": batch / (pipe_train + t_train), "train_img_s_random": batch / t_train,
        "train_overhead": pipe_train / t_train, "pipeline_train_ms": 1000 * pipe_train,
        "infer_img_s": batch / (pipe_infer + t_infer), "infer_img_s_random": batch / t_infer,
        "infer_overhead": pipe_infer / t_infer, "pipeline_infer_ms": 1000 * pipe_infer,
        "steps_timed": {"train": n_train, "infer": n_infer},
    })
    if t_train < direct_below:  # check the decomposition: time the whole real step directly
        model.train()

        def real_step():
            b = next_batch()
            train_step(train_view(b["images"]), b["labels"])

        t_real, _ = timed(real_step, max_seconds, min_steps=3)
        model.eval()
        with torch.no_grad():
            t_real_inf, _ = timed(lambda: infer(eval_view(next_batch()["images"])), max_seconds, min_steps=3)
        row.update({"train_img_s_direct": batch / t_real, "train_overhead_direct": t_real / t_train - 1,
                    "infer_img_s_direct": batch / t_real_inf, "infer_overhead_direct": t_real_inf / t_infer - 1})
    return row


ORDER = ["compact", "compact_wide", "mobilenet_v1", "resnet18", "resnet34", "resnet50", "vit_tiny", "vit_small",
         "vit_base"]


def write_table(out, rows, args) -> str:
    rows = sorted(rows, key=lambda r: (ORDER.index(r["backbone"]) if r["backbone"] in ORDER else 99, r["size"],
                                       r.get("precision", "fp32")))
    write_json(out / "throughput.json", {"rows": rows, "environment": environment()})
    write_json(out / "config.json", vars(args))
    lines = ["| backbone | px | precision | params (M) | train img/s | train, random input | overhead | infer img/s |"
             " infer, random input | overhead |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "not_measured" in r:
            lines.append(f"| {r['backbone']} | {r['size']} | {r.get('precision', 'fp32')} | {r.get('params_m', '')} "
                         f"| not measured: {r['not_measured']} | | | | | |")
            continue
        lines.append(f"| {r['backbone']} | {r['size']} | {r.get('precision', 'fp32')} | {r['params_m']} | "
                     f"{r['train_img_s']:.1f} | "
                     f"{r['train_img_s_random']:.1f} | {r['train_overhead']:+.1%} | {r['infer_img_s']:.1f} | "
                     f"{r['infer_img_s_random']:.1f} | {r['infer_overhead']:+.1%} |")
    checks = [r for r in rows if "train_overhead_direct" in r]
    if checks:
        lines += ["", "Direct check (the whole real step timed, vs the same model on random input):", "",
                  "| backbone | px | precision | train overhead, direct | infer overhead, direct |",
                  "|---|---|---|---|---|"]
        lines += [f"| {r['backbone']} | {r['size']} | {r.get('precision', 'fp32')} | "
                  f"{r['train_overhead_direct']:+.1%} | "
                  f"{r['infer_overhead_direct']:+.1%} |" for r in checks]
    text = "\n".join(lines) + "\n"
    (out / "throughput.md").write_text(text)
    return text


def _put(rows: list[dict], row: dict) -> list[dict]:
    """``rows`` with ``row`` in place of the one for the same backbone, size and precision."""
    def key(r: dict) -> tuple:
        return r["backbone"], r["size"], r.get("precision", "fp32")

    return [r for r in rows if key(r) != key(row)] + [row]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", default="compact,vit_tiny,resnet18,vit_small,resnet34,resnet50,vit_base")
    ap.add_argument("--sizes", default="48,64,112")
    ap.add_argument("--precisions", default="fp32,bf16", help="fp32 and/or bf16 (autocast + channels_last)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-seconds", type=float, default=6.0, help="timing budget per measurement")
    ap.add_argument("--direct-below", type=float, default=1.0,
                    help="also time the whole real step directly when a model step takes less (s)")
    ap.add_argument("--merge", action="store_true", help="update the existing table instead of replacing it")
    ap.add_argument("--not-measured", nargs="*", default=[], metavar="BACKBONE:SIZE:WHY",
                    help="record a cell that could not be measured, with the reason")
    ap.add_argument("--out", default="throughput")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = load_dataset("fer2013", FER2013, "Training")
    loaders: dict[int, BatchLoader] = {}

    def loader_for(name: str) -> BatchLoader:
        ch = 3 if name in RGB_BACKBONES else 1
        if ch not in loaders:
            loaders[ch] = BatchLoader(data, ch, args.batch, shuffle=True, seed=0)
            loaders[ch].images.sum()  # touch every page of the memory-mapped cache once, as later epochs have
        return loaders[ch]
    out = results_dir(args.out)
    rows = []
    if args.merge and (out / "throughput.json").exists():  # keep the rows this run does not redo
        rows = json.loads((out / "throughput.json").read_text())["rows"]
    for note in args.not_measured:
        name, size, why = note.split(":", 2)
        rows = _put(rows, {"backbone": name, "size": int(size), "not_measured": why})
    sizes = [int(s) for s in args.sizes.split(",")]
    for name, size, precision in itertools.product(args.backbones.split(","), sizes, args.precisions.split(",")):
        row = bench(name, size, loader_for(name), args.batch, args.max_seconds, args.direct_below, precision)
        rows = _put(rows, row)
        print(f"{name:10s} {size:4d}px {precision}  train {row['train_img_s']:8.1f} img/s "
              f"(random {row['train_img_s_random']:8.1f}, overhead {row['train_overhead']:+.1%})  "
              f"infer {row['infer_img_s']:8.1f} img/s (random "
              f"{row['infer_img_s_random']:8.1f}, overhead {row['infer_overhead']:+.1%})", flush=True)
        write_table(out, rows, args)
    print(write_table(out, rows, args))


if __name__ == "__main__":
    main()
