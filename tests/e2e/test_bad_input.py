"""Every bad input gets a 4xx problem with a specific code, and the server keeps serving."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import RunningServer
from tests.factories import png_header_only, solid

PREDICT = "/v1/models/mobilenet-v2:predict"


def _random_jpeg() -> bytes:
    rng = np.random.default_rng(3)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (300, 300, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def _random_png() -> bytes:
    rng = np.random.default_rng(4)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (300, 300, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


CASES = [
    ("empty body", b"", "image/jpeg", 422, "invalid_image"),
    ("not an image", b"<html>hello</html>" * 20, "image/jpeg", 422, "invalid_image"),
    ("truncated jpeg", _random_jpeg()[:3000], "image/jpeg", 422, "invalid_image"),
    ("truncated png", _random_png()[:3000], "image/png", 422, "invalid_image"),
    ("png bomb 30000x30000", png_header_only(30000, 30000), "image/png", 422, "image_too_large"),
    ("zero width", png_header_only(0, 50), "image/png", 422, "invalid_image"),
    ("1x1 image", solid((1, 2, 3), size=(1, 1)), "image/png", 422, "image_too_small"),
    ("wrong content type", solid((1, 2, 3)), "text/plain", 415, "unsupported_media_type"),
    ("no content type", solid((1, 2, 3)), "", 415, "unsupported_media_type"),
    ("malformed json", b"{not json", "application/json", 400, "invalid_request"),
    ("json without images", b'{"images": []}', "application/json", 400, "invalid_request"),
    ("bad base64", b'{"images": [{"data": "***"}]}', "application/json", 400, "invalid_request"),
    (
        "multipart without files",
        b"--x\r\nContent-Disposition: form-data; name=a\r\n\r\n1\r\n--x--\r\n",
        "multipart/form-data; boundary=x",
        400,
        "invalid_request",
    ),
]


@pytest.mark.parametrize(("case", "body", "ctype", "status", "code"), CASES, ids=[c[0] for c in CASES])
def test_bad_bodies(zoo_server: RunningServer, case: str, body: bytes, ctype: str, status: int, code: str) -> None:
    headers = {**zoo_server.headers, **({"Content-Type": ctype} if ctype else {})}
    r = httpx.post(f"{zoo_server.url}{PREDICT}", content=body, headers=headers)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert problem["code"] == code
    assert problem["status"] == status
    assert problem["title"]
    assert problem["request_id"] == r.headers["x-request-id"]


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/v1/models/nope:predict", 404, "model_not_found"),
        ("/v1/models/mobilenet-v2@9:predict", 404, "version_not_found"),
        ("/v1/models/mobilenet-v2:canary:predict", 404, "alias_not_found"),
        ("/v1/models/mobilenet-v2:predict?version=1&alias=production", 400, "invalid_request"),
        ("/v1/models/Bad%20Name:predict", 400, "invalid_request"),
        ("/v1/models/mobilenet-v2:predict?top_k=0", 400, "invalid_request"),
        ("/v1/nowhere", 404, "not_found"),
    ],
)
def test_bad_targets(zoo_server: RunningServer, photos: dict[str, bytes], path: str, status: int, code: str) -> None:
    r = httpx.post(
        f"{zoo_server.url}{path}",
        content=photos["chelsea"],
        headers={**zoo_server.headers, "Content-Type": "image/jpeg"},
    )
    assert r.status_code == status, r.text
    assert r.json()["code"] == code


def test_oversized_body_is_refused(zoo_home: object, serve: object, photos: dict[str, bytes]) -> None:
    from imaas.settings import ServerSettings, Settings

    settings = Settings(home=zoo_home, server=ServerSettings(max_body_bytes=10_000))  # type: ignore[arg-type]
    server = serve(settings)  # type: ignore[operator]
    jpeg = {**server.headers, "Content-Type": "image/jpeg"}
    r = httpx.post(f"{server.url}{PREDICT}", content=photos["chelsea"], headers=jpeg)
    assert r.status_code == 413
    assert r.json()["code"] == "payload_too_large"

    def chunks() -> object:
        for _ in range(20):
            yield b"\xff" * 1000

    r = httpx.post(f"{server.url}{PREDICT}", content=chunks(), headers=jpeg)
    assert r.status_code == 413
    assert r.json()["code"] == "payload_too_large"
    ok = httpx.post(
        f"{server.url}{PREDICT}",
        content=solid((9, 9, 9), size=(64, 64), fmt="JPEG"),
        headers=jpeg,
    )
    assert ok.status_code == 200


def test_server_still_serves_after_bad_input(zoo_server: RunningServer, photos: dict[str, bytes]) -> None:
    for _case, body, ctype, _status, _code in CASES:
        headers = {**zoo_server.headers, "Content-Type": ctype or "image/png"}
        httpx.post(f"{zoo_server.url}{PREDICT}", content=body, headers=headers)
    jpeg = {**zoo_server.headers, "Content-Type": "image/jpeg"}
    r = httpx.post(f"{zoo_server.url}{PREDICT}", content=photos["chelsea"], headers=jpeg)
    assert r.status_code == 200
