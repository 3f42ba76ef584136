"""Load test of ``ferkit serve``: latency percentiles and throughput under concurrent uploads.

Starts ``ferkit serve`` as a subprocess on 127.0.0.1 (a free port), waits for /health, then
sends ``--requests`` POST /predict uploads of one 640x480 JPEG photo (the bundled astronaut
photo resized and cropped, one face) with ``--concurrency`` requests in flight (httpx async
client). Inference is serialised inside the server (one shared Recognizer behind a lock), so
throughput is bounded by one photo's detect + classify time and latency grows with the queue:
the test measures what a client sees, queueing included.

Writes results/serve_load/: ``load.json`` (every setting, percentiles, the git commit),
``load.md`` (a table) and ``latency.png`` (histogram). The client shares the machine's cores
with the server; on a small machine that inflates the numbers a little.

    python benchmarks/serve_load.py --requests 500 --concurrency 16 --threads 2
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import cv2
import numpy as np

from ferkit.examples import path as example_path
from ferkit.serve.local import serve_subprocess

from _common import environment, results_dir, write_json


def photo_640x480(quality: int = 90) -> bytes:
    """The astronaut example as a 640x480 JPEG: scaled to 640 wide, the top 480 rows (the face stays in)."""
    img = cv2.imread(str(example_path("astronaut")), cv2.IMREAD_COLOR)
    scale = 640 / img.shape[1]
    img = cv2.resize(img, (640, round(img.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    if img.shape[0] < 480:
        img = cv2.copyMakeBorder(img, 0, 480 - img.shape[0], 0, 0, cv2.BORDER_CONSTANT, value=(114, 114, 114))
    ok, buf = cv2.imencode(".jpg", img[:480], [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


async def run_load(url: str, data: bytes, n: int, concurrency: int, timeout: float) -> dict:
    """Send ``n`` uploads with ``concurrency`` in flight; per-request latency, status and server time."""
    import httpx

    latencies = np.full(n, np.nan)
    server_ms = np.full(n, np.nan)
    queue_ms = np.full(n, np.nan)
    statuses: list[int | str] = [0] * n
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as client:
        async def worker() -> None:
            while True:
                try:
                    i = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                t0 = time.perf_counter()
                try:
                    r = await client.post("/predict", files={"file": ("photo.jpg", data, "image/jpeg")})
                    statuses[i] = r.status_code
                    if r.status_code == 200:
                        body = r.json()
                        server_ms[i] = body["time_ms"]
                        queue_ms[i] = body.get("queue_ms", np.nan)
                except httpx.HTTPError as exc:
                    statuses[i] = type(exc).__name__
                latencies[i] = (time.perf_counter() - t0) * 1000.0

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return {"latency_ms": latencies, "server_ms": server_ms, "queue_ms": queue_ms, "statuses": statuses,
            "wall_s": wall}


def summarise(res: dict, n: int) -> dict:
    lat = res["latency_ms"]
    ok = np.array([s == 200 for s in res["statuses"]])
    errors: dict[str, int] = {}
    for s in res["statuses"]:
        if s != 200:
            errors[str(s)] = errors.get(str(s), 0) + 1
    good = lat[ok]
    pct = (lambda q: float(np.percentile(good, q))) if len(good) else (lambda q: float("nan"))
    return {
        "requests": n, "ok": int(ok.sum()), "errors": int((~ok).sum()), "error_kinds": errors,
        "wall_s": round(res["wall_s"], 3), "throughput_rps": round(ok.sum() / res["wall_s"], 2),
        "latency_ms": {"p50": pct(50), "p90": pct(90), "p99": pct(99),
                       "max": float(good.max()) if len(good) else float("nan"),
                       "mean": float(good.mean()) if len(good) else float("nan")},
        "server_time_ms": {"p50": float(np.nanpercentile(res["server_ms"], 50)) if len(good) else float("nan"),
                           "mean": float(np.nanmean(res["server_ms"])) if len(good) else float("nan")},
        "server_queue_ms": {"p50": float(np.nanpercentile(res["queue_ms"], 50)) if len(good) else float("nan"),
                            "mean": float(np.nanmean(res["queue_ms"])) if len(good) else float("nan")},
    }


def histogram(lat: np.ndarray, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lat = lat[np.isfinite(lat)]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    ax.hist(lat, bins=min(60, max(10, len(lat) // 8)), color="#3d5afe", alpha=0.85)
    for q, style in ((50, "-"), (90, "--"), (99, ":")):
        v = np.percentile(lat, q)
        ax.axvline(v, color="#e53935", linestyle=style, linewidth=1.2, label=f"p{q} {v:.0f} ms")
    ax.set_xlabel("latency per request (ms, client side, queueing included)")
    ax.set_ylabel("requests")
    ax.set_title(title, fontsize=10)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2, help="Server CPU threads (torch and the detector).")
    ap.add_argument("--engine", default="torch")
    ap.add_argument("--model", default="default")
    ap.add_argument("--warmup", type=int, default=3, help="Untimed requests first (model and allocator warm-up).")
    ap.add_argument("--timeout", type=float, default=300.0, help="Per-request timeout, seconds.")
    ap.add_argument("--detect-size", type=int, default=480, help="ferkit serve --detect-size (its default: 480).")
    args = ap.parse_args()

    data = photo_640x480()
    server_args = ["--model", args.model, "--engine", args.engine, "--threads", str(args.threads),
                   "--detect-size", str(args.detect_size)]
    out = results_dir("serve_load")
    with serve_subprocess(server_args, log=out / "server.log") as (url, _proc):
        import httpx

        first = httpx.post(f"{url}/predict", files={"file": ("photo.jpg", data, "image/jpeg")}, timeout=120)
        first.raise_for_status()
        faces = len(first.json()["faces"])
        if args.warmup > 1:
            asyncio.run(run_load(url, data, args.warmup - 1, 1, args.timeout))
        res = asyncio.run(run_load(url, data, args.requests, args.concurrency, args.timeout))
    (out / "server.log").unlink(missing_ok=True)

    summary = summarise(res, args.requests)
    record = {
        "what": "POST /predict load test of ferkit serve (subprocess on 127.0.0.1), httpx async client",
        "settings": {**vars(args), "server": ["ferkit", "serve", *server_args]},
        "photo": {"size": [640, 480], "jpeg_bytes": len(data), "faces": faces,
                  "source": "ferkit examples/astronaut.jpg scaled to 640 wide, top 480 rows"},
        **summary,
        **environment(),
    }
    write_json(out / "load.json", record)
    lat = summary["latency_ms"]
    title = (f"ferkit serve: {args.requests} requests, concurrency {args.concurrency}, "
             f"{args.threads} threads, {args.engine}")
    histogram(res["latency_ms"], out / "latency.png", title)
    md = [
        f"# ferkit serve load test ({args.engine}, {args.threads} server threads)",
        "",
        f"{args.requests} POST /predict of one 640x480 JPEG ({len(data)} bytes, {faces} face), "
        f"{args.concurrency} in flight, client on the same machine. Commit `{record['git_commit']}`.",
        "",
        "| requests | errors | throughput (req/s) | p50 ms | p90 ms | p99 ms | max ms | server ms (p50) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {args.requests} | {summary['errors']} | {summary['throughput_rps']:.2f} | {lat['p50']:.0f} | "
        f"{lat['p90']:.0f} | {lat['p99']:.0f} | {lat['max']:.0f} | {summary['server_time_ms']['p50']:.0f} |",
        "",
        "Latency is client side and includes queueing: inference is serialised in the server, so with "
        f"{args.concurrency} requests in flight a request waits for about {args.concurrency - 1} others. "
        "`server ms` is decode + detect + classify for one request, as the server reports it (`time_ms`, "
        f"without the wait for the model, `queue_ms`, p50 {summary['server_queue_ms']['p50']:.0f} ms).",
        "",
        "![latency histogram](latency.png)",
        "",
    ]
    (out / "load.md").write_text("\n".join(md))
    print("\n".join(md[4:7]))
    if summary["errors"]:
        print(f"errors: {summary['error_kinds']}")


if __name__ == "__main__":
    main()
