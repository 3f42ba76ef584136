"""Inference speed on a shared machine: `ferkit benchmark` alone and beside a controlled background load.

    python benchmarks/under_load.py [--models default fast] [--load 2] [--repeats 3]

The background load is ``--load`` processes spinning on pure-Python arithmetic (one per core here,
like another job on the same cores). Each model is measured by `ferkit benchmark` in a fresh process,
with ``OMP_WAIT_POLICY`` unset (OpenMP threads spin while idle: the library default a notebook gets)
and with ``PASSIVE`` (what ferkit's CLI sets), quiet and under load. Writes results/under_load/.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, environment, results_dir, write_json


def _spin(stop) -> None:
    x = 0
    while not stop.is_set():
        for i in range(10000):
            x = (x * 31 + i) % 1000003


def measure(model: str, policy: str, repeats: int) -> dict:
    """One `ferkit benchmark` run with OMP_WAIT_POLICY=policy (ACTIVE: OpenMP's spinning default;
    `ferkit benchmark` sets PASSIVE only when the variable is unset)."""
    env = {**os.environ, "OMP_WAIT_POLICY": policy}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "speed.json"
        code = "import sys; from ferkit.cli import main; sys.exit(main(sys.argv[1:]))"
        subprocess.run([sys.executable, "-c", code, "benchmark", "--model", model, "--threads", "2",
                        "--repeats", str(repeats), "--out", str(out)], check=True, env=env, cwd=REPO,
                       capture_output=True, text=True)
        res = json.loads(out.read_text())
    return {"faces_per_s": res["classifier"]["median"], "photos_per_s": res["end_to_end"]["median"],
            "load_1min": res["classifier"].get("load_1min_before")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=["default", "fast"])
    ap.add_argument("--load", type=int, default=2, help="background processes spinning")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    out = results_dir("under_load")
    rows = []
    for loaded in (False, True):
        stop = mp.Event()
        procs = [mp.Process(target=_spin, args=(stop,), daemon=True) for _ in range(args.load if loaded else 0)]
        for p in procs:
            p.start()
        time.sleep(2 if loaded else 0)
        try:
            for model in args.models:
                for policy in ("ACTIVE", "PASSIVE"):
                    r = measure(model, policy, args.repeats)
                    rows.append({"model": model, "background_processes": len(procs), "omp_wait_policy": policy, **r})
                    print(json.dumps(rows[-1]), flush=True)
        finally:
            stop.set()
            for p in procs:
                p.join(5)
    write_json(out / "under_load.json", {"rows": rows, "settings": vars(args), "environment": environment(out)})
    lines = ["# Inference speed alone and beside a background load", "",
             f"`ferkit benchmark --threads 2` in a fresh process per row; background: {args.load} processes spinning "
             "on Python arithmetic on the same 2 cores. ACTIVE = OpenMP's default (idle threads spin), PASSIVE = what "
             "ferkit's CLI sets.", "",
             "| model | background | OMP_WAIT_POLICY | classifier faces/s | photos/s (640x480) |",
             "|---|---:|---|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['background_processes']} | {r['omp_wait_policy']} | "
                     f"{r['faces_per_s']:.0f} | {r['photos_per_s']:.1f} |")
    (out / "under_load.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
