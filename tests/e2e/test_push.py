"""Pushing ONNX models over HTTP: validation, idempotency, serving what was pushed."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from imaas.settings import Settings
from tests.conftest import RunningServer
from tests.factories import solid, tiny_classifier

LABELS = ["red", "blue", "green", "grey"]


@pytest.fixture
def server(tmp_path: Path, serve: Callable[..., RunningServer]) -> RunningServer:
    return serve(Settings(home=tmp_path / "home"))


def _push(server: RunningServer, name: str, model: bytes, manifest: str | None = None, **form: str) -> httpx.Response:
    data = dict(form)
    if manifest is not None:
        data["manifest"] = manifest
    return httpx.post(
        f"{server.url}/v1/models/{name}/versions",
        files={"model": ("m.onnx", model)},
        data=data,
        headers=server.headers,
        timeout=60,  # six concurrent pushes each warm a version before answering: seconds on a loaded machine
    )


def test_push_then_predict(server: RunningServer, tmp_path: Path) -> None:
    model = tiny_classifier(tmp_path / "t.onnx").read_bytes()
    manifest = "task: classification\nlabels: [red, blue, green, grey]\npreprocess: {resize: exact}\n"
    r = _push(server, "colors", model, manifest)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["version"] == 1
    assert body["aliases"] == ["production"]
    assert body["manifest"]["input"] == {
        "name": "input",
        "layout": "NCHW",
        "size": [32, 32],
        "color": "RGB",
        "dtype": "float32",
        "batch": None,
    }
    red = httpx.post(
        f"{server.url}/v1/models/colors:predict",
        content=solid((250, 10, 10)),
        headers={**server.headers, "Content-Type": "image/png"},
    ).json()
    blue = httpx.post(
        f"{server.url}/v1/models/colors:predict",
        content=solid((10, 10, 250)),
        headers={**server.headers, "Content-Type": "image/png"},
    ).json()
    assert red["results"][0]["predictions"][0]["label"] == "red"
    assert blue["results"][0]["predictions"][0]["label"] == "blue"
    assert len(red["results"][0]["predictions"]) == 4  # default top_k clamped to the class count


def test_duplicate_push_is_idempotent(server: RunningServer, tmp_path: Path) -> None:
    model = tiny_classifier(tmp_path / "t.onnx").read_bytes()
    first = _push(server, "dup", model, json.dumps({"labels": LABELS}))
    second = _push(server, "dup", model, json.dumps({"labels": LABELS}))
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["version"] == second.json()["version"] == 1
    artifacts = [p for p in (server.settings.artifacts_dir).rglob("*") if p.is_file()]
    assert len(artifacts) == 1
    assert len(httpx.get(f"{server.url}/v1/models/dup", headers=server.headers).json()["versions"]) == 1


def test_new_version_and_alias_promotion(server: RunningServer, tmp_path: Path) -> None:
    v1 = tiny_classifier(tmp_path / "a.onnx", seed=1).read_bytes()
    v2 = tiny_classifier(tmp_path / "b.onnx", seed=2).read_bytes()
    assert _push(server, "m", v1).status_code == 201
    r = _push(server, "m", v2, alias="staging")
    assert r.json()["version"] == 2
    assert r.json()["aliases"] == ["staging"]
    img = {"content": solid((5, 5, 5)), "headers": {**server.headers, "Content-Type": "image/png"}}
    assert httpx.post(f"{server.url}/v1/models/m:predict", **img).json()["version"] == 1
    assert httpx.post(f"{server.url}/v1/models/m:staging:predict", **img).json()["version"] == 2
    moved = httpx.put(f"{server.url}/v1/models/m/aliases/production", json={"version": 2}, headers=server.headers)
    assert moved.status_code == 200, moved.text
    assert httpx.post(f"{server.url}/v1/models/m:predict", **img).json()["version"] == 2


@pytest.mark.parametrize(
    ("manifest", "code", "field"),
    [
        ("input: {size: [224, 224]}", "invalid_manifest", "input.size"),
        ('{"labels": ["only", "two"]}', "invalid_manifest", "labels"),
        ("input: {dtype: uint8}", "invalid_manifest", "input.dtype"),
        ("task: [unclosed", "invalid_manifest", ""),
        ("task: ocr", "invalid_manifest", "task"),
    ],
)
def test_manifest_contradicting_the_graph(
    server: RunningServer, tmp_path: Path, manifest: str, code: str, field: str
) -> None:
    model = tiny_classifier(tmp_path / "t.onnx").read_bytes()
    r = _push(server, "bad", model, manifest)
    assert r.status_code == 422, r.text
    assert r.json()["code"] == code
    assert r.json()["detail"].startswith(field)
    assert not [p for p in server.settings.artifacts_dir.rglob("*") if p.is_file()]  # nothing kept
    assert httpx.get(f"{server.url}/v1/models/bad", headers=server.headers).status_code == 404


def test_not_onnx_is_refused(server: RunningServer) -> None:
    r = _push(server, "junk", b"MZ\x90\x00 this is an executable, not a model" * 50)
    assert r.status_code == 422
    assert r.json()["code"] == "invalid_model"


def test_bad_names_and_missing_file(server: RunningServer, tmp_path: Path) -> None:
    model = tiny_classifier(tmp_path / "t.onnx").read_bytes()
    assert _push(server, "Bad..Name", model).json()["code"] == "invalid_request"
    r = httpx.post(f"{server.url}/v1/models/x/versions", data={"manifest": "{}"}, headers=server.headers)
    assert r.status_code == 400
    assert r.json()["code"] == "invalid_request"


def test_upload_limit(tmp_path: Path, serve: Callable[..., RunningServer]) -> None:
    from imaas.settings import ServerSettings

    server = serve(Settings(home=tmp_path / "h", server=ServerSettings(max_upload_bytes=2000)))
    big = tiny_classifier(tmp_path / "t.onnx", classes=200).read_bytes()
    assert len(big) > 2000
    r = _push(server, "big", big)
    assert r.status_code == 413
    assert r.json()["code"] == "payload_too_large"


def test_concurrent_pushes_of_one_new_model_over_http(server: RunningServer, tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    files = [tiny_classifier(tmp_path / f"m{i}.onnx", seed=i).read_bytes() for i in range(6)]
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda f: _push(server, "race", f, "labels: [a, b, c, d]", alias="staging"), files))
    assert [r.status_code for r in answers] == [201] * 6, [r.text for r in answers if r.status_code != 201]
    assert sorted(r.json()["version"] for r in answers) == [1, 2, 3, 4, 5, 6]
    model = httpx.get(f"{server.url}/v1/models/race", headers=server.headers).json()
    assert model["latest_version"] == 6
    assert model["aliases"]["production"] in range(1, 7)
    assert model["aliases"]["staging"] in range(1, 7)
    served = httpx.post(
        f"{server.url}/v1/models/race:predict",
        content=solid((250, 0, 0)),
        headers={**server.headers, "Content-Type": "image/png"},
    )
    assert served.status_code == 200, served.text


def test_a_graph_onnx_runtime_cannot_run_is_refused_at_push(server: RunningServer, tmp_path: Path) -> None:
    from tests.factories import runtime_refuses

    r = _push(server, "refused", runtime_refuses(tmp_path / "r.onnx").read_bytes(), "labels: [a, b, c]")
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "invalid_model"
    assert "ONNX Runtime cannot load the model" in r.json()["detail"]
    assert str(tmp_path) not in r.text
    assert httpx.get(f"{server.url}/v1/models/refused", headers=server.headers).status_code == 404  # nothing registered


def test_a_graph_that_runs_one_image_at_a_time_is_served_one_at_a_time(server: RunningServer, tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from tests.factories import batch_of_one_inside

    pushed = _push(server, "single", batch_of_one_inside(tmp_path / "s.onnx").read_bytes(), "labels: [a, b, c, d]")
    assert pushed.status_code == 201, pushed.text
    assert pushed.json()["manifest"]["input"]["batch"] == 1  # found by running it, though the graph says dynamic
    colours = [(250, 0, 0), (0, 0, 250)] * 8
    with ThreadPoolExecutor(16) as pool:
        answers = list(
            pool.map(
                lambda c: httpx.post(
                    f"{server.url}/v1/models/single:predict",
                    content=solid(c, size=(32, 32)),
                    headers={**server.headers, "Content-Type": "image/png"},
                    timeout=30,
                ),
                colours,
            )
        )
    assert [r.status_code for r in answers] == [200] * 16
    # class 0 likes red and class 1 blue: each answer is its own image's, none mixed up
    assert [r.json()["results"][0]["predictions"][0]["label"] for r in answers] == ["a", "b"] * 8
