"""What a key limited to some models, or holding fewer rights, must not learn or gain.

Found by an attacker's review: a shadow route naming another model, usage rows of other
models, a model-limited ``keys:admin`` key managing every key, a key minting or rotating
keys looser than itself. Each case against the real server, next to what the admin sees.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from imaas.settings import MeteringSettings, Settings
from tests.conftest import RunningServer
from tests.factories import solid, tiny_classifier

MANIFEST = "labels: [a, b, c, d]\n"
PNG = solid((20, 200, 40))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    home = Path(tmp_path_factory.mktemp("tenancy"))
    s = RunningServer(Settings(home=home, metering=MeteringSettings(flush_s=0.2))).start()
    for name, seed in (("alpha", 1), ("beta", 2)):
        onnx = tiny_classifier(home / f"{name}.onnx", seed=seed).read_bytes()
        r = httpx.post(
            f"{s.url}/v1/models/{name}/versions",
            headers=s.headers,
            files={"model": ("m.onnx", onnx)},
            data={"manifest": MANIFEST},
        )
        assert r.status_code == 201, r.text
    shadow = httpx.put(
        f"{s.url}/v1/models/alpha/aliases/production/shadow",
        json={"model": "beta", "version": 1, "weight": 100},
        headers=s.headers,
        timeout=60,
    )
    assert shadow.status_code == 200, shadow.text
    yield s
    s.stop()


def key(server: RunningServer, **body: Any) -> dict[str, str]:
    r = httpx.post(f"{server.url}/v1/keys", json={"name": "t", **body}, headers=server.headers)
    assert r.status_code == 201, r.text
    return {"authorization": f"Bearer {r.json()['secret']}"}


def test_a_shadow_on_another_model_is_invisible_to_a_key_limited_to_this_one(server: RunningServer) -> None:
    admin = httpx.get(f"{server.url}/v1/models/alpha", headers=server.headers).json()
    assert admin["routes"]["production"]["shadow_model"] == "beta"
    mine = key(server, scopes=["models:read", "infer"], models=["alpha"])
    listed = httpx.get(f"{server.url}/v1/models", headers=mine).json()["models"]
    shown = httpx.get(f"{server.url}/v1/models/alpha", headers=mine).json()
    for route in (listed[0]["routes"]["production"], shown["routes"]["production"]):
        assert route["shadow_model"] is None
        assert route["shadow_version"] is None
    assert httpx.post(
        f"{server.url}/v1/models/alpha:predict", content=PNG, headers=mine | {"content-type": "image/png"}
    ).is_success
    history = httpx.get(f"{server.url}/v1/models/alpha/history", headers=mine).json()["events"]
    assert "beta" not in str(history)
    assert "beta" in str(httpx.get(f"{server.url}/v1/models/alpha/history", headers=server.headers).json())
    comparison = httpx.get(f"{server.url}/v1/models/alpha/comparison", headers=mine).json()
    assert comparison["pairs"] == []


def test_usage_read_of_a_limited_key_holds_only_its_models(server: RunningServer) -> None:
    beta_user = key(server, scopes=["infer"], models=["beta"])
    r = httpx.post(
        f"{server.url}/v1/models/beta:predict", content=PNG, headers=beta_user | {"content-type": "image/png"}
    )
    assert r.status_code == 200, r.text
    reader = key(server, scopes=["usage:read"], models=["alpha"])
    deadline = time.monotonic() + 10
    while not any(
        row["model"] == "beta" for row in httpx.get(f"{server.url}/v1/usage", headers=server.headers).json()["rows"]
    ):
        assert time.monotonic() < deadline, "beta's usage never reached the registry"
        time.sleep(0.1)
    rows = httpx.get(f"{server.url}/v1/usage", headers=reader).json()["rows"]
    assert {row["model"] for row in rows} <= {"alpha"}


def test_key_management_needs_an_admin_key_not_limited_to_models(server: RunningServer) -> None:
    tenant_admin = key(server, scopes=["keys:admin"], models=["alpha"])
    for method, path in [("GET", "/v1/keys"), ("GET", "/v1/audit"), ("POST", "/v1/keys")]:
        r = httpx.request(method, f"{server.url}{path}", headers=tenant_admin, json={"name": "x", "scopes": ["infer"]})
        assert r.status_code == 403, (path, r.text)
        assert r.json()["code"] == "insufficient_scope"


def test_a_key_gives_no_more_than_it_holds(server: RunningServer) -> None:
    keys_only = key(server, scopes=["keys:admin"])
    limited = key(
        server,
        scopes=["keys:admin", "infer"],
        limits={"rps": 100, "images_per_day": 5},
        expires_at="2030-01-01T00:00:00Z",
    )
    root_id = httpx.get(f"{server.url}/v1/keys", headers=server.headers).json()["keys"][0]["id"]
    cases = [
        (keys_only, "/v1/keys", {"name": "x", "scopes": ["infer"]}, "scopes it does not hold"),
        (keys_only, f"/v1/keys/{root_id}/rotate", {"grace_s": 0}, "scopes it does not hold"),
        (limited, "/v1/keys", {"name": "x", "scopes": ["infer"]}, "limits.rps"),
        (
            limited,
            "/v1/keys",
            {"name": "x", "scopes": ["infer"], "limits": {"rps": 100, "images_per_day": 6}},
            "images_per_day",
        ),
        (
            limited,
            "/v1/keys",
            {"name": "x", "scopes": ["infer"], "limits": {"rps": 100, "images_per_day": 5}},
            "expires",
        ),
    ]
    for headers, path, body, why in cases:
        r = httpx.post(f"{server.url}{path}", json=body, headers=headers)
        assert r.status_code == 403, (path, body, r.text)
        assert why in r.json()["detail"]
    within = httpx.post(
        f"{server.url}/v1/keys",
        json={
            "name": "x",
            "scopes": ["infer"],
            "limits": {"rps": 50, "images_per_day": 5},
            "expires_at": "2029-01-01T00:00:00Z",
        },
        headers=limited,
    )
    assert within.status_code == 201, within.text
    assert httpx.get(f"{server.url}/v1/models", headers=server.headers).status_code == 200  # the root key still works
