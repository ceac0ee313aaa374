"""Two real servers sharing one registry (a scratch PostgreSQL database) and one artifact
bucket (s3://bucket/prefix on a moto server), each with its own home and so its own
artifact cache: what one replica writes, the other takes up through the change feed.

Waits for the other replica are bounded polls (the change feed is polled every 0.2 s
here), never sleeps followed by an assertion.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from imaas.settings import AuthSettings, RegistrySettings, RuntimeSettings, S3Settings, ServerSettings, Settings
from tests.conftest import RunningServer
from tests.factories import solid, tiny_classifier, tiny_weights
from tests.s3server import REGION

LABELS = ["red", "blue", "c2", "c3"]
MANIFEST = json.dumps({"labels": LABELS, "preprocess": {"resize": "exact"}})
PNG = {"Content-Type": "image/png"}
PROPAGATION_S = 5.0  # a change made on one replica is served by the other within this


@pytest.fixture
def aws_test_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dummy credentials in the environment, where the servers' boto3 clients look for them."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(var, raising=False)


def replica(home: Path, database: str, bucket: str, s3_url: str) -> Settings:
    """One replica's settings; the admin key file is shared (next to the homes): the first
    replica to start on the fresh database writes it, the others find the key made already,
    and every replica takes it."""
    return Settings(
        home=home,
        auth=AuthSettings(key_file=home.parent / "admin.key"),
        database_url=database,
        artifacts_url=f"s3://{bucket}/imaas",
        s3=S3Settings(endpoint_url=s3_url, region=REGION),
        registry=RegistrySettings(poll_interval_s=0.2),
        server=ServerSettings(grpc_port=None),
        runtime=RuntimeSettings(workers=1, solo_threads=1),
    )


@pytest.fixture
def pair(
    tmp_path: Path,
    postgres_url: str,
    s3_bucket: str,
    s3_endpoint: str,
    aws_test_credentials: None,
    serve: Callable[..., RunningServer],
) -> tuple[RunningServer, RunningServer]:
    a = serve(replica(tmp_path / "a", postgres_url, s3_bucket, s3_endpoint))
    b = serve(replica(tmp_path / "b", postgres_url, s3_bucket, s3_endpoint))
    return a, b


def push(server: RunningServer, name: str, onnx: bytes) -> dict[str, Any]:
    r = httpx.post(
        f"{server.url}/v1/models/{name}/versions",
        files={"model": ("m.onnx", onnx)},
        data={"manifest": MANIFEST},
        headers=server.headers,
        timeout=60,
    )
    assert r.status_code in (200, 201), r.text
    body: dict[str, Any] = r.json()
    return body


def predict(server: RunningServer, ref: str, colour: tuple[int, int, int], key: str | None = None) -> httpx.Response:
    headers = {**server.headers, **PNG, **({"X-Imaas-Routing-Key": key} if key else {})}
    return httpx.post(
        f"{server.url}/v1/models/{ref}:predict", content=solid(colour, size=(32, 32)), headers=headers, timeout=60
    )


def answered(r: httpx.Response) -> int:
    assert r.status_code == 200, r.text
    assert r.headers["x-imaas-version"] == f"{r.json()['model']}@{r.json()['version']}"
    return int(r.json()["version"])


def top_labels(r: httpx.Response) -> list[str]:
    return [p["label"] for p in r.json()["results"][0]["predictions"]]


def expected_labels(colour: tuple[int, int, int], seed: int) -> list[str]:
    logits = (np.array(colour, dtype=np.float64) / 255.0) @ tiny_weights(4, seed).astype(np.float64)
    return [LABELS[i] for i in np.argsort(-logits, kind="stable")]


def on_canary(key: str, model: str, alias: str, weight: float) -> bool:
    digest = hashlib.blake2b(f"{model}\0{alias}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") * 100.0 / 2**64 < weight


def status(server: RunningServer, name: str) -> dict[int, dict[str, Any]]:
    r = httpx.get(f"{server.url}/v1/models/{name}/status", headers=server.headers, timeout=30)
    assert r.status_code == 200, r.text
    return {v["version"]: v for v in r.json()["versions"]}


def until(cond: Callable[[], bool], what: str, limit_s: float = PROPAGATION_S) -> float:
    """Poll ``cond`` until it holds; returns the seconds it took (AssertionError past the limit)."""
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > limit_s:
            raise AssertionError(f"not within {limit_s} s: {what}")
        time.sleep(0.05)
    return time.monotonic() - start


def test_a_change_on_one_replica_is_served_by_the_other(
    pair: tuple[RunningServer, RunningServer], tmp_path: Path
) -> None:
    a, b = pair
    colour = (40, 200, 90)
    onnx = tiny_classifier(tmp_path / "v1.onnx", seed=1).read_bytes()
    sha = hashlib.sha256(onnx).hexdigest()
    # B serves A's push, downloading the file from the bucket into its own cache (B may do
    # so as soon as its change feed sees the push: it warms the new production version)
    cached = b.settings.home / "artifact-cache" / sha[:2] / sha
    assert not cached.exists()
    v1 = push(a, "tiny", onnx)
    assert v1["version"] == 1
    assert v1["sha256"] == sha
    first = predict(b, "tiny", colour)
    assert answered(first) == 1
    assert top_labels(first) == expected_labels(colour, 1)
    assert cached.is_file()
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == v1["sha256"]

    v2 = push(a, "tiny", tiny_classifier(tmp_path / "v2.onnx", seed=2).read_bytes())
    assert v2["version"] == 2
    assert answered(predict(b, "tiny", colour)) == 1  # a push moves no alias, on any replica

    promoted = httpx.post(f"{a.url}/v1/models/tiny/promote", json={"version": 2}, headers=a.headers, timeout=60)
    assert promoted.status_code == 200, promoted.text
    took = until(lambda: answered(predict(b, "tiny", colour)) == 2, "B answers with version 2 after A's promote")
    print(f"\nB served A's promote after {took:.2f} s")
    after = [predict(b, "tiny", colour) for _ in range(20)]
    assert [answered(r) for r in after] == [2] * 20  # and never goes back
    assert top_labels(after[0]) == expected_labels(colour, 2)
    st = status(b, "tiny")
    assert (st[2]["state"], st[2]["pinned"]) == ("ready", True)
    until(lambda: status(b, "tiny")[1]["state"] == "unloaded", "B unloads the version no alias needs")
    assert status(b, "tiny")[1]["pinned"] is False

    # a canary set on A splits B's traffic, on the side the routing key hashes to
    canary = httpx.put(
        f"{a.url}/v1/models/tiny/aliases/production/canary",
        json={"version": 1, "weight": 30},
        headers=a.headers,
        timeout=60,
    )
    assert canary.status_code == 200, canary.text
    keys = [f"k{i}" for i in range(40)]
    side = {k: 1 if on_canary(k, "tiny", "production", 30) else 2 for k in keys}
    assert set(side.values()) == {1, 2}
    probe = next(k for k in keys if side[k] == 1)
    until(lambda: answered(predict(b, "tiny", colour, probe)) == 1, "B routes a canary key to version 1")
    got = {k: answered(predict(b, "tiny", colour, k)) for k in keys}
    assert got == side
    assert status(b, "tiny")[1]["state"] == "ready"

    ended = httpx.delete(f"{a.url}/v1/models/tiny/aliases/production/canary", headers=a.headers, timeout=60)
    assert ended.status_code == 200, ended.text
    until(lambda: answered(predict(b, "tiny", colour, probe)) == 2, "B ends the canary A ended")


def test_replicas_started_together_on_a_fresh_database_both_start(
    tmp_path: Path, postgres_url: str, s3_bucket: str, s3_endpoint: str, aws_test_credentials: None
) -> None:
    servers: list[RunningServer] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def start(home: Path) -> None:
        try:
            server = RunningServer(replica(home, postgres_url, s3_bucket, s3_endpoint))
            servers.append(server)
            barrier.wait(30)
            server.start()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(tmp_path / name,)) for name in ("a", "b")]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not any(t.is_alive() for t in threads), "a replica's start hung"
        assert not errors, f"a replica failed to start: {errors!r}"
        assert len(servers) == 2
        a, b = servers
        from sqlalchemy import create_engine

        from imaas.registry.migrate import current_revision, head_revision

        engine = create_engine(postgres_url)
        try:
            with engine.connect() as conn:
                assert current_revision(conn) == head_revision()
        finally:
            engine.dispose()
        v1 = push(a, "tiny", tiny_classifier(tmp_path / "v1.onnx", seed=3).read_bytes())
        r = predict(b, "tiny", (10, 10, 240))
        assert answered(r) == v1["version"] == 1
        assert top_labels(r) == expected_labels((10, 10, 240), 3)
    finally:
        for s in servers:
            if s._thread.ident is not None:  # started: stop it (joins its thread, closes its socket)
                s.stop()
            else:
                s._sock.close()


def test_an_image_added_to_a_collection_through_one_replica_is_found_through_the_other(
    pair: tuple[RunningServer, RunningServer], tmp_path: Path
) -> None:
    a, b = pair
    r = httpx.post(
        f"{a.url}/v1/models/embed/versions",
        files={"model": ("m.onnx", tiny_classifier(tmp_path / "e.onnx", classes=8).read_bytes())},
        data={"manifest": json.dumps({"task": "embedding", "preprocess": {"resize": "exact"}})},
        headers=a.headers,
        timeout=60,
    )
    assert r.status_code == 201, r.text
    r = httpx.post(f"{a.url}/v1/collections", json={"name": "shared", "model": "embed"}, headers=a.headers, timeout=60)
    assert r.status_code == 201, r.text
    colours = {"red": (230, 20, 20), "blue": (20, 20, 230), "green": (20, 230, 20)}
    for name, colour in colours.items():
        r = httpx.post(
            f"{a.url}/v1/collections/shared/items",
            params={"id": name},
            content=solid(colour, size=(32, 32)),
            headers={**a.headers, **PNG},
            timeout=60,
        )
        assert r.status_code == 200, r.text
    # the other replica reads the same registry row and the same table in the bucket
    r = httpx.post(
        f"{b.url}/v1/collections/shared:search",
        params={"k": 3},
        content=solid((200, 40, 60), size=(32, 32)),
        headers={**b.headers, **PNG},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    assert r.json()["neighbours"][0]["id"] == "red"
    assert {n["id"] for n in r.json()["neighbours"]} == set(colours)
    # a delete through b is seen by a at its next read
    assert httpx.delete(f"{b.url}/v1/collections/shared/items/red", headers=b.headers, timeout=60).status_code == 204
    r = httpx.post(f"{a.url}/v1/collections/shared:search", json={"id": "blue"}, headers=a.headers, timeout=60)
    assert [n["id"] for n in r.json()["neighbours"]] == ["green"]
