"""No secret and no image leaves the request: not into the logs, not onto the disk.

A server runs with the ``imaas``, ``uvicorn`` (access log on), ``grpc``, multipart and
SQLAlchemy engine loggers at DEBUG (SQL statements included), everything captured by a
handler on the root logger, plus whatever reaches stdout and stderr. It is driven through key
creation, rotation and revocation, predictions with images as a raw body, multipart, base64
JSON, OIP REST and gRPC, and bad requests (unknown, malformed and revoked keys, corrupt
images, broken base64, an absent model). Then no captured line may hold a key or its secret,
an image's base64, or any 32 bytes of an image (read as latin-1), and no file under the home
may hold 32 bytes of an image: request images are never stored.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import uvicorn
from PIL import Image
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from imaas.settings import Settings
from tests.conftest import RunningServer
from tests.factories import tiny_classifier

WINDOW = 32
MODEL = "colors"
# the server's loggers, turned up to DEBUG; the test's own HTTP client (httpx, httpcore) is not the server
DEBUG_LOGGERS = (
    *("imaas", "uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi", "grpc"),
    *("multipart", "python_multipart", "sqlalchemy.engine", "fastapi", "starlette"),
)
CLIENT_LOGGERS = ("httpx", "httpcore")


class LoggedServer(RunningServer):
    """``RunningServer`` with uvicorn at DEBUG, its access log on and no logging config of its own
    (its records propagate to the root logger, where the test's handler is)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        config = uvicorn.Config(
            self.app, log_level="debug", access_log=True, log_config=None, lifespan="on", timeout_graceful_shutdown=5
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._sock]}, daemon=True)


class Capture(logging.Handler):
    """Every record, formatted with its logger name and any traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.split(".")[0] in CLIENT_LOGGERS:
            return
        self.lines.append(self.format(record))


@pytest.fixture
def capture() -> Iterator[Capture]:
    """The handler on the root logger, and the server loggers at DEBUG, restored afterwards."""
    handler = Capture()
    root = logging.getLogger()
    saved: list[tuple[logging.Logger, int, bool]] = []
    for name in DEBUG_LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level, logger.propagate))
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        for logger, level, propagate in saved:
            logger.setLevel(level)
            logger.propagate = propagate


def _turn_up() -> None:
    # after uvicorn.Config, which sets its own levels (and earlier servers' dictConfig cut propagation)
    for name in DEBUG_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(logging.DEBUG)
        logger.propagate = True


def noise_png(seed: int) -> bytes:
    """A PNG of random pixels: every 32-byte window of it is its own."""
    pixels = np.random.default_rng(seed).integers(0, 256, (40, 40 + seed % 9, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def _windows(text: str) -> set[str]:
    return {text[i : i + WINDOW] for i in range(len(text) - WINDOW + 1)}


def _found(haystack: str, needles: set[str]) -> list[int]:
    """Offsets in ``haystack`` where a 32-character window of a needle starts."""
    return [i for i in range(len(haystack) - WINDOW + 1) if haystack[i : i + WINDOW] in needles]


def _oip(name: str, images: list[bytes]) -> tuple[bytes, dict[str, str]]:
    raw = b"".join(struct.pack("<I", len(b)) + b for b in images)
    tensor = {"name": name, "datatype": "BYTES", "shape": [len(images)], "parameters": {"binary_data_size": len(raw)}}
    head = json.dumps({"inputs": [tensor]}).encode()
    return head + raw, {"content-type": "application/octet-stream", "inference-header-content-length": str(len(head))}


def _grpc(stub: Any, key: str, name: str, images: list[bytes]) -> grpc.StatusCode:
    tensor = pb.ModelInferRequest.InferInputTensor(name=name, datatype="BYTES", shape=[len(images)])
    tensor.contents.bytes_contents.extend(images)
    try:
        stub.ModelInfer(
            pb.ModelInferRequest(model_name=MODEL, inputs=[tensor]), metadata=(("authorization", key),), timeout=30
        )
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def test_no_key_and_no_image_in_logs_or_on_disk(
    tmp_path: Path, capture: Capture, capfd: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    server = LoggedServer(Settings(home=home))
    _turn_up()
    server.start()
    images: list[bytes] = []
    keys: list[str] = []

    def image() -> bytes:
        images.append(noise_png(len(images)))
        return images[-1]

    try:
        http = httpx.Client(base_url=server.url, timeout=30)
        admin = server.headers
        keys.append(server.key)
        model = tiny_classifier(tmp_path / "tiny.onnx").read_bytes()
        r = http.post(
            f"/v1/models/{MODEL}/versions",
            files={"model": ("m.onnx", model)},
            data={"manifest": "labels: [a, b, c, d]\n"},
            headers=admin,
        )
        assert r.status_code == 201, r.text

        def make_key(scopes: list[str]) -> tuple[str, str]:
            r = http.post("/v1/keys", json={"name": "privacy", "scopes": scopes}, headers=admin)
            assert r.status_code == 201, r.text
            keys.append(r.json()["secret"])
            return r.json()["key"]["id"], r.json()["secret"]

        _, user = make_key(["infer"])
        revoked_id, revoked = make_key(["infer"])
        rotated_id, _ = make_key(["infer"])
        r = http.post(f"/v1/keys/{rotated_id}/rotate", json={"grace_s": 0}, headers=admin)
        assert r.status_code == 201, r.text
        keys.append(r.json()["secret"])
        assert http.delete(f"/v1/keys/{revoked_id}", headers=admin).status_code == 200
        unknown = f"imaas_{'a' * 12}_{base64.urlsafe_b64encode(b'x' * 32).decode().rstrip('=')}"
        wrong_secret = f"imaas_{user.split('_', 2)[1]}_{'Z' * 43}"
        malformed = "not-a-key-" + base64.urlsafe_b64encode(b"malformed credentials").decode()
        keys += [unknown, wrong_secret, malformed]
        auth = {"authorization": f"Bearer {user}"}
        md = http.get(f"/v2/models/{MODEL}", headers=admin).json()
        name = next(i["name"] for i in md["inputs"] if i["datatype"] == "BYTES")
        png = {"content-type": "image/png"}

        def predict(headers: dict[str, str], **body: Any) -> int:
            return http.post(f"/v1/models/{MODEL}:predict", headers=headers, **body).status_code

        def multipart(*ims: bytes) -> dict[str, Any]:
            return {"files": [("file", (f"{i}.png", im, "image/png")) for i, im in enumerate(ims)]}

        def as_json(*ims: bytes) -> dict[str, Any]:
            return {"json": {"images": [{"data": base64.b64encode(im).decode()} for im in ims]}}

        # good requests on every surface
        assert predict(auth | png, content=image()) == 200
        assert predict(auth, **multipart(image(), image())) == 200
        assert predict(auth, **as_json(image(), image())) == 200
        body, headers = _oip(name, [image(), image()])
        assert http.post(f"/v2/models/{MODEL}/infer", content=body, headers=auth | headers).status_code == 200
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            assert _grpc(stub, f"Bearer {user}", name, [image(), image()]) == grpc.StatusCode.OK
            # bad credentials and bad images
            for bad in (unknown, wrong_secret, revoked, malformed):
                assert _grpc(stub, f"Bearer {bad}", name, [image()]) == grpc.StatusCode.UNAUTHENTICATED
            assert _grpc(stub, f"Bearer {user}", name, [image()[:200]]) != grpc.StatusCode.OK
        for bad in (unknown, wrong_secret, revoked, malformed):
            h = {"authorization": f"Bearer {bad}"}
            assert predict(h | png, content=image()) == 401
            assert predict(h, **as_json(image())) == 401
            body, headers = _oip(name, [image()])
            assert http.post(f"/v2/models/{MODEL}/infer", content=body, headers=h | headers).status_code == 401
        assert predict({"authorization": user} | png, content=image()) == 401  # no "Bearer": malformed
        corrupt = image()[:300]
        assert predict(auth | png, content=corrupt) == 422
        assert predict(auth, **multipart(image()[:300])) == 422
        assert predict(auth, **as_json(image()[:300])) == 422
        broken = {"images": [{"data": base64.b64encode(image()).decode()[:-3] + "!!="}]}
        assert predict(auth, json=broken) == 400
        assert predict(auth, json={"images": [{"data": base64.b64encode(image()).decode()}], "top_k": "all"}) == 400
        body, headers = _oip(name, [image()[:300]])
        assert http.post(f"/v2/models/{MODEL}/infer", content=body, headers=auth | headers).status_code in (400, 422)
        missing = http.post("/v1/models/absent:predict", content=image(), headers=auth | png)
        assert missing.status_code == 404
        http.close()
    finally:
        server.stop()  # flushes usage and closes the registry: everything it writes is written

    out, err = capfd.readouterr()
    logged = "\n".join(capture.lines) + "\n" + out + "\n" + err
    assert any("uvicorn.access" in line for line in capture.lines), "the access log was not captured"
    assert any(line.startswith("imaas") for line in capture.lines), "no imaas log line was captured"

    secrets = keys + [k.split("_", 2)[2] for k in keys if k.startswith("imaas_")]
    admin_key = {server.key, server.key.split("_", 2)[2]}
    for secret in secrets:
        assert secret not in logged, "a key or its secret was logged"
    encoded = [base64.b64encode(im).decode() for im in images]
    for text in encoded:
        assert text not in logged, "an image's base64 was logged"
    needles = set().union(*(_windows(im.decode("latin-1")) for im in images))
    needles |= set().union(*(_windows(t) for t in encoded + secrets))
    hits = _found(logged, needles)
    assert not hits, f"32 characters of an image or a secret in the logs: {logged[hits[0] - 40 : hits[0] + 72]!r}"

    stored = [p for p in home.rglob("*") if p.is_file()]
    assert any(p.name.startswith("registry.db") for p in stored)
    image_windows = set().union(*(_windows(im.decode("latin-1")) for im in images))
    for path in stored:
        data = path.read_bytes().decode("latin-1")
        hits = _found(data, image_windows)
        assert not hits, f"{path.relative_to(home)} holds image bytes at offset {hits[0]}"
        for secret in secrets:  # only hashes of keys are stored; the admin key file holds the admin key
            if secret in admin_key and path == server.settings.admin_key_file:
                continue
            assert secret not in data, f"{path.relative_to(home)} holds a key's text"
