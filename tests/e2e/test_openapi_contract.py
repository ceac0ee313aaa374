"""The OpenAPI description at /openapi.json is exact: what it promises, the live server does.

The contract test runs schemathesis (every check) against a real server over the zoo;
settings in ``schemathesis.toml``, the rules OpenAPI cannot state in ``schemathesis_hooks.py``.
The other tests pin the description's structure and the server bugs the contract test found.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from imaas.domain import MAX_VERSION
from imaas.settings import ServerSettings, Settings
from tests.conftest import RunningServer
from tests.factories import tiny_classifier

HERE = Path(__file__).parent
SCHEMATHESIS = Path(sys.executable).with_name("st")
MAX_EXAMPLES = 20  # per operation and phase: about 20 s on 2 cores


@pytest.mark.slow
def test_the_live_server_keeps_every_promise_of_its_description(
    home_copy: Path, serve: Callable[..., RunningServer], tmp_path: Path
) -> None:
    """Every phase (examples, coverage, fuzzing, stateful) and every check schemathesis has.

    Among them: no 5xx, only documented statuses, content types, headers and bodies,
    schema-invalid requests refused, schema-valid ones accepted (up to the documented
    answers in schemathesis.toml), 405 with a true ``Allow`` for undocumented methods.
    """
    server = serve(Settings(home=home_copy))  # a private registry: the run pushes, moves aliases, unloads
    command = [
        str(SCHEMATHESIS),
        "--config-file",
        str(HERE / "schemathesis.toml"),
        "--no-color",
        "run",
        f"{server.url}/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--workers",
        "1",
        "--header",  # authenticated as the admin key (every scope); schemathesis masks it in its report
        f"Authorization: Bearer {server.key}",
    ]
    decoy = httpx.post(  # takes the run's revokes and rotations of its own key (schemathesis_hooks.py)
        f"{server.url}/v1/keys",
        json={"name": "contract-decoy", "scopes": ["infer", "keys:admin", "models:read", "models:write", "usage:read"]},
        headers=server.headers,
    )
    assert decoy.status_code == 201, decoy.text
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": str(HERE / "schemathesis_hooks.py"),
        "IMAAS_CONTRACT_KEY_ID": server.key.split("_")[1],
        "IMAAS_CONTRACT_DECOY_KEY_ID": decoy.json()["key"]["id"],
    }
    run = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240, check=False)
    report = run.stdout + run.stderr
    assert run.returncode == 0, report[-30_000:]
    selected = re.search(r"Selected: (\d+)/(\d+)\s+Tested: (\d+)", report)
    assert selected is not None, report[-3000:]
    assert selected.group(2) == selected.group(3), report[-3000:]  # every operation was reached


# -- the description's structure --------------------------------------------------------------


@pytest.fixture
def server(tmp_path: Path, serve: Callable[..., RunningServer]) -> RunningServer:
    """A server with one tiny model (no zoo) and a 100 kB body limit."""
    settings = Settings(home=tmp_path / "home", server=ServerSettings(max_body_bytes=100_000))
    running = serve(settings)
    model = tiny_classifier(tmp_path / "tiny.onnx").read_bytes()
    r = httpx.post(
        f"{running.url}/v1/models/tiny/versions", files={"model": ("tiny.onnx", model)}, headers=running.headers
    )
    assert r.status_code == 201, r.text
    return running


@pytest.fixture
def spec(server: RunningServer) -> dict[str, Any]:
    r = httpx.get(f"{server.url}/openapi.json")
    assert r.status_code == 200
    doc: dict[str, Any] = r.json()
    return doc


def _operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            yield path, method.upper(), operation


def test_every_reference_resolves(spec: dict[str, Any]) -> None:
    refs = set(re.findall(r'"\$ref":\s*"([^"]+)"', json.dumps(spec)))
    assert refs
    schemas = spec["components"]["schemas"]
    assert {r for r in refs if not r.startswith("#/components/schemas/")} == set()
    assert {r for r in refs if r.removeprefix("#/components/schemas/") not in schemas} == set()
    assert "HTTPValidationError" not in schemas  # FastAPI's 422: this server answers 400 invalid_request
    predict = spec["paths"]["/v1/models/{name}:predict"]["post"]["requestBody"]["content"]
    assert predict["application/json"]["schema"] == {"$ref": "#/components/schemas/PredictRequest"}
    assert schemas["PredictRequest"]["properties"]["images"]["maxItems"] == 64


def test_every_response_is_documented_with_its_headers(spec: dict[str, Any]) -> None:
    for path, method, operation in _operations(spec):
        responses = operation["responses"]
        assert "422" not in responses or path.startswith("/v1"), (method, path)  # /v2 folds 422 into 400
        assert "413" in responses, (method, path)  # the body limit applies before routing
        for status, response in responses.items():
            assert "X-Request-ID" in response["headers"], (method, path, status)
            if status in ("429", "503") and path != "/readyz":
                assert response["headers"]["Retry-After"]["required"], (method, path, status)
            if int(status) >= 400 and path != "/readyz":  # /readyz answers 503 with its readiness body
                (media_type,) = response["content"]
                assert media_type == ("application/json" if path.startswith("/v2") else "application/problem+json")


def test_path_parameters_carry_what_the_server_enforces(spec: dict[str, Any]) -> None:
    for path, method, operation in _operations(spec):
        for param in operation.get("parameters", []):
            if param["in"] == "path":
                schema = param["schema"]
                assert "pattern" in schema or schema["type"] == "integer", (method, path, param["name"])
    (name,) = spec["paths"]["/v1/models/{name}:predict"]["post"]["parameters"][:1]
    pattern = re.compile(name["schema"]["pattern"])
    for good in ("mobilenet-v2", "m@3", "m:staging"):
        assert pattern.fullmatch(good), good
    for bad in ("M", "m@0", "m@", "m:Prod", "m@1:a", "-m"):
        assert not pattern.fullmatch(bad), bad


# -- the server bugs the contract test found --------------------------------------------------


def test_a_name_with_a_trailing_newline_is_refused(server: RunningServer, tmp_path: Path) -> None:
    model = tiny_classifier(tmp_path / "t.onnx").read_bytes()
    r = httpx.post(
        f"{server.url}/v1/models/fresh%0A/versions", files={"model": ("t.onnx", model)}, headers=server.headers
    )
    assert r.status_code == 400, r.text  # it used to register a model named "fresh\n"
    assert r.json()["code"] == "invalid_request"
    r = httpx.put(f"{server.url}/v1/models/tiny/aliases/staging%0A", json={"version": 1}, headers=server.headers)
    assert r.status_code == 400, r.text


@pytest.mark.parametrize("version", [MAX_VERSION + 1, 10**40])
def test_versions_past_the_json_safe_range_are_refused(server: RunningServer, version: int) -> None:
    r = httpx.put(f"{server.url}/v1/models/tiny/aliases/staging", json={"version": version}, headers=server.headers)
    assert r.status_code == 400, r.text  # 10**40 used to overflow SQLite: 500
    r = httpx.post(f"{server.url}/v1/models/tiny:predict?version={version}", content=b"x", headers=server.headers)
    assert r.status_code == 400, r.text
    assert httpx.get(f"{server.url}/v2/models/tiny/versions/{version}", headers=server.headers).status_code == 400


@pytest.mark.parametrize("method", ["GET", "OPTIONS", "DELETE"])
def test_predict_answers_405_with_allow_post(server: RunningServer, method: str) -> None:
    r = httpx.request(method, f"{server.url}/v1/models/tiny:predict", headers=server.headers)
    assert r.status_code == 405, r.text  # GET used to reach "describe a model" with name "tiny:predict"
    assert r.headers["allow"] == "POST"


def test_the_body_limit_answers_in_each_protocol_form(server: RunningServer) -> None:
    body = b"\0" * 200_000
    r = httpx.post(f"{server.url}/v2/models/tiny/infer", content=body, headers=server.headers)
    assert r.status_code == 413
    assert r.headers["content-type"] == "application/json"
    assert "error" in r.json()
    r = httpx.post(
        f"{server.url}/v1/models/tiny:predict", content=body, headers={**server.headers, "Content-Type": "image/png"}
    )
    assert r.status_code == 413
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "payload_too_large"


def test_repository_index_takes_a_boolean(server: RunningServer) -> None:
    url = f"{server.url}/v2/repository/index"
    with httpx.Client(headers=server.headers) as http:
        assert http.post(url, json={"ready": 0}).status_code == 400  # used to read any value as truthy or not
        assert http.post(url, json={"ready": "yes"}).status_code == 400
        r = http.post(url, json={"ready": False})
    assert r.status_code == 200
    assert [m["name"] for m in r.json()] == ["tiny"]
