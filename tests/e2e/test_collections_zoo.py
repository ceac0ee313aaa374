"""Similarity search with the bundled ``mobilenet-v2-embed`` (MobileNetV2's pooled features,
served from the classifier's own file) on scikit-image's sample photos.

A mirrored, cropped copy of a photo is the same scene to a person; its nearest neighbour
among the four photos must be that photo, by a clear margin (the four photos' pairwise
similarities are 0.41-0.54; the same photo mirrored scores above 0.8).
"""

from __future__ import annotations

import base64
import io

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from PIL import Image, ImageOps

from tests.conftest import RunningServer


def mirrored_crop(jpeg: bytes) -> bytes:
    img = ImageOps.mirror(Image.open(io.BytesIO(jpeg)).convert("RGB"))
    w, h = img.size
    buf = io.BytesIO()
    img.crop((w // 10, h // 10, w - w // 20, h - h // 20)).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def test_a_mirrored_crop_finds_its_photo(zoo_server: RunningServer, photos: dict[str, bytes]) -> None:
    headers = zoo_server.headers
    url = f"{zoo_server.url}/v1/collections"
    r = httpx.post(url, json={"name": "samples", "model": "mobilenet-v2-embed"}, headers=headers, timeout=60)
    assert r.status_code == 201, r.text
    assert r.json()["dimension"] == 1280
    try:
        items = [{"id": n, "image": base64.b64encode(b).decode()} for n, b in photos.items()]
        r = httpx.post(f"{url}/samples/items", json={"items": items}, headers=headers, timeout=60)
        assert r.status_code == 200, r.text
        for name, photo in photos.items():
            r = httpx.post(
                f"{url}/samples:search",
                content=mirrored_crop(photo),
                params={"k": len(photos)},
                headers={**headers, "content-type": "image/jpeg"},
                timeout=60,
            )
            assert r.status_code == 200, r.text
            best, second = r.json()["neighbours"][:2]
            assert best["id"] == name
            assert best["score"] > 0.8
            assert best["score"] - second["score"] > 0.2
    finally:
        httpx.delete(f"{url}/samples", headers=headers, timeout=60)


def test_oip_and_grpc_answer_the_same_unit_vectors_as_rest(zoo_server: RunningServer, photos: dict[str, bytes]) -> None:
    headers = zoo_server.headers
    rest = httpx.post(
        f"{zoo_server.url}/v1/models/mobilenet-v2-embed:predict",
        content=photos["chelsea"],
        headers={**headers, "content-type": "image/jpeg"},
        timeout=60,
    ).json()["results"][0]["embedding"]
    assert np.linalg.norm(rest) == pytest.approx(1.0, abs=1e-5)
    http = httpclient.InferenceServerClient(zoo_server.url.removeprefix("http://"))
    try:
        meta = http.get_model_metadata("mobilenet-v2-embed", headers=dict(headers))
        assert {"name": "embedding", "datatype": "FP32", "shape": [-1, -1]} in meta["outputs"]
        image = httpclient.InferInput("image", [1], "BYTES")
        image.set_data_from_numpy(np.array([photos["chelsea"]], dtype=object))
        out = http.infer(
            "mobilenet-v2-embed", [image], outputs=[httpclient.InferRequestedOutput("embedding")], headers=dict(headers)
        )
    finally:
        http.close()
    assert out.as_numpy("embedding").shape == (1, 1280)
    assert np.allclose(out.as_numpy("embedding")[0], rest, atol=1e-6)
    grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{zoo_server.grpc_port}")
    try:
        image = grpcclient.InferInput("image", [1], "BYTES")
        image.set_data_from_numpy(np.array([photos["chelsea"]], dtype=object))
        got = grpc.infer(
            "mobilenet-v2-embed", [image], outputs=[grpcclient.InferRequestedOutput("embedding")], headers=dict(headers)
        )
    finally:
        grpc.close()
    assert np.allclose(got.as_numpy("embedding")[0], rest, atol=1e-6)
