"""A headless-browser screenshot of the ``ferkit serve`` page analysing a bundled example photo.

Starts ``ferkit serve`` as a subprocess on 127.0.0.1 (a free port), opens
``/?demo=examples/<photo>`` in headless Chromium (the page fetches the example, posts it to
/predict and draws boxes and probability bars), and writes

* ``results/serve/page.png``: the screenshot;
* ``results/serve/page.json``: what was run, the faces the page rendered (from a DOM dump of the
  same page), the Chromium version and the git commit.

It is the evidence that the page works end to end in a real browser, not only under TestClient.

    python benchmarks/serve_screenshot.py [--example astronaut_pair.jpg] [--window 1100x800]
"""

from __future__ import annotations

import argparse
import re
import time

from ferkit.serve.local import chromium, chromium_path, chromium_version, serve_subprocess

from _common import environment, results_dir, write_json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--example", default="astronaut_pair.jpg", help="Bundled example photo to analyse.")
    ap.add_argument("--model", default="default")
    ap.add_argument("--engine", default="torch")
    ap.add_argument("--window", default="1100x800", help="Browser window WIDTHxHEIGHT.")
    ap.add_argument("--budget-ms", type=int, default=8000, help="Virtual time the page gets to render.")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    binary = chromium_path()
    if binary is None:
        raise SystemExit("no Chromium found: apt-get install chromium")
    width, height = (int(v) for v in args.window.lower().split("x"))
    out = results_dir("serve")
    server_args = ["--model", args.model, "--engine", args.engine, "--threads", str(args.threads)]
    t0 = time.perf_counter()
    with serve_subprocess(server_args, log=out / "server.log") as (url, _proc):
        page = f"{url}/?demo=examples/{args.example}"
        chromium(page, screenshot=out / "page.png", window=(width, height), budget_ms=args.budget_ms, binary=binary)
        dom = chromium(page, dump_dom=True, window=(width, height), budget_ms=args.budget_ms, binary=binary)
    results = dom[dom.find('id="results"'):]
    labels = re.findall(r'<span class="label">([^<]+)</span>', results)
    status = re.search(r'id="status">([^<]*)<', dom)
    error = re.search(r'id="error"[^>]*>([^<]*)<', dom)
    record = {
        "what": "headless Chromium screenshot of the ferkit serve page, demo mode on a bundled example",
        "page": f"/?demo=examples/{args.example}",
        "server": ["ferkit", "serve", *server_args],
        "window": [width, height],
        "virtual_time_budget_ms": args.budget_ms,
        "faces_rendered": len(labels),
        "labels_rendered": labels,
        "status_line": status.group(1) if status else None,
        "error_shown": (error.group(1) or None) if error else None,
        "chromium": chromium_version(binary),
        "wall_s": round(time.perf_counter() - t0, 2),
        "files": ["page.png"],
        **environment(),
    }
    write_json(out / "page.json", record)
    (out / "server.log").unlink(missing_ok=True)
    print(f"{out / 'page.png'}: {len(labels)} faces rendered ({', '.join(labels) or 'none'}); {record['status_line']}")
    if not labels or record["error_shown"]:
        raise SystemExit("the page rendered no face results (see page.png)")


if __name__ == "__main__":
    main()
