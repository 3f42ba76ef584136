"""Training and inference images/s of each backbone at 48, 64 and 112 px, real data vs random tensors.

For every backbone and size it times the same step twice: fed from the real pipeline (FER2013
uint8 rows from the in-memory BatchLoader, batched "train" augmentation or "eval" resize, then
normalisation) and fed a ready random tensor. ``overhead = real_time / random_time - 1`` is what
the data pipeline costs on top of the model. Batch 128, 2 threads, CPU.

    python benchmarks/throughput.py [--backbones compact,resnet18] [--sizes 48,64] [--max-seconds 6]

Writes results/throughput/{throughput.json,throughput.md,config.json}.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from ferkit.augment import build_augment
from ferkit.data import load_dataset
from ferkit.engine.batches import BatchLoader
from ferkit.engine.trainer import make_view
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


def bench(name: str, size: int, loader: BatchLoader, batch: int, max_seconds: float) -> dict:
    torch.manual_seed(0)
    model = build_model(name, num_classes=7, in_channels=1, image_size=size)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    train_view = make_view(build_augment("train", size, 1), 0.5, 0.5)
    eval_view = make_view(build_augment("eval", size, 1), 0.5, 0.5)
    batches = loader.batches(epoch=0)
    rand_x = torch.randn(batch, 1, size, size)
    rand_y = torch.randint(0, 7, (batch,))

    def next_batch():
        nonlocal batches
        try:
            return next(batches)
        except StopIteration:
            batches = loader.batches(epoch=1)
            return next(batches)

    def train_step(x, y):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def train_real():
        b = next_batch()
        train_step(train_view(b["images"]), b["labels"])

    def train_rand():
        train_step(rand_x, rand_y)

    @torch.no_grad()
    def infer_real():
        model(eval_view(next_batch()["images"]))

    @torch.no_grad()
    def infer_rand():
        model(rand_x)

    row = {"backbone": name, "size": size, "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 3)}
    model.train()
    (tr, ntr), (trr, ntrr) = timed(train_real, max_seconds), timed(train_rand, max_seconds)
    model.eval()
    (ir, nir), (irr, nirr) = timed(infer_real, max_seconds), timed(infer_rand, max_seconds)
    row.update({
        "train_img_s": batch / tr, "train_img_s_random": batch / trr, "train_overhead": tr / trr - 1,
        "infer_img_s": batch / ir, "infer_img_s_random": batch / irr, "infer_overhead": ir / irr - 1,
        "steps_timed": [ntr, ntrr, nir, nirr],
    })
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", default="compact,resnet18,resnet34,resnet50,vit_tiny,vit_small,vit_base")
    ap.add_argument("--sizes", default="48,64,112")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-seconds", type=float, default=6.0, help="timing budget per measurement")
    ap.add_argument("--out", default="throughput")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = load_dataset("fer2013", FER2013, "Training")
    loader = BatchLoader(data, 1, args.batch, shuffle=True, seed=0)
    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        for name in args.backbones.split(","):
            row = bench(name, size, loader, args.batch, args.max_seconds)
            rows.append(row)
            print(f"{name:10s} {size:4d}px  train {row['train_img_s']:8.1f} img/s "
                  f"(random {row['train_img_s_random']:8.1f}, overhead {row['train_overhead']:+.1%})  "
                  f"infer {row['infer_img_s']:8.1f} img/s (random "
                  f"{row['infer_img_s_random']:8.1f}, overhead {row['infer_overhead']:+.1%})", flush=True)
    out = results_dir(args.out)
    write_json(out / "throughput.json", {"rows": rows, "environment": environment()})
    write_json(out / "config.json", vars(args))
    lines = ["| backbone | px | params (M) | train img/s | train, random input | overhead | infer img/s |"
             " infer, random input | overhead |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['backbone']} | {r['size']} | {r['params_m']} | {r['train_img_s']:.0f} | "
                     f"{r['train_img_s_random']:.0f} | {r['train_overhead']:+.1%} | {r['infer_img_s']:.0f} | "
                     f"{r['infer_img_s_random']:.0f} | {r['infer_overhead']:+.1%} |")
    (out / "throughput.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
