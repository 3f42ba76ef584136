"""The REST app: ``POST /predict``, ``GET /models``, ``GET /health`` and the browser page at ``/``.

One :class:`~ferkit.Recognizer` is built once and shared by every request; calls into it are
serialised by a lock (the model and detector are not documented as thread-safe, and on a CPU
running two forward passes at once is no faster than one after the other).

Uploads are untrusted, so everything about them is checked before the expensive part:

* size: a ``Content-Length`` above the limit is refused (413) before the body is read, and the
  bytes are counted while they arrive, so a lying or chunked client cannot push more;
* type: sniffed from the magic bytes (JPEG, PNG, WebP, BMP, TIFF, GIF), never the client's
  content type (415 otherwise);
* decompression bombs: the pixel count is read from the header (Pillow opens lazily) and an
  image above ``max_pixels`` is refused (413) before it is decoded;
* a corrupt or truncated image is a 400 with a one-line ``detail``.

No response ever carries a stack trace: an unexpected error is logged server-side with its
traceback and answered ``500 {"detail": "internal error"}``.
"""

from __future__ import annotations

import io
import logging
import re
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from fastapi import FastAPI, File, HTTPException, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ferkit import __version__
from ferkit.data.images import DEFAULT_MAX_PIXELS, pil_to_rgb
from ferkit.errors import FerkitError

logger = logging.getLogger("ferkit.serve")

STATIC = Path(__file__).resolve().parent / "static"
#: room for the multipart boundary and part headers on top of the file itself
MULTIPART_OVERHEAD = 64 * 1024
#: what the page and the API accept, by sniffed type
ACCEPTED = ("image/jpeg", "image/png", "image/webp", "image/bmp", "image/tiff", "image/gif")
EXAMPLE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
# the page is self-contained: the policy makes any accidental external fetch fail loudly
_CSP = ("default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob: mediastream:; "
        "style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'; connect-src 'self'")


class UploadRejected(Exception):
    """An upload refused for a reason the client can fix: carries the HTTP status and a one-line detail."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def sniff_type(data: bytes) -> str | None:
    """The image MIME type from the magic bytes, or None: the client's content type is not trusted."""
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:2] == b"BM":
        return "image/bmp"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "image/tiff"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    return None


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """RGB uint8 (H, W, 3) from uploaded bytes, refusing unknown types, bombs and corrupt files.

    Raises :class:`UploadRejected` (415 unknown type, 413 too many pixels, 400 undecodable).
    """
    from PIL import Image

    kind = sniff_type(data)
    if kind is None:
        raise UploadRejected(415, "unsupported file type: send a JPEG, PNG, WebP, BMP, TIFF or GIF image")
    name = kind.split("/")[1].upper()
    try:  # the header only: Pillow does not decode pixels until asked
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                width, height = im.size
    except Image.DecompressionBombError:
        raise UploadRejected(413, f"image has too many pixels (limit {max_pixels / 1e6:g} megapixels)") from None
    except Exception:  # noqa: BLE001 - any header failure means "not a readable image"
        raise UploadRejected(400, f"cannot decode image: corrupt or truncated {name} file") from None
    if width * height > max_pixels:
        raise UploadRejected(413, f"image is {width}x{height} = {width * height / 1e6:.1f} megapixels "
                                  f"(limit {max_pixels / 1e6:g})")
    if width == 0 or height == 0:
        raise UploadRejected(400, f"cannot decode image: empty {name} image")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is not None:
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    try:  # formats this OpenCV build lacks (GIF before 4.11, some TIFF flavours); Pillow refuses truncation
        with Image.open(io.BytesIO(data)) as im:
            rgb = pil_to_rgb(im)
    except Exception:  # noqa: BLE001
        raise UploadRejected(400, f"cannot decode image: corrupt or truncated {name} file") from None
    if rgb.ndim != 3 or rgb.size == 0:
        raise UploadRejected(400, f"cannot decode image: empty {name} image")
    return rgb


def _model_name(recognizer: Any, fallback: str) -> str:
    """The registered name of the loaded weights (what /models lists), else the file or folder name."""
    from ferkit.zoo import list_models

    source = getattr(getattr(recognizer, "model", None), "source", None)
    if source:
        try:
            src = Path(source).resolve()
            for card in list_models():
                if Path(card["file"]).resolve() == src:
                    return str(card["name"])
        except OSError:
            pass
        if fallback in ("default", ""):
            return Path(source).name
    return fallback


class _Guard:
    """Outermost ASGI layer: body-size limit on ``POST /predict`` and a catch-all for unexpected errors.

    A plain ASGI middleware rather than an exception handler, so the size check happens before
    the multipart parser reads anything, and an unexpected error is answered without the
    traceback ever reaching the client (it is logged here instead).
    """

    def __init__(self, app: Any, body_limit: int, file_limit: int) -> None:
        self.app = app
        self.body_limit = body_limit
        self.file_limit = file_limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_tracked(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        if scope["method"] == "POST" and scope["path"].rstrip("/") == "/predict":
            length = dict(scope.get("headers") or []).get(b"content-length", b"")
            if length.isdigit() and int(length) > self.body_limit:
                await _send_json(send, 413, _too_large(int(length), self.file_limit))
                return
            receive = self._counting(receive)
        try:
            await self.app(scope, receive, send_tracked)
        except Exception:
            logger.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if not started:
                await _send_json(send, 500, "internal error")

    def _counting(self, receive: Any) -> Any:
        received = 0

        async def counted() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.body_limit:
                    raise HTTPException(413, _too_large(received, self.file_limit, at_least=True))
            return message

        return counted


def _human(n: int) -> str:
    if n >= 2**20:
        return f"{n / 2**20:.1f} MB"
    return f"{n / 1024:.1f} KB" if n >= 1024 else f"{n} bytes"


def _too_large(size: int, limit: int, at_least: bool = False) -> str:
    return f"upload too large: {'over ' if at_least else ''}{_human(size)} (limit {_human(limit)})"


async def _send_json(send: Any, status: int, detail: str) -> None:
    body = JSONResponse({"detail": detail}).body
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def create_app(recognizer: Any = None, *, model: str = "default", engine: str = "auto",
               detector: str = "retinaface", max_upload_bytes: int = 10 * 2**20,
               max_pixels: int = DEFAULT_MAX_PIXELS) -> FastAPI:
    """The FastAPI app around one shared Recognizer (built here from ``model`` etc. if not given).

    A factory rather than a module-level app, so tests and embedding programs pass a ready
    Recognizer and their own limits, and nothing heavy happens at import.
    """
    if recognizer is None:
        from ferkit.inference.recognizer import Recognizer

        recognizer = Recognizer(model, engine=engine, detector=detector)
    rec = recognizer
    name = _model_name(rec, model)
    engine_name = str(getattr(rec, "engine", engine))
    labels = [str(label) for label in rec.labels]
    lock = threading.Lock()
    max_upload_bytes = int(max_upload_bytes)

    app = FastAPI(title="ferkit", version=__version__, docs_url=None, redoc_url=None,
                  description="Facial expression recognition: POST an image to /predict.")
    app.add_middleware(_Guard, body_limit=max_upload_bytes + MULTIPART_OVERHEAD, file_limit=max_upload_bytes)
    app.state.recognizer = rec

    @app.exception_handler(UploadRejected)
    async def _rejected(request: Request, exc: UploadRejected) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors()[:3]:
            loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
            parts.append(f"{loc}: {err.get('msg', 'invalid')}" if loc else str(err.get("msg", "invalid")))
        return JSONResponse({"detail": "invalid request: " + "; ".join(parts)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else "request refused"
        return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:  # reached only if _Guard is bypassed
        logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"detail": "internal error"}, status_code=500)

    def _predict_bytes(data: bytes) -> dict[str, Any]:
        t0 = time.perf_counter()
        rgb = decode_image(data, max_pixels)
        t1 = time.perf_counter()
        try:
            with lock:
                t2 = time.perf_counter()
                faces = rec.predict(rgb)
                t3 = time.perf_counter()
        except FerkitError as exc:
            raise UploadRejected(400, str(exc).splitlines()[0]) from None
        h, w = rgb.shape[:2]
        # time_ms: this request's own work (decode + detect + classify); queue_ms: waiting for the model
        return {"faces": faces, "no_face": not faces, "labels": labels, "width": int(w), "height": int(h),
                "model": name, "time_ms": round((t1 - t0 + t3 - t2) * 1000.0, 3),
                "queue_ms": round((t2 - t1) * 1000.0, 3)}

    @app.post("/predict")
    async def predict(file: UploadFile | None = File(None, description="the image (JPEG, PNG, WebP, BMP, TIFF, GIF)"),
                      image: UploadFile | None = File(None, description="alternative name of the same field"),
                      ) -> dict[str, Any]:
        """Expressions of every face in the uploaded image, one dict per face as Recognizer.predict returns."""
        upload = file if file is not None else image
        if upload is None:
            raise UploadRejected(422, "no image uploaded: send it as the multipart form field 'file'")
        if upload.size is not None and upload.size > max_upload_bytes:  # known once the form is parsed
            raise UploadRejected(413, _too_large(upload.size, max_upload_bytes))
        data = await upload.read(max_upload_bytes + 1)
        if len(data) > max_upload_bytes:
            raise UploadRejected(413, _too_large(len(data), max_upload_bytes, at_least=True))
        if not data:
            raise UploadRejected(400, "the uploaded file is empty")
        return await run_in_threadpool(_predict_bytes, data)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Liveness plus what is loaded, so a client can check the label set before sending images."""
        return {"status": "ok", "model": name, "engine": engine_name, "labels": labels,
                "detector": getattr(getattr(rec, "detector", None), "name", detector),
                "max_upload_bytes": max_upload_bytes, "max_pixels": int(max_pixels), "accepted": list(ACCEPTED),
                "version": __version__}

    @app.get("/models")
    async def models() -> dict[str, Any]:
        """The model cards of ferkit.list_models() and which one this server runs."""
        from ferkit.zoo import list_models

        cards = []
        for card in list_models():
            card = dict(card)
            card["file"] = Path(card.get("file", "")).name  # never expose server paths
            card["loaded"] = card.get("name") == name
            cards.append(card)
        return {"loaded": name, "labels": labels, "models": cards}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        """The browser page: upload a photo or use the webcam; everything inline, nothing fetched from outside."""
        return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"),
                            headers={"Content-Security-Policy": _CSP, "Cache-Control": "no-cache"})

    @app.get("/examples")
    async def example_list() -> dict[str, list[str]]:
        """The example photos shipped with ferkit, for the page's demo picker."""
        return {"examples": [p.name for p in _example_files()]}

    @app.get("/examples/{filename}", include_in_schema=False)
    async def example(filename: str) -> FileResponse:
        """One bundled example photo; only files directly in ferkit's examples folder are served."""
        path = _example_path(filename)
        if path is None:
            raise HTTPException(404, f"no example named '{filename[:64]}'")
        return FileResponse(path)

    return app


def _example_files() -> list[Path]:
    from ferkit.examples import HERE

    return sorted(p for p in HERE.iterdir() if p.suffix.lower() in EXAMPLE_SUFFIXES and p.is_file())


def _example_path(filename: str) -> Path | None:
    """The example file named ``filename`` (with or without extension), or None: no traversal possible."""
    if not _SAFE_NAME.match(filename) or ".." in filename:
        return None
    for p in _example_files():
        if filename in (p.name, p.stem):
            return p
    return None
