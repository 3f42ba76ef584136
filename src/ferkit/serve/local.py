"""Run the server locally in the background and look at its page with a headless Chromium.

Used by the tests and the serve benchmarks (load test, page screenshot), and handy in a
notebook: ``with serve_in_thread(create_app(rec)) as url: ...``. Everything binds to
127.0.0.1 on a free port, so several runs never collide and nothing is exposed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

#: where Debian's ``chromium`` package and the common alternatives put the browser
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome",
                       "/usr/bin/google-chrome-stable")


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_healthy(url: str, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> dict[str, Any]:
    """Poll ``url``/health until it answers 200 (model loaded); RuntimeError on timeout or if ``proc`` died."""
    import httpx

    deadline = time.monotonic() + timeout
    last: str = ""
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {proc.returncode} before answering /health")
        try:
            r = httpx.get(url.rstrip("/") + "/health", timeout=2.0)
            if r.status_code == 200:
                return r.json()
            last = f"HTTP {r.status_code}"
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        time.sleep(0.2)
    raise RuntimeError(f"no answer from {url}/health within {timeout:.0f} s (last: {last})")


@contextlib.contextmanager
def serve_in_thread(app: Any, host: str = "127.0.0.1", log_level: str = "warning") -> Iterator[str]:
    """Serve ``app`` with uvicorn in a daemon thread of this process; yields the base URL.

    In-process, so a test reuses its already loaded Recognizer instead of paying a second
    model load in a subprocess.
    """
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="ferkit-serve")
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@contextlib.contextmanager
def serve_subprocess(args: Sequence[str] = (), host: str = "127.0.0.1", port: int | None = None,
                     timeout: float = 120.0, log: Path | None = None,
                     env: dict[str, str] | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """Start ``ferkit serve ARGS`` as a child process and wait until /health answers.

    A separate process, as a deployment runs it: what a load test measures then includes
    uvicorn's own request handling, not a shortcut through this interpreter.
    Yields ``(base_url, process)``; the process is terminated on exit.
    """
    port = port or free_port(host)
    cmd = [sys.executable, "-m", "ferkit.cli", "serve", "--host", host, "--port", str(port), *args]
    out = open(log, "wb") if log else subprocess.DEVNULL  # closed in the finally below
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    url = f"http://{host}:{port}"
    try:
        wait_healthy(url, timeout, proc)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if log:
            out.close()


def chromium_path() -> str | None:
    """The headless browser to drive, or None when none is installed (the browser tests then skip)."""
    for cand in CHROMIUM_CANDIDATES:
        if os.access(cand, os.X_OK):
            return cand
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    return found


def chromium_version(binary: str | None = None) -> str:
    """``Chromium 150.0...`` as the browser reports it (empty string if it cannot say)."""
    binary = binary or chromium_path()
    if not binary:
        return ""
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip().splitlines()[0] if out.stdout.strip() else ""


def chromium(url: str, *, screenshot: Path | None = None, dump_dom: bool = False,
             window: tuple[int, int] = (1100, 800), budget_ms: int = 8000, timeout: float = 120.0,
             binary: str | None = None) -> str:
    """Load ``url`` in a headless Chromium; write a PNG screenshot and/or return the rendered DOM.

    ``budget_ms`` of virtual time lets the page's scripts fetch and render before the capture
    (virtual time waits for pending network requests, so a slow server is fine). The flags keep
    the browser off the network apart from ``url`` and away from any user profile.
    """
    binary = binary or chromium_path()
    if not binary:
        raise RuntimeError("no Chromium found (apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="ferkit-chromium-") as profile:
        cmd = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio", f"--user-data-dir={profile}",
               f"--window-size={window[0]},{window[1]}", f"--virtual-time-budget={int(budget_ms)}"]
        if screenshot is not None:
            screenshot = Path(screenshot).resolve()
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            cmd.append(f"--screenshot={screenshot}")
        if dump_dom:
            cmd.append("--dump-dom")
        cmd.append(url)
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        tail = (res.stderr or "").strip().splitlines()[-3:]
        raise RuntimeError(f"chromium exited with code {res.returncode}: {' | '.join(tail)}")
    if screenshot is not None and not screenshot.is_file():
        raise RuntimeError("chromium wrote no screenshot")
    return res.stdout
