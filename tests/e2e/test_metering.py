"""Metering end to end: what each surface counts, what it costs, and what is never charged.

One server per module with a task price (classification: 2.50 per 1,000 images) and a
usage flush every 0.2 s. A flush writes everything recorded so far in one batch, so once a
prediction made afterwards by another key is visible in ``GET /v1/usage`` (``_flushed``),
everything before it is too, and the counts can be compared exactly.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from PIL import Image
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from imaas.settings import AuthSettings, MeteringSettings, Settings
from tests.conftest import RunningServer
from tests.factories import tiny_classifier

MODEL = "colors"
PRICE = Decimal("2.50")
FREE = 3


def noise_png(seed: int) -> bytes:
    """A PNG of random pixels, 32 to 48 pixels wide by seed (so their sizes in bytes differ)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (32, 32 + seed % 17, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


@dataclass
class Metered:
    server: RunningServer
    http: httpx.Client
    image_input: str

    def key(self, scopes: list[str], limits: dict[str, Any] | None = None) -> tuple[str, dict[str, str]]:
        body: dict[str, Any] = {"name": "metering", "scopes": scopes}
        if limits is not None:
            body["limits"] = limits
        r = self.http.post("/v1/keys", json=body, headers=self.server.headers)
        assert r.status_code == 201, r.text
        return r.json()["key"]["id"], {"authorization": f"Bearer {r.json()['secret']}"}

    def predict(self, headers: dict[str, str], image: bytes) -> httpx.Response:
        return self.http.post(
            f"/v1/models/{MODEL}:predict", content=image, headers={**headers, "content-type": "image/png"}
        )

    def usage(self, headers: dict[str, str], **params: str) -> httpx.Response:
        return self.http.get("/v1/usage", params=params, headers=headers)


@pytest.fixture(scope="module")
def metered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Metered]:
    root = tmp_path_factory.mktemp("metering")
    settings = Settings(
        home=root / "home",
        auth=AuthSettings(refresh_s=0.2),
        metering=MeteringSettings(flush_s=0.2, task_prices={"classification": PRICE}),
    )
    server = RunningServer(settings).start()
    http = httpx.Client(base_url=server.url, timeout=30)
    try:
        model = tiny_classifier(root / "tiny.onnx").read_bytes()
        r = http.post(
            f"/v1/models/{MODEL}/versions",
            files={"model": ("m.onnx", model)},
            data={"manifest": "labels: [a, b, c, d]\n"},
            headers=server.headers,
        )
        assert r.status_code == 201, r.text
        md = http.get(f"/v2/models/{MODEL}", headers=server.headers).json()
        image_input = next(i["name"] for i in md["inputs"] if i["datatype"] == "BYTES")
        yield Metered(server, http, image_input)
    finally:
        http.close()
        server.stop()


def _flushed(m: Metered, timeout: float = 15.0) -> None:
    """Return once everything recorded before this call is in the registry (see the module docstring)."""
    key_id, headers = m.key(["infer"])
    assert m.predict(headers, noise_png(999)).status_code == 200
    deadline = time.monotonic() + timeout
    while not m.usage(headers).json()["rows"]:
        if time.monotonic() > deadline:
            raise AssertionError(f"the sentinel key {key_id}'s usage was not written within {timeout} s")
        time.sleep(0.05)


def _oip_body(name: str, images: list[bytes]) -> tuple[bytes, dict[str, str]]:
    """An OIP REST request with the images as a binary BYTES tensor (as tritonclient sends it)."""
    raw = b"".join(struct.pack("<I", len(b)) + b for b in images)
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": name,
                    "datatype": "BYTES",
                    "shape": [len(images)],
                    "parameters": {"binary_data_size": len(raw)},
                }
            ]
        }
    ).encode()
    headers = {"content-type": "application/octet-stream", "inference-header-content-length": str(len(head))}
    return head + raw, headers


def _grpc_request(name: str, images: list[bytes]) -> Any:
    """A ModelInfer request with the images in raw_input_contents (as tritonclient sends BYTES)."""
    tensor = pb.ModelInferRequest.InferInputTensor(name=name, datatype="BYTES", shape=[len(images)])
    raw = b"".join(struct.pack("<I", len(b)) + b for b in images)
    return pb.ModelInferRequest(model_name=MODEL, inputs=[tensor], raw_input_contents=[raw])


def test_every_surface_is_metered_and_priced(metered: Metered) -> None:
    m = metered
    key_id, headers = m.key(["infer"], {"free_images_per_month": FREE})
    images = [noise_png(i) for i in range(10)]
    assert len({len(b) for b in images}) > 1  # sizes differ: a wrong sum cannot match by chance
    rest_bytes = 0

    r = m.predict(headers, images[0])  # raw body: 1 image
    assert r.status_code == 200, r.text
    rest_bytes += len(images[0])

    files = [("file", (f"{i}.png", images[i], "image/png")) for i in (1, 2)]  # multipart: 2 images
    r = m.http.post(f"/v1/models/{MODEL}:predict", files=files, headers=headers)
    assert r.status_code == 200, r.text
    assert len(r.json()["results"]) == 2
    rest_bytes += len(images[1]) + len(images[2])

    body = {"images": [{"data": base64.b64encode(images[i]).decode()} for i in (3, 4)]}  # JSON: 2 images
    r = m.http.post(f"/v1/models/{MODEL}:predict", json=body, headers=headers)
    assert r.status_code == 200, r.text
    assert len(r.json()["results"]) == 2
    rest_bytes += len(images[3]) + len(images[4])

    oip, oip_headers = _oip_body(m.image_input, images[5:8])  # OIP REST: a batch of 3
    r = m.http.post(f"/v2/models/{MODEL}/infer", content=oip, headers={**headers, **oip_headers})
    assert r.status_code == 200, r.text

    request = _grpc_request(m.image_input, images[8:10])  # gRPC: a batch of 2
    with grpc.insecure_channel(f"127.0.0.1:{m.server.grpc_port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        answer = stub.ModelInfer(request, metadata=(("authorization", headers["authorization"]),), timeout=30)
    assert list(answer.outputs[0].shape) == [2, 4]
    today = datetime.now(UTC).date().isoformat()

    _flushed(m)
    report = m.usage(headers).json()
    images_sent, requests_sent = 1 + 2 + 2 + 3 + 2, 5
    # REST counts the image bytes; OIP REST the request body; gRPC the request message
    bytes_in = rest_bytes + len(oip) + request.ByteSize()
    billable = images_sent - FREE
    cost = Decimal(billable) * PRICE / 1000
    assert len(report["rows"]) == 1, report
    row = report["rows"][0]
    assert row["compute_ms"] > 0
    assert {k: v for k, v in row.items() if k != "compute_ms"} == {
        "key_id": key_id,
        "model": MODEL,
        "version": 1,
        "task": "classification",
        "day": today,
        "requests": requests_sent,
        "images": images_sent,
        "bytes_in": bytes_in,
        "free_images": FREE,
        "billable_images": billable,
        "price_per_1000": "2.5",
        "cost": "0.0175",
    }
    assert Decimal(row["cost"]) == cost
    assert report["total"] == {
        "requests": requests_sent,
        "images": images_sent,
        "billable_images": billable,
        "cost": "0.0175",
    }


def test_failed_predictions_are_not_metered_and_use_no_quota(metered: Metered) -> None:
    m = metered
    key_id, headers = m.key(["infer"], {"images_per_day": 5})
    corrupt = noise_png(50)[:60]  # a PNG cut inside its image data
    bad = m.predict(headers, corrupt)
    assert (bad.status_code, bad.json()["code"]) == (422, "invalid_image"), bad.text
    good = [m.predict(headers, noise_png(60 + i)) for i in range(5)]
    assert [r.status_code for r in good] == [200] * 5, [r.text for r in good]
    assert good[-1].headers["ratelimit-policy"] == '"day";q=5;w=86400'
    assert good[-1].headers["ratelimit"].startswith('"day";r=0;')
    refused = m.predict(headers, noise_png(70))
    assert refused.status_code == 429, refused.text
    assert refused.json()["code"] == "quota_exceeded"
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["ratelimit-policy"] == '"day";q=5;w=86400'
    assert refused.headers["ratelimit"].startswith('"day";r=0;t=')
    # over OIP and gRPC alike
    oip, oip_headers = _oip_body(m.image_input, [noise_png(71)])
    r = m.http.post(f"/v2/models/{MODEL}/infer", content=oip, headers={**headers, **oip_headers})
    assert r.status_code == 429
    assert "quota" in r.json()["error"]
    with grpc.insecure_channel(f"127.0.0.1:{m.server.grpc_port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as exc:
            stub.ModelInfer(
                _grpc_request(m.image_input, [noise_png(72)]),
                metadata=(("authorization", headers["authorization"]),),
                timeout=30,
            )
    assert exc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

    _flushed(m)
    rows = m.usage(headers).json()["rows"]
    assert [(r["key_id"], r["requests"], r["images"]) for r in rows] == [(key_id, 5, 5)]


def test_usage_of_others_needs_usage_read(metered: Metered) -> None:
    m = metered
    a_id, a = m.key(["infer"])
    b_id, b = m.key(["infer"])
    _, reader = m.key(["usage:read"])
    for headers, seed in ((a, 80), (b, 81), (b, 82)):
        assert m.predict(headers, noise_png(seed)).status_code == 200
    _flushed(m)

    own = m.usage(a).json()["rows"]
    assert [(r["key_id"], r["requests"]) for r in own] == [(a_id, 1)]
    assert m.usage(a, key_id=a_id).json()["rows"] == own
    other = m.usage(a, key_id=b_id)
    assert other.status_code == 403
    assert other.json()["code"] == "insufficient_scope"

    for headers in (m.server.headers, reader):
        everyone = m.usage(headers).json()["rows"]
        seen = {r["key_id"]: r["requests"] for r in everyone}
        assert (seen[a_id], seen[b_id]) == (1, 2)
        only_b = m.usage(headers, key_id=b_id).json()["rows"]
        assert [(r["key_id"], r["requests"]) for r in only_b] == [(b_id, 2)]
