"""ferkit serve: the REST app (limits, sniffed types, error bodies) and its browser page.

One Recognizer for the whole module (the bundled default model), shared by every app built
here, as the server shares it between requests.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
pytest.importorskip("multipart")

import ferkit  # noqa: E402
from ferkit.examples import path as example_path  # noqa: E402
from ferkit.serve.app import create_app, sniff_type  # noqa: E402
from ferkit.serve.local import chromium, chromium_path, serve_in_thread  # noqa: E402

with warnings.catch_warnings():  # starlette's note about a future httpx replacement
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

ASTRONAUT = example_path("astronaut").read_bytes()

from ferkit.zoo import ALIASES  # noqa: E402

DEFAULT_NAME = ALIASES["default"]


@pytest.fixture(scope="module")
def rec():
    return ferkit.Recognizer("default", device="cpu", threads=1)


@pytest.fixture(scope="module")
def client(rec):
    return TestClient(create_app(rec))


@pytest.fixture(scope="module")
def small_client(rec):
    """Uploads limited to 1,000 bytes and images to 10,000 pixels: the limits without big fixtures."""
    return TestClient(create_app(rec, max_upload_bytes=1000, max_pixels=10_000))


def _refused(r, status: int) -> str:
    """The response is ``status`` with a one-line string detail and nothing of a traceback."""
    assert r.status_code == status, r.text
    assert "Traceback" not in r.text and 'File "' not in r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and detail and "\n" not in detail
    return detail


def _encode(rgb: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, fmt)
    return buf.getvalue()


def test_health(client, rec):
    h = client.get("/health").json()
    assert h["status"] == "ok"
    assert h["labels"] == list(rec.labels)
    assert h["engine"] == rec.engine == "onnx"  # the bundled default is int8 ONNX
    assert h["model"] == DEFAULT_NAME


def test_models(client):
    m = client.get("/models").json()
    assert m["loaded"] == DEFAULT_NAME
    names = {c["name"] for c in m["models"]}
    assert {c["name"] for c in ferkit.list_models()} == names
    loaded = [c for c in m["models"] if c["loaded"]]
    assert len(loaded) == 1 and "default" in loaded[0]["aliases"]
    assert all("/" not in c["file"] for c in m["models"])  # no server paths


def test_predict_matches_recognizer(client, rec):
    rgb = cv2.cvtColor(cv2.imdecode(np.frombuffer(ASTRONAUT, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    expected = rec.predict(rgb)
    r = client.post("/predict", files={"file": ("astronaut.jpg", ASTRONAUT, "image/jpeg")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["width"], body["height"]) == (rgb.shape[1], rgb.shape[0])
    assert body["labels"] == list(rec.labels) and body["model"] == DEFAULT_NAME
    assert body["no_face"] is False and body["time_ms"] > 0
    assert len(body["faces"]) == len(expected) >= 1
    for got, want in zip(body["faces"], expected):
        assert set(got) == set(want) == {"box", "face_score", "landmarks", "probs", "label", "uncertainty"}
        assert got["label"] == want["label"]
        for lab in rec.labels:
            assert abs(got["probs"][lab] - want["probs"][lab]) < 1e-6
        np.testing.assert_allclose(got["box"], want["box"], atol=1e-6)
        assert abs(got["uncertainty"] - want["uncertainty"]) < 1e-6
    # the other field name, and the client's content type is not what decides
    r2 = client.post("/predict", files={"image": ("x.bin", ASTRONAUT, "application/octet-stream")})
    assert r2.status_code == 200 and r2.json()["faces"][0]["label"] == expected[0]["label"]


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "BMP", "TIFF", "GIF"])
def test_predict_accepts_formats(client, fmt):
    rgb = np.asarray(Image.open(io.BytesIO(ASTRONAUT)).convert("RGB").resize((256, 256)))
    data = _encode(rgb, fmt)
    assert sniff_type(data) == f"image/{fmt.lower()}"
    r = client.post("/predict", files={"file": (f"a.{fmt.lower()}", data, "image/whatever")})
    assert r.status_code == 200, r.text
    assert r.json()["width"] == 256


def test_no_face(client):
    gray = _encode(np.full((120, 160, 3), 128, np.uint8), "PNG")
    r = client.post("/predict", files={"file": ("gray.png", gray, "image/png")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["faces"] == [] and body["no_face"] is True
    assert (body["width"], body["height"]) == (160, 120)


def test_too_large_by_content_length(small_client):
    big = ASTRONAUT + b"\0" * 100_000  # body over the limit plus multipart room: refused before reading
    assert "too large" in _refused(small_client.post("/predict", files={"file": ("a.jpg", big, "image/jpeg")}), 413)
    # a file over the limit but within the multipart room: refused after parsing
    assert "too large" in _refused(small_client.post("/predict", files={"file": ("a.jpg", ASTRONAUT)}), 413)


def test_too_large_streamed_without_length(small_client):
    """A chunked body has no Content-Length: the bytes are counted as they arrive."""
    boundary = "ferkitboundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.jpg\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode()

    def body():
        yield head
        for _ in range(40):
            yield b"\xff" * 4096
        yield f"\r\n--{boundary}--\r\n".encode()

    r = small_client.post("/predict", content=body(),
                          headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert "too large" in _refused(r, 413)


def test_too_many_pixels(small_client, client):
    assert "megapixels" in _refused(small_client.post("/predict", files={"file": ("a.png", _encode(
        np.zeros((200, 200, 3), np.uint8), "PNG"))}), 413)

    # a PNG whose header claims 20000 x 20000 with no pixel data: refused from the header alone
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)) + \
        chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b"")
    _refused(client.post("/predict", files={"file": ("bomb.png", bomb)}), 413)


def test_text_file_is_415(client):
    r = client.post("/predict", files={"file": ("notes.jpg", b"just some text, not an image\n", "image/jpeg")})
    assert "unsupported file type" in _refused(r, 415)


def test_truncated_jpeg_is_400(client):
    r = client.post("/predict", files={"file": ("cut.jpg", ASTRONAUT[: len(ASTRONAUT) // 2], "image/jpeg")})
    assert "cannot decode" in _refused(r, 400)
    _refused(client.post("/predict", files={"file": ("empty.jpg", b"", "image/jpeg")}), 400)


def test_missing_field_is_422(client):
    _refused(client.post("/predict", files={"photo": ("a.jpg", ASTRONAUT, "image/jpeg")}), 422)
    _refused(client.post("/predict"), 422)
    _refused(client.post("/predict", data={"file": "not a file"}), 422)


def test_unexpected_error_is_500_without_traceback(caplog):
    class Broken:
        labels = ("neutral", "happiness")
        engine = "torch"

        def predict(self, image):
            raise RuntimeError("secret internal state")

    c = TestClient(create_app(Broken()))
    with caplog.at_level("ERROR", logger="ferkit.serve"):
        r = c.post("/predict", files={"file": ("a.jpg", ASTRONAUT, "image/jpeg")})
    assert r.status_code == 500 and r.json() == {"detail": "internal error"}
    assert "secret" not in r.text
    assert "secret internal state" in caplog.text  # logged server-side with its traceback


def test_page_and_examples(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text
    assert 'id="upload-form"' in html and 'type="file"' in html and 'name="file"' in html
    assert 'id="results"' in html and "getUserMedia" in html
    assert "src=\"http" not in html and "href=\"http" not in html and "@import" not in html  # nothing external
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert "astronaut.jpg" in client.get("/examples").json()["examples"]
    ex = client.get("/examples/astronaut.jpg")
    assert ex.status_code == 200 and ex.content == ASTRONAUT
    assert client.get("/examples/astronaut").content == ASTRONAUT
    for bad in ["..%2Fapp.py", "__init__.py", ".hidden", "LICENSES.md", "%2Fetc%2Fpasswd", "%2E%2E", "missing.jpg"]:
        _refused(client.get(f"/examples/{bad}"), 404)


def test_cli_serve_help():
    from click.testing import CliRunner

    from ferkit.cli import cli

    out = CliRunner().invoke(cli, ["serve", "--help"])
    assert out.exit_code == 0
    for opt in ["--model", "--host", "--port", "--engine", "--detector", "--max-upload-mb", "--threads"]:
        assert opt in out.output


@pytest.mark.skipif(chromium_path() is None, reason="no headless Chromium installed")
def test_browser_demo_page(rec, tmp_path):
    """A real browser loads the page, fetches the example, posts it and renders boxes and bars."""
    with serve_in_thread(create_app(rec)) as url:
        dom = chromium(f"{url}/?demo=examples/astronaut.jpg", dump_dom=True, budget_ms=8000, timeout=90)
    results = dom[dom.index('id="results"'):]
    assert 'class="face"' in results and "happiness" in results, dom[-2000:]
    assert "No image yet" not in dom or 'id="placeholder" hidden' in dom
    assert 'id="error" role="alert"></div>' in dom or 'class="show"' not in dom
