"""Two real servers on one registry (PostgreSQL) and one Redis share every key's budget.

Both servers use the same home (so the same artifacts folder and admin key file) and one
private PostgreSQL database; their quota counters live in Redis database 9 at 127.0.0.1:6379
(skipped when no Redis answers there). The counters' keys are named after the API key ids,
which are random, and the ones this test made are deleted afterwards.
"""

from __future__ import annotations

import math
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis

from imaas.settings import AuthSettings, QuotaSettings, RegistrySettings, Settings
from tests.conftest import RunningServer
from tests.factories import solid, tiny_classifier

HOST, PORT, DB = "127.0.0.1", 6379, 9
REDIS_URL = f"redis://{HOST}:{PORT}/{DB}"
QUOTA_PREFIX = "imaas:quota:"  # RedisCounters' default prefix (open_counters takes no other)
REFRESH_S = 0.2
MODEL = "colors"


def _redis_answers() -> bool:
    try:
        with socket.create_connection((HOST, PORT), timeout=0.5):
            pass
        return bool(redis.Redis(host=HOST, port=PORT, db=DB, socket_timeout=1).ping())
    except (OSError, redis.RedisError):
        return False


pytestmark = pytest.mark.skipif(not _redis_answers(), reason=f"no Redis answers at {HOST}:{PORT}")


@pytest.fixture
def made_keys() -> Iterator[list[str]]:
    """Ids of the API keys a test made; their quota counters are deleted from Redis afterwards."""
    ids: list[str] = []
    yield ids
    client = redis.Redis(host=HOST, port=PORT, db=DB)
    try:
        for key_id in ids:
            stale = list(client.scan_iter(match=f"{QUOTA_PREFIX}{key_id}:*"))
            if stale:
                client.delete(*stale)
    finally:
        client.close()


@pytest.fixture
def pair(tmp_path: Path, postgres_url: str, serve: Callable[..., RunningServer]) -> tuple[RunningServer, RunningServer]:
    """Server A (which pushed the model) and server B, started after it on the same registry."""

    def settings() -> Settings:
        return Settings(
            home=tmp_path / "home",
            database_url=postgres_url,
            quotas=QuotaSettings(redis_url=REDIS_URL),
            auth=AuthSettings(refresh_s=REFRESH_S),
            registry=RegistrySettings(poll_interval_s=0.2),
        )

    a = serve(settings())
    model = tiny_classifier(tmp_path / "tiny.onnx").read_bytes()
    r = httpx.post(
        f"{a.url}/v1/models/{MODEL}/versions",
        files={"model": ("m.onnx", model)},
        data={"manifest": "labels: [a, b, c, d]\n"},
        headers=a.headers,
    )
    assert r.status_code == 201, r.text
    b = serve(settings())
    assert b.key == a.key  # one registry, one admin key
    return a, b


def _make_key(server: RunningServer, made: list[str], **limits: float) -> tuple[str, dict[str, str]]:
    body = {"name": "shared-budget", "scopes": ["infer"], "limits": limits}
    r = httpx.post(f"{server.url}/v1/keys", json=body, headers=server.headers)
    assert r.status_code == 201, r.text
    made.append(r.json()["key"]["id"])
    return r.json()["key"]["id"], {"authorization": f"Bearer {r.json()['secret']}"}


def _wait_until_known(server: RunningServer, headers: dict[str, str], timeout: float = 10.0) -> float:
    """Poll ``server`` with the key (GET /v1/usage: any key, never metered) until it is accepted;
    returns the seconds it took. Refused calls take no rate-limit token; the accepted one does."""
    start = time.monotonic()
    while True:
        r = httpx.get(f"{server.url}/v1/usage", headers=headers)
        if r.status_code == 200:
            return time.monotonic() - start
        assert (r.status_code, r.json()["code"]) == (401, "invalid_credentials"), r.text
        if time.monotonic() - start > timeout:
            raise AssertionError(f"the key was not accepted within {timeout} s (auth.refresh_s={REFRESH_S})")
        time.sleep(0.02)


def _predict(server: RunningServer, headers: dict[str, str], image: bytes) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v1/models/{MODEL}:predict", content=image, headers={**headers, "content-type": "image/png"}
    )


def test_daily_quota_is_shared_by_both_servers(pair: tuple[RunningServer, RunningServer], made_keys: list[str]) -> None:
    a, b = pair
    key_id, headers = _make_key(a, made_keys, images_per_day=10)
    _wait_until_known(b, headers)
    image = solid((200, 20, 20))
    answers = [_predict((a, b)[i % 2], headers, image) for i in range(16)]
    assert [r.status_code for r in answers] == [200] * 10 + [429] * 6, [r.text for r in answers]
    for r in answers[10:]:
        assert r.json()["code"] == "quota_exceeded"
        assert int(r.headers["retry-after"]) >= 1
    # the revocation made on A reaches B too
    assert httpx.delete(f"{a.url}/v1/keys/{key_id}", headers=a.headers).status_code == 200
    deadline = time.monotonic() + 10
    while (r := httpx.get(f"{b.url}/v1/usage", headers=headers)).status_code == 200:
        assert time.monotonic() < deadline, "server B still accepts the key revoked on A"
        time.sleep(0.02)
    assert (r.status_code, r.json()["code"]) == (401, "key_revoked")


def test_rate_limit_is_shared_by_both_servers(pair: tuple[RunningServer, RunningServer], made_keys: list[str]) -> None:
    a, b = pair
    rps, burst = 5, 5
    _, headers = _make_key(b, made_keys, rps=rps, burst=burst)  # made on B, used on A too
    _wait_until_known(a, headers)  # took one token
    time.sleep(burst / rps + 0.2)  # the bucket is full again (a precondition, not an assertion)
    image = solid((20, 20, 200))
    start = time.monotonic()
    answers = [_predict((a, b)[i % 2], headers, image) for i in range(20)]
    elapsed = time.monotonic() - start
    ok = [r for r in answers if r.status_code == 200]
    refused = [r for r in answers if r.status_code != 200]
    assert all(r.status_code == 429 and r.json()["code"] == "rate_limited" for r in refused), [r.text for r in refused]
    assert all("retry-after" in r.headers and "ratelimit" in r.headers for r in refused)
    # a full bucket, plus what refilled while the calls were made, across both servers
    most = burst + math.floor(elapsed * rps + 1e-9)
    assert burst <= len(ok) <= most, (len(ok), elapsed)
    assert refused, f"20 calls in {elapsed:.2f} s were all allowed: too slow to test the limit"
    assert {r.url.port for r in ok} == {a.port, b.port}  # both servers drew on the one bucket
