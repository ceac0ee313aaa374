"""The real server over HTTP with the real bundled models and real photos."""

from __future__ import annotations

import base64

import httpx
import pytest

from imaas.client import Client
from tests.conftest import RunningServer


def jpeg(server: RunningServer) -> dict[str, str]:
    """Headers of a raw JPEG predict call with the server's key."""
    return {**server.headers, "Content-Type": "image/jpeg"}


CATS = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE = {967, 968, 504}  # espresso, cup, coffee mug
ROCKET = {657, 744, 812}  # missile, projectile, space shuttle


@pytest.mark.parametrize("model", ["mobilenet-v2", "efficientnet-lite0"])
def test_a_cat_photo_is_a_cat(zoo_server: RunningServer, photos: dict[str, bytes], model: str) -> None:
    r = httpx.post(f"{zoo_server.url}/v1/models/{model}:predict", content=photos["chelsea"], headers=jpeg(zoo_server))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == model
    assert body["version"] == 1
    top = body["results"][0]["predictions"]
    assert top[0]["index"] in CATS
    assert "cat" in top[0]["label"]
    assert len(top) == 5
    assert top[0]["score"] >= top[1]["score"]
    assert r.headers["x-request-id"]


def test_multipart_many_images_keep_their_order(zoo_server: RunningServer, photos: dict[str, bytes]) -> None:
    files = [("file", (f"{n}.jpg", photos[n], "image/jpeg")) for n in ["coffee", "chelsea", "rocket"]]
    r = httpx.post(f"{zoo_server.url}/v1/models/mobilenet-v2:predict?top_k=1", files=files, headers=zoo_server.headers)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["filename"] for x in results] == ["coffee.jpg", "chelsea.jpg", "rocket.jpg"]
    assert results[0]["predictions"][0]["index"] in COFFEE
    assert results[1]["predictions"][0]["index"] in CATS
    assert results[2]["predictions"][0]["index"] in ROCKET
    assert all(len(x["predictions"]) == 1 for x in results)


def test_json_base64(zoo_server: RunningServer, photos: dict[str, bytes]) -> None:
    body = {"images": [{"data": base64.b64encode(photos["chelsea"]).decode(), "filename": "c.jpg"}], "top_k": 2}
    r = httpx.post(f"{zoo_server.url}/v1/models/efficientnet-lite0:predict", json=body, headers=zoo_server.headers)
    assert r.status_code == 200, r.text
    preds = r.json()["results"][0]["predictions"]
    assert len(preds) == 2
    assert preds[0]["index"] in CATS


@pytest.mark.parametrize(
    "path",
    [
        "mobilenet-v2@1:predict",
        "mobilenet-v2:production:predict",
        "mobilenet-v2:predict?version=1",
        "mobilenet-v2:predict?alias=production",
    ],
)
def test_version_and_alias_selectors(zoo_server: RunningServer, photos: dict[str, bytes], path: str) -> None:
    r = httpx.post(f"{zoo_server.url}/v1/models/{path}", content=photos["chelsea"], headers=jpeg(zoo_server))
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 1


def test_concurrent_requests_all_succeed(zoo_server: RunningServer, photos: dict[str, bytes]) -> None:
    import asyncio

    async def run() -> list[int]:
        async with httpx.AsyncClient(base_url=zoo_server.url, timeout=60, headers=zoo_server.headers) as client:
            calls = [
                client.post(
                    "/v1/models/mobilenet-v2:predict", content=photos[n], headers={"Content-Type": "image/jpeg"}
                )
                for n in list(photos) * 10
            ]
            return [r.status_code for r in await asyncio.gather(*calls)]

    assert set(asyncio.run(run())) == {200}


def test_catalog(zoo_server: RunningServer) -> None:
    listed = httpx.get(f"{zoo_server.url}/v1/models", headers=zoo_server.headers).json()["models"]
    zoo = ["efficientnet-lite0", "faces", "mnist-cnn", "mobilenet-v2", "mobilenet-v2-embed", "nudenet"]
    assert [m["name"] for m in listed] == zoo
    assert {m["name"]: m["task"] for m in listed}["faces"] == "detection"
    assert listed[3]["aliases"] == {"production": 1}
    detail = httpx.get(f"{zoo_server.url}/v1/models/mobilenet-v2", headers=zoo_server.headers).json()
    v = detail["versions"][0]
    assert v["manifest"]["input"]["size"] == [224, 224]
    assert v["aliases"] == ["production"]
    assert len(v["sha256"]) == 64


@pytest.mark.parametrize("model", ["mobilenet-v2", "efficientnet-lite0"])
def test_served_scores_match_an_independent_pytorch_forward_pass(
    zoo_server: RunningServer, photos: dict[str, bytes], model: str
) -> None:
    """The served model computes what the PyTorch weights compute, not only what the installer checked.

    The photo is pre-processed here with plain NumPy and Pillow from the manifest's numbers
    (resize the shorter side, centre crop, scale, mean, std), run through the PyTorch module
    the recipe builds from the weights package, and compared with the served probabilities.
    """
    import io

    import numpy as np
    import torch
    from PIL import Image

    from imaas.zoo.recipes import recipes

    recipe = next(r for r in recipes() if r.name == model)
    manifest = httpx.get(f"{zoo_server.url}/v1/models/{model}", headers=zoo_server.headers).json()
    manifest = manifest["versions"][0]["manifest"]
    pre, (h, w) = manifest["preprocess"], manifest["input"]["size"]
    img = Image.open(io.BytesIO(photos["chelsea"])).convert("RGB")
    scale = pre["resize_to"] / min(img.size)
    img = img.resize((round(img.size[0] * scale), round(img.size[1] * scale)), Image.Resampling.BILINEAR)
    left, top = (img.size[0] - w) // 2, (img.size[1] - h) // 2
    pixels = np.asarray(img.crop((left, top, left + w, top + h)), dtype=np.float32) * pre["scale"]
    x = ((pixels - np.array(pre["mean"], dtype=np.float32)) / np.array(pre["std"], dtype=np.float32)).transpose(2, 0, 1)
    with torch.no_grad():
        expected = torch.softmax(recipe.build_module().eval()(torch.from_numpy(x[None].copy())), dim=1)[0].numpy()

    r = httpx.post(
        f"{zoo_server.url}/v1/models/{model}:predict?top_k=5",
        content=photos["chelsea"],
        headers=jpeg(zoo_server),
    )
    served = r.json()["results"][0]["predictions"]
    assert [p["index"] for p in served] == [int(i) for i in np.argsort(-expected)[:5]]
    # the server decodes the JPEG at reduced DCT scale, so pixels differ slightly from a full decode
    np.testing.assert_allclose([p["score"] for p in served], expected[[p["index"] for p in served]], atol=0.03)


def test_catalog_pages(zoo_server: RunningServer) -> None:
    with httpx.Client(base_url=zoo_server.url, headers=zoo_server.headers) as http:
        first = http.get("/v1/models", params={"limit": 1}).json()
        assert ([m["name"] for m in first["models"]], first["next"]) == (["efficientnet-lite0"], "efficientnet-lite0")
        second = http.get("/v1/models", params={"limit": 2, "after": first["next"]}).json()
        assert ([m["name"] for m in second["models"]], second["next"]) == (["faces", "mnist-cnn"], "mnist-cnn")
        third = http.get("/v1/models", params={"limit": 2, "after": second["next"]}).json()
        pair = ["mobilenet-v2", "mobilenet-v2-embed"]
        assert ([m["name"] for m in third["models"]], third["next"]) == (pair, "mobilenet-v2-embed")
        last = http.get("/v1/models", params={"limit": 2, "after": third["next"]}).json()
        assert ([m["name"] for m in last["models"]], last["next"]) == (["nudenet"], None)
        assert http.get("/v1/models").json()["next"] is None
        bad = http.get("/v1/models", params={"limit": 0})
    assert bad.status_code == 400
    assert bad.json()["code"] == "invalid_request"
    with Client(zoo_server.url, api_key=zoo_server.key) as c:
        page = c.list_models(limit=1, after="mnist-cnn")  # the page after mnist-cnn
    assert [m.name for m in page.models] == ["mobilenet-v2"]


def test_health_and_openapi(zoo_server: RunningServer) -> None:
    assert httpx.get(f"{zoo_server.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{zoo_server.url}/readyz", headers=zoo_server.headers).json()
    assert ready["status"] == "ready"
    assert ready["loaded"] == [
        "efficientnet-lite0@1",
        "faces@1",
        "mnist-cnn@1",
        "mobilenet-v2-embed@1",  # sorted as text: "-" before "@"
        "mobilenet-v2@1",
        "nudenet@1",
    ]
    spec = httpx.get(f"{zoo_server.url}/openapi.json").json()
    predict = spec["paths"]["/v1/models/{name}:predict"]["post"]
    assert "image/jpeg" in predict["requestBody"]["content"]
    assert "multipart/form-data" in predict["requestBody"]["content"]


def test_api_docs_work_offline(zoo_server: RunningServer) -> None:
    import re

    for page in ["/docs", "/redoc"]:
        html = httpx.get(f"{zoo_server.url}{page}").text
        assets = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert assets
        assert all(a.startswith("/") for a in assets), assets  # nothing from a CDN
        for asset in assets:
            assert httpx.get(f"{zoo_server.url}{asset}").status_code == 200, asset


def test_html_pages_carry_the_security_headers_and_json_answers_do_not_need_them(zoo_server: RunningServer) -> None:
    for page in ["/docs", "/redoc"]:
        r = httpx.get(f"{zoo_server.url}{page}")
        assert r.headers["content-type"].startswith("text/html")
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["referrer-policy"] == "no-referrer"
        csp = r.headers["content-security-policy"]
        assert "default-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp
    assert "content-security-policy" not in httpx.get(f"{zoo_server.url}/healthz").headers


def test_large_multipart_images_are_never_written_to_a_temporary_file(
    zoo_server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io
    import tempfile

    import numpy as np
    from PIL import Image

    rolled: list[int] = []
    original = tempfile.SpooledTemporaryFile.rollover

    def rollover(self: tempfile.SpooledTemporaryFile[bytes]) -> None:
        rolled.append(1)
        original(self)

    monkeypatch.setattr(tempfile.SpooledTemporaryFile, "rollover", rollover)
    noise = np.random.default_rng(0).integers(0, 256, (1000, 1000, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, format="PNG")
    assert len(buf.getvalue()) > 2 * 1024 * 1024  # past Starlette's 1 MiB spooling threshold
    r = httpx.post(
        f"{zoo_server.url}/v1/models/mobilenet-v2:predict",
        files={"file": ("noise.png", buf.getvalue(), "image/png")},
        headers=zoo_server.headers,
        timeout=60,
    )
    assert r.status_code == 200, r.text
    assert rolled == []  # the server is in this process: a spill to disk would have been seen
