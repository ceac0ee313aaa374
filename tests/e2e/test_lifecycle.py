"""The model lifecycle over HTTP on one real server: promote under load, refusals, rollback,
canary (random and sticky), shadow, status, model cards, deletes, and pushes that leave
aliases alone.

Each test serves tiny real ONNX classifiers from a private SQLite home (no zoo, so these
stay in the fast loop). What a version answers is checked against an independent
computation: softmax(mean RGB / 255 @ weights) with the weights ``tiny_weights(seed)``
gives, and which side of a sticky canary a routing key lands on is computed here with
blake2b, not with the server's function.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from imaas.settings import ModelPolicySettings, RuntimeSettings, ServerSettings, Settings
from tests.conftest import RunningServer
from tests.factories import solid, tiny_classifier, tiny_weights

LABELS = ["red", "blue", "c2", "c3"]
MANIFEST = json.dumps({"labels": LABELS, "preprocess": {"resize": "exact"}})
PNG = {"Content-Type": "image/png"}
TIMEOUT = 30.0


# -- helpers ---------------------------------------------------------------------------------
def colours(n: int, seed: int) -> list[tuple[int, int, int]]:
    """``n`` distinct solid colours drawn with a fixed seed."""
    rng = np.random.default_rng(seed)
    seen: list[tuple[int, int, int]] = []
    while len(seen) < n:
        r, g, b = (int(x) for x in rng.integers(0, 256, 3))
        if (r, g, b) not in seen:
            seen.append((r, g, b))
    return seen


def image(colour: tuple[int, int, int]) -> bytes:
    """A 32x32 PNG of one colour: the tiny model reads it unchanged (``resize: exact``)."""
    return solid(colour, size=(32, 32))


def expected(colour: tuple[int, int, int], seed: int) -> list[tuple[str, float]]:
    """What ``tiny_classifier(seed=seed)`` answers for a solid colour: labels by score, with scores."""
    logits = (np.array(colour, dtype=np.float64) / 255.0) @ tiny_weights(4, seed).astype(np.float64)
    p = np.exp(logits - logits.max())
    p /= p.sum()
    order = np.argsort(-p, kind="stable")
    return [(LABELS[i], float(p[i])) for i in order]


def top1(colour: tuple[int, int, int], seed: int) -> str:
    return expected(colour, seed)[0][0]


def predictions(body: dict[str, Any]) -> list[tuple[str, float]]:
    return [(p["label"], p["score"]) for p in body["results"][0]["predictions"]]


def same_predictions(got: list[tuple[str, float]], want: list[tuple[str, float]]) -> bool:
    return [g[0] for g in got] == [w[0] for w in want] and np.allclose(
        [g[1] for g in got], [w[1] for w in want], atol=1e-5
    )


def side_of(key: str, model: str, alias: str, weight: float) -> str:
    """``canary`` or ``primary`` for a routing key, computed here as routing.py documents:
    blake2b-64 of ``model\\0alias\\0key`` scaled to [0, 100), below the weight is the canary."""
    digest = hashlib.blake2b(f"{model}\0{alias}\0{key}".encode(), digest_size=8).digest()
    point = int.from_bytes(digest, "big") * 100.0 / 2**64
    return "canary" if point < weight else "primary"


def settings(home: Path, **models: Any) -> Settings:
    return Settings(
        home=home,
        server=ServerSettings(grpc_port=None),
        runtime=RuntimeSettings(workers=2, solo_threads=1),
        models=ModelPolicySettings(**models),
    )


@pytest.fixture
def server(tmp_path: Path, serve: Callable[..., RunningServer]) -> RunningServer:
    return serve(settings(tmp_path / "home", shadow_queue=1024))


@pytest.fixture
def http(server: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=TIMEOUT, headers=server.headers) as client:
        yield client


class Models:
    """Pushes tiny classifiers, one ONNX file per seed (different seeds: different weights)."""

    def __init__(self, http: httpx.Client, tmp_path: Path) -> None:
        self.http = http
        self.dir = tmp_path / "onnx"
        self.dir.mkdir(exist_ok=True)

    def onnx(self, seed: int) -> bytes:
        return tiny_classifier(self.dir / f"tiny-{seed}.onnx", seed=seed).read_bytes()

    def push(self, name: str, seed: int, manifest: str = MANIFEST, **form: str) -> dict[str, Any]:
        r = self.http.post(
            f"/v1/models/{name}/versions",
            files={"model": ("m.onnx", self.onnx(seed))},
            data={"manifest": manifest, **form},
        )
        assert r.status_code in (200, 201), r.text
        body: dict[str, Any] = r.json()
        return body


@pytest.fixture
def models(http: httpx.Client, tmp_path: Path) -> Models:
    return Models(http, tmp_path)


def predict(http: httpx.Client, ref: str, colour: tuple[int, int, int], key: str | None = None) -> httpx.Response:
    headers = {**PNG, **({"X-Imaas-Routing-Key": key} if key is not None else {})}
    return http.post(f"/v1/models/{ref}:predict", content=image(colour), headers=headers)


def answered(r: httpx.Response) -> int:
    """The version that answered, from the header, checked against the body."""
    assert r.status_code == 200, r.text
    name, _, number = r.headers["x-imaas-version"].partition("@")
    assert (name, int(number)) == (r.json()["model"], r.json()["version"])
    return int(number)


def model(http: httpx.Client, name: str) -> dict[str, Any]:
    r = http.get(f"/v1/models/{name}")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def status(http: httpx.Client, name: str) -> dict[int, dict[str, Any]]:
    r = http.get(f"/v1/models/{name}/status")
    assert r.status_code == 200, r.text
    return {v["version"]: v for v in r.json()["versions"]}


def history(http: httpx.Client, name: str) -> list[dict[str, Any]]:
    r = http.get(f"/v1/models/{name}/history", params={"limit": 1000})
    assert r.status_code == 200, r.text
    events: list[dict[str, Any]] = r.json()["events"]
    return events


def artifact(server: RunningServer, sha256: str) -> Path:
    return server.settings.artifacts_dir / sha256[:2] / sha256


def until(cond: Callable[[], bool], what: str, limit_s: float = 10.0) -> None:
    end = time.monotonic() + limit_s
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"never happened within {limit_s} s: {what}")
        time.sleep(0.02)


# -- 1. promote under load -------------------------------------------------------------------
@dataclass(frozen=True)
class Sent:
    start: float
    end: float
    status: int
    version: int | None
    colour: int
    got: list[tuple[str, float]] | None
    error: str | None = None


def test_promote_under_load_drops_nothing_and_switches_once(
    server: RunningServer, http: httpx.Client, models: Models
) -> None:
    models.push("tiny", 1)
    models.push("tiny", 2)
    palette = colours(8, seed=11)
    bodies = [image(c) for c in palette]
    stop = threading.Event()
    sent: list[Sent] = []
    lock = threading.Lock()

    def load(worker: int) -> None:
        i = worker
        with httpx.Client(base_url=server.url, timeout=TIMEOUT, headers=server.headers) as client:
            while not stop.is_set():
                k = i % len(bodies)
                i += 1
                start = time.monotonic()
                try:
                    r = client.post("/v1/models/tiny:predict", content=bodies[k], headers=PNG)
                except httpx.HTTPError as exc:
                    with lock:
                        sent.append(Sent(start, time.monotonic(), 0, None, k, None, repr(exc)))
                    continue
                end = time.monotonic()
                ok = r.status_code == 200
                record = Sent(
                    start,
                    end,
                    r.status_code,
                    answered(r) if ok else None,
                    k,
                    predictions(r.json()) if ok else None,
                    None if ok else r.text[:300],
                )
                with lock:
                    sent.append(record)

    with ThreadPoolExecutor(16) as pool:
        workers = [pool.submit(load, w) for w in range(16)]
        try:
            until(lambda: len(sent) >= 50, "the load generator got answers", 20)
            time.sleep(2.0)  # load for a while on version 1 (the duration of the run, not a wait for an outcome)
            before = time.monotonic()
            promoted = http.post("/v1/models/tiny/promote", json={"version": 2})
            after = time.monotonic()
            time.sleep(2.0)  # and a while on version 2
        finally:
            stop.set()
            for w in workers:
                w.result(timeout=60)
    assert promoted.status_code == 200, promoted.text
    assert promoted.json() == {
        "model": "tiny",
        "alias": "production",
        "from_version": 1,
        "to_version": 2,
        "moved": True,
    }

    failed = [s for s in sent if s.status != 200]
    by_version = Counter(s.version for s in sent)
    print(f"\npromote under load: {len(sent)} requests sent, {len(failed)} failed, by version {dict(by_version)}")
    assert not failed, f"{len(failed)} of {len(sent)} requests failed, e.g. {failed[:3]}"
    assert by_version[1] > 0, f"answers by version: {dict(by_version)} of {len(sent)}"
    assert by_version[2] > 0, f"answers by version: {dict(by_version)} of {len(sent)}"
    late_v1 = [s for s in sent if s.start > after and s.version != 2]
    assert not late_v1, f"{len(late_v1)} requests started after the promote returned were answered by v1"
    early_v2 = [s for s in sent if s.end < before and s.version != 1]
    assert not early_v2, f"{len(early_v2)} requests answered before the promote began came from v2"

    # every answer is what its version computes (independent numpy reference)...
    wrong = [s for s in sent if not same_predictions(s.got or [], expected(palette[s.colour], s.version or 0))]
    assert not wrong, f"{len(wrong)} of {len(sent)} answers differ from their version's computation: {wrong[:2]}"

    # ...the old version was unloaded and is no longer pinned (checked before anything loads it again)
    until(lambda: status(http, "tiny")[1]["state"] == "unloaded", "v1 unloaded after the promote", 5)
    st = status(http, "tiny")
    assert st[1]["pinned"] is False
    assert (st[2]["state"], st[2]["pinned"]) == ("ready", True)

    # ...and matches a direct call to each version
    for k, c in enumerate(palette):
        for v in (1, 2):
            direct = predict(http, f"tiny@{v}", c)
            assert answered(direct) == v
            sample = next((s for s in sent if s.colour == k and s.version == v), None)
            if sample is not None:
                assert same_predictions(sample.got or [], predictions(direct.json()))


# -- 2. refusals -----------------------------------------------------------------------------
def test_promote_refuses_an_unknown_version_and_a_corrupt_artifact(
    server: RunningServer, http: httpx.Client, models: Models
) -> None:
    models.push("tiny", 1)
    unknown = http.post("/v1/models/tiny/promote", json={"version": 7})
    assert unknown.status_code == 404, unknown.text
    assert unknown.json()["code"] == "version_not_found"

    v2 = models.push("tiny", 2)
    path = artifact(server, v2["sha256"])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a flipped byte: the file no longer hashes to its name
    path.write_bytes(bytes(data))

    refused = http.post("/v1/models/tiny/promote", json={"version": 2})
    assert refused.status_code == 409, refused.text
    assert refused.json()["code"] == "version_not_loadable"
    assert "sha256" in refused.json()["detail"]
    assert model(http, "tiny")["aliases"] == {"production": 1}
    assert answered(predict(http, "tiny", (200, 30, 30))) == 1
    assert not [e for e in history(http, "tiny") if e["action"] == "promote"]


@pytest.mark.parametrize("weight", [150, -1, 100.5])
def test_canary_weight_outside_0_100_is_refused_naming_the_field(
    http: httpx.Client, models: Models, weight: float
) -> None:
    models.push("tiny", 1)
    models.push("tiny", 2)
    r = http.put("/v1/models/tiny/aliases/production/canary", json={"version": 2, "weight": weight})
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "invalid_field"
    assert r.json()["detail"].startswith("weight")
    assert model(http, "tiny")["routes"]["production"]["canary_version"] is None


def test_a_canary_of_the_alias_own_version_is_refused(http: httpx.Client, models: Models) -> None:
    models.push("tiny", 1)
    r = http.put("/v1/models/tiny/aliases/production/canary", json={"version": 1, "weight": 10})
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "invalid_field"
    assert "version" in r.json()["detail"]
    s = http.put("/v1/models/tiny/aliases/production/shadow", json={"version": 1, "weight": 10})
    assert s.status_code == 422, s.text
    assert s.json()["code"] == "invalid_field"


def test_two_concurrent_promotes_leave_no_half_state(server: RunningServer, http: httpx.Client, models: Models) -> None:
    models.push("tiny", 1)
    models.push("tiny", 2)
    models.push("tiny", 3)
    barrier = threading.Barrier(2)

    def promote(version: int) -> httpx.Response:
        with httpx.Client(base_url=server.url, timeout=TIMEOUT, headers=server.headers) as client:
            barrier.wait(10)
            return client.post("/v1/models/tiny/promote", json={"version": version})

    with ThreadPoolExecutor(2) as pool:
        answers = dict(zip((2, 3), pool.map(promote, (2, 3)), strict=True))
    codes = {v: r.status_code for v, r in answers.items()}
    print(f"\nconcurrent promotes to 2 and 3: {codes}")
    final = model(http, "tiny")["aliases"]["production"]
    moves = [e for e in reversed(history(http, "tiny")) if e["action"] == "promote"]
    chain = [(e["from_version"], e["to_version"]) for e in moves]
    if sorted(codes.values()) == [200, 409]:
        winner = next(v for v, c in codes.items() if c == 200)
        loser = answers[5 - winner]
        assert loser.json()["code"] == "concurrent_change", loser.text
        assert final == winner
        assert chain == [(1, winner)]
    else:  # serialised: the second read the first one's result
        assert codes == {2: 200, 3: 200}, {v: r.text for v, r in answers.items()}
        first = answers[2] if answers[2].json()["from_version"] == 1 else answers[3]
        second = answers[5 - first.json()["to_version"]]
        assert second.json()["from_version"] == first.json()["to_version"]
        assert final == second.json()["to_version"]
        assert chain == [(1, first.json()["to_version"]), (first.json()["to_version"], final)]
    assert answered(predict(http, "tiny", (10, 200, 10))) == final
    assert status(http, "tiny")[final]["pinned"] is True


# -- 3. rollback -----------------------------------------------------------------------------
def test_rollback_walks_back_through_promotes(server: RunningServer, http: httpx.Client, models: Models) -> None:
    for seed in (1, 2, 3):
        models.push("tiny", seed)
    for v in (2, 3):
        r = http.post("/v1/models/tiny/promote", json={"version": v})
        assert r.status_code == 200, r.text
    assert answered(predict(http, "tiny", (1, 2, 3))) == 3

    first = http.post("/v1/models/tiny/rollback", json={"alias": "production"})
    assert first.status_code == 200, first.text
    assert (first.json()["from_version"], first.json()["to_version"]) == (3, 2)
    assert answered(predict(http, "tiny", (1, 2, 3))) == 2
    second = http.post("/v1/models/tiny/rollback")
    assert second.status_code == 200, second.text
    assert (second.json()["from_version"], second.json()["to_version"]) == (2, 1)
    assert answered(predict(http, "tiny", (1, 2, 3))) == 1
    third = http.post("/v1/models/tiny/rollback")
    assert third.status_code == 409, third.text
    assert third.json()["code"] == "nothing_to_roll_back"
    assert model(http, "tiny")["aliases"] == {"production": 1}

    events = history(http, "tiny")
    assert [e["seq"] for e in events] == sorted((e["seq"] for e in events), reverse=True)  # newest first
    admin = f"admin ({server.key.split('_')[1]})"  # the admin key's name and id
    assert all(e["actor"] == admin for e in events), events
    moves = [
        (e["action"], e.get("alias"), e["from_version"], e["to_version"])
        for e in reversed(events)
        if e["action"] != "push" or e.get("alias") is not None
    ]
    assert moves == [
        ("push", "production", None, 1),
        ("promote", "production", 1, 2),
        ("promote", "production", 2, 3),
        ("rollback", "production", 3, 2),
        ("rollback", "production", 2, 1),
    ]
    pushes = [e["to_version"] for e in reversed(events) if e["action"] == "push" and e.get("alias") is None]
    assert pushes == [1, 2, 3]


# -- 4. canary -------------------------------------------------------------------------------
def test_canary_splits_by_weight_and_sticks_to_routing_keys(
    server: RunningServer, http: httpx.Client, models: Models
) -> None:
    models.push("tiny", 1)
    models.push("tiny", 2)
    r = http.put("/v1/models/tiny/aliases/production/canary", json={"version": 2, "weight": 10})
    assert r.status_code == 200, r.text
    assert (r.json()["version"], r.json()["canary_version"], r.json()["canary_weight"]) == (1, 2, 10.0)

    # random split: 1,000 requests without a key
    n, weight = 1000, 10.0
    with ThreadPoolExecutor(8) as pool:
        versions = list(pool.map(lambda _i: answered(predict(http, "tiny", (90, 90, 200))), range(n)))
    counts = Counter(versions)
    mean = n * weight / 100
    sigma = (n * (weight / 100) * (1 - weight / 100)) ** 0.5
    low, high = mean - 4.5 * sigma, mean + 4.5 * sigma
    print(f"\ncanary 90/10 over {n} requests: {counts[2]} on the canary (bounds {low:.0f}-{high:.0f})")
    assert set(counts) == {1, 2}
    assert low <= counts[2] <= high, f"canary answered {counts[2]} of {n}; expected {low:.0f}-{high:.0f}"

    # sticky split: each key twice, on the side blake2b puts it
    keys = [f"user-{i}" for i in range(200)]
    want = {k: 2 if side_of(k, "tiny", "production", weight) == "canary" else 1 for k in keys}
    assert 0 < sum(v == 2 for v in want.values()) < len(keys)  # both sides are exercised
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda k: (k, answered(predict(http, "tiny", (90, 90, 200), key=k))), keys * 2))
    wrong = [(k, v, want[k]) for k, v in got if v != want[k]]
    assert not wrong, f"{len(wrong)} of {len(got)} keyed requests on the wrong side: {wrong[:5]}"

    # the OIP REST edge routes the same way and names the version that answered
    x = np.full((1, 3, 32, 32), 0.5, dtype=np.float32)
    for k in [next(k for k in keys if want[k] == 2), next(k for k in keys if want[k] == 1)]:
        oip = http.post(
            "/v2/models/tiny/infer",
            json={
                "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, 32, 32], "data": x.ravel().tolist()}]
            },
            headers={"X-Imaas-Routing-Key": k},
        )
        assert oip.status_code == 200, oip.text
        assert oip.json()["model_version"] == str(want[k])
        assert oip.headers["x-imaas-version"] == f"tiny@{want[k]}"

    # weight 100 completes the rollout: the alias moves, the canary is cleared
    done = http.put("/v1/models/tiny/aliases/production/canary", json={"version": 2, "weight": 100})
    assert done.status_code == 200, done.text
    assert (done.json()["version"], done.json()["canary_version"], done.json()["canary_weight"]) == (2, None, 0.0)
    assert model(http, "tiny")["aliases"] == {"production": 2}
    assert {answered(predict(http, "tiny", (90, 90, 200), key=k)) for k in keys[:50]} == {2}

    # a new canary (the old version, at 50%), then DELETE ends it
    again = http.put("/v1/models/tiny/aliases/production/canary", json={"version": 1, "weight": 50})
    assert again.status_code == 200, again.text
    canary_keys = [k for k in keys if side_of(k, "tiny", "production", 50) == "canary"][:10]
    assert {answered(predict(http, "tiny", (9, 9, 9), key=k)) for k in canary_keys} == {1}
    ended = http.delete("/v1/models/tiny/aliases/production/canary")
    assert ended.status_code == 200, ended.text
    assert (ended.json()["version"], ended.json()["canary_version"]) == (2, None)
    assert {answered(predict(http, "tiny", (9, 9, 9), key=k)) for k in canary_keys} == {2}
    canaries = [
        (e["from_version"], e["to_version"], e["detail"].get("weight"))
        for e in reversed(history(http, "tiny"))
        if e["action"] == "canary"
    ]
    assert canaries == [(None, 2, 10.0), (None, 1, 50.0), (1, None, 0.0)]


# -- 5. shadow -------------------------------------------------------------------------------
def comparison(http: httpx.Client, name: str) -> dict[tuple[int, str, int], dict[str, Any]]:
    r = http.get(f"/v1/models/{name}/comparison")
    assert r.status_code == 200, r.text
    return {(p["version"], p["shadow_model"], p["shadow_version"]): p for p in r.json()["pairs"]}


def compared(http: httpx.Client, name: str, pair: tuple[int, str, int]) -> int:
    found = comparison(http, name).get(pair)
    return int(found["compared"]) if found is not None else 0


def test_shadow_at_full_weight_compares_every_request_and_never_answers(http: httpx.Client, models: Models) -> None:
    models.push("tiny", 1)
    models.push("tiny", 2)
    models.push("tiny", 3)
    palette = colours(60, seed=5)
    # the test's own agreement figure, from direct calls to each version
    agree = [
        predictions(predict(http, "tiny@1", c).json())[0][0] == predictions(predict(http, "tiny@2", c).json())[0][0]
        for c in palette
    ]
    own = sum(agree) / len(agree)
    assert 0 < own < 1, "the images do not tell the versions apart; pick other colours"
    assert own == sum(top1(c, 1) == top1(c, 2) for c in palette) / len(palette)  # and from the weights

    r = http.put("/v1/models/tiny/aliases/production/shadow", json={"version": 2, "weight": 100})
    assert r.status_code == 200, r.text
    assert (r.json()["shadow_model"], r.json()["shadow_version"], r.json()["shadow_weight"]) == ("tiny", 2, 100.0)
    served = [answered(predict(http, "tiny", c)) for c in palette]
    assert served == [1] * len(palette), "a shadow answered a caller"

    pair = (1, "tiny", 2)
    until(lambda: compared(http, "tiny", pair) >= len(palette), f"{len(palette)} shadow copies compared", 20)
    stats = comparison(http, "tiny")[pair]
    assert (stats["compared"], stats["dropped"], stats["failed"]) == (len(palette), 0, 0), stats
    assert stats["agreement"] == pytest.approx(own, abs=1e-9)
    assert stats["latency"]["p50_ms"] > 0
    assert stats["shadow_latency"]["p50_ms"] > 0

    # weight 0 ends it: requests sent now are not copied. The shadow runner works in order,
    # so once a copy to another shadow (v3) sent afterwards is compared, any copy of these
    # would have been compared too.
    off = http.put("/v1/models/tiny/aliases/production/shadow", json={"version": 2, "weight": 0})
    assert off.status_code == 200, off.text
    assert (off.json()["shadow_version"], off.json()["shadow_weight"]) == (None, 0.0)
    assert [answered(predict(http, "tiny", c)) for c in palette[:10]] == [1] * 10
    assert http.put("/v1/models/tiny/aliases/production/shadow", json={"version": 3, "weight": 100}).status_code == 200
    assert answered(predict(http, "tiny", palette[0])) == 1
    until(lambda: compared(http, "tiny", (1, "tiny", 3)) >= 1, "the copy to v3 compared")
    assert compared(http, "tiny", pair) == len(palette)

    # DELETE ends it the same way (checked with v2 as the marker shadow this time)
    ended = http.delete("/v1/models/tiny/aliases/production/shadow")
    assert ended.status_code == 200, ended.text
    assert ended.json()["shadow_version"] is None
    assert model(http, "tiny")["routes"]["production"]["shadow_version"] is None
    assert [answered(predict(http, "tiny", c)) for c in palette[:10]] == [1] * 10
    assert http.put("/v1/models/tiny/aliases/production/shadow", json={"version": 2, "weight": 100}).status_code == 200
    assert answered(predict(http, "tiny", palette[0])) == 1
    until(lambda: compared(http, "tiny", pair) >= len(palette) + 1, "the marker copy to v2 compared")
    assert compared(http, "tiny", (1, "tiny", 3)) == 1
    assert compared(http, "tiny", pair) == len(palette) + 1


# -- 6. status, cards, deletes ---------------------------------------------------------------
def test_status_shows_states_memory_and_the_reason_of_a_failure(
    server: RunningServer, http: httpx.Client, models: Models
) -> None:
    models.push("tiny", 1)
    models.push("tiny", 2)
    v3 = models.push("tiny", 3)
    assert answered(predict(http, "tiny", (200, 0, 0))) == 1
    path = artifact(server, v3["sha256"])
    path.write_bytes(path.read_bytes()[:-7] + b"garbage")
    broken = predict(http, "tiny@3", (200, 0, 0))
    assert broken.status_code == 503, broken.text
    assert broken.json()["code"] == "model_not_ready"

    # the push that made v1 production pinned it at once (not one change-feed poll later)
    r = http.get("/v1/models/tiny/status")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "tiny"
    assert body["resident_bytes"] > 0
    assert [v["version"] for v in body["versions"]] == [3, 2, 1]
    st = {v["version"]: v for v in body["versions"]}
    assert (st[1]["state"], st[1]["pinned"]) == ("ready", True)
    # at least the file's size (a few-KB model may fit in heap pages already resident); the
    # RSS growth is checked on a wide model below
    sizes = {v["version"]: v["size_bytes"] for v in http.get("/v1/models/tiny").json()["versions"]}
    assert st[1]["memory_bytes"] >= sizes[1] > 0, st[1]
    assert st[1]["load_seconds"] >= 0
    assert st[1]["loaded_at"] is not None
    assert st[1]["last_used_at"] is not None
    assert st[1]["queue_depth"] == 0
    assert (st[2]["state"], st[2]["pinned"], st[2]["memory_bytes"]) == ("unloaded", False, None)
    assert st[3]["state"] == "failed"
    assert "sha256" in st[3]["reason"], st[3]
    assert str(server.settings.home) not in r.text  # no server paths leak
    assert http.get("/v1/models/nope/status").json()["code"] == "model_not_found"

    # a model with 12 MB of weights: the memory figure of its ready version is at least half that
    classes = 1_000_000
    wide = tiny_classifier(models.dir / "wide.onnx", classes=classes).read_bytes()
    pushed = http.post("/v1/models/wide/versions", files={"model": ("wide.onnx", wide)})
    assert pushed.status_code == 201, pushed.text
    assert answered(predict(http, "wide", (200, 0, 0))) == 1
    ready = status(http, "wide")[1]
    assert ready["state"] == "ready"
    assert ready["memory_bytes"] >= 3 * classes * 4 // 2, ready


def test_model_cards_are_edited_and_shown(http: httpx.Client, models: Models) -> None:
    models.push("tiny", 1)
    models.push("tiny", 2)
    r = http.patch("/v1/models/tiny", json={"description": "colour sorter", "tags": {"team": "vision"}})
    assert r.status_code == 200, r.text
    assert (r.json()["description"], r.json()["tags"]) == ("colour sorter", {"team": "vision"})
    v = http.patch("/v1/models/tiny/versions/2", json={"description": "retrained", "tags": {"data": "v2"}})
    assert v.status_code == 200, v.text
    assert (v.json()["version"], v.json()["description"], v.json()["tags"]) == (2, "retrained", {"data": "v2"})
    only_tags = http.patch("/v1/models/tiny", json={"tags": {"team": "ml"}})
    assert only_tags.status_code == 200, only_tags.text

    shown = model(http, "tiny")
    assert (shown["description"], shown["tags"]) == ("colour sorter", {"team": "ml"})
    versions = {x["version"]: x for x in shown["versions"]}
    assert (versions[2]["description"], versions[2]["tags"]) == ("retrained", {"data": "v2"})
    assert (versions[1]["description"], versions[1]["tags"]) == ("", {})
    edits = [e["detail"].get("fields") for e in reversed(history(http, "tiny")) if e["action"] == "edit"]
    assert edits == [["description", "tags"], ["description", "tags"], ["tags"]]
    missing = http.patch("/v1/models/tiny/versions/9", json={"description": "x"})
    assert (missing.status_code, missing.json()["code"]) == (404, "version_not_found")


def test_a_version_in_use_cannot_be_deleted_and_an_unused_one_takes_its_file(
    server: RunningServer, http: httpx.Client, models: Models
) -> None:
    v1 = models.push("tiny", 1)
    v2 = models.push("tiny", 2)
    # v3: v1's bytes under another manifest, so the two share one file
    v3 = models.push(
        "tiny", 1, manifest=json.dumps({"labels": ["r", "b", "x", "y"], "preprocess": {"resize": "exact"}})
    )
    assert (v3["version"], v3["sha256"]) == (3, v1["sha256"])

    def delete(version: int) -> httpx.Response:
        return http.delete(f"/v1/models/tiny/versions/{version}")

    aliased = delete(1)
    assert (aliased.status_code, aliased.json()["code"]) == (409, "version_in_use"), aliased.text
    assert "production" in aliased.json()["detail"]
    assert http.put("/v1/models/tiny/aliases/production/canary", json={"version": 2, "weight": 5}).status_code == 200
    canary = delete(2)
    assert (canary.status_code, canary.json()["code"]) == (409, "version_in_use"), canary.text
    assert http.delete("/v1/models/tiny/aliases/production/canary").status_code == 200
    assert http.put("/v1/models/tiny/aliases/production/shadow", json={"version": 2, "weight": 5}).status_code == 200
    shadow = delete(2)
    assert (shadow.status_code, shadow.json()["code"]) == (409, "version_in_use"), shadow.text
    assert artifact(server, v2["sha256"]).is_file()
    assert http.delete("/v1/models/tiny/aliases/production/shadow").status_code == 200

    gone = delete(2)
    assert gone.status_code == 204, gone.text
    assert not artifact(server, v2["sha256"]).exists()
    assert [x["version"] for x in model(http, "tiny")["versions"]] == [3, 1]
    assert (delete(2).status_code, delete(2).json()["code"]) == (404, "version_not_found")

    shared = delete(3)
    assert shared.status_code == 204, shared.text
    assert artifact(server, v1["sha256"]).is_file()  # version 1 still uses the bytes
    assert [x["version"] for x in model(http, "tiny")["versions"]] == [1]
    assert answered(predict(http, "tiny", (250, 5, 5))) == 1
    deletes = [e["from_version"] for e in history(http, "tiny") if e["action"] == "delete"]
    assert deletes == [3, 2]
    # a later push takes a new number: 2 and 3 are never reused
    assert models.push("tiny", 2)["version"] == 4


# -- 7. pushes ---------------------------------------------------------------------------------
def test_a_push_never_moves_what_an_alias_serves(http: httpx.Client, models: Models) -> None:
    assert models.push("tiny", 1)["aliases"] == ["production"]
    v2 = models.push("tiny", 2)
    assert (v2["version"], v2["aliases"]) == (2, [])
    assert model(http, "tiny")["aliases"] == {"production": 1}
    assert answered(predict(http, "tiny", (5, 5, 250))) == 1
    staged = models.push("tiny", 3, alias="staging")
    assert staged["aliases"] == ["staging"]
    assert model(http, "tiny")["aliases"] == {"production": 1, "staging": 3}
    assert answered(predict(http, "tiny", (5, 5, 250))) == 1
    assert answered(predict(http, "tiny:staging", (5, 5, 250))) == 3


def test_a_server_started_before_a_promote_stays_ready_after_it(
    tmp_path: Path, serve: Callable[..., RunningServer], models: Models, http: httpx.Client
) -> None:
    models.push("tiny", 1)
    models.push("tiny", 2)
    restarted = serve(settings(tmp_path / "home"))  # warm-up loads production v1 at start
    with httpx.Client(base_url=restarted.url, timeout=TIMEOUT, headers=restarted.headers) as fresh:
        assert fresh.get("/readyz").status_code == 200
        r = fresh.post("/v1/models/tiny/promote", json={"version": 2})
        assert r.status_code == 200, r.text
        ready = fresh.get("/readyz")
        assert ready.status_code == 200, ready.text  # v1 was unpinned and unloaded: not "missing"
        assert fresh.get("/v2/health/ready").status_code == 200
        assert status(fresh, "tiny")[1]["state"] == "unloaded"


def test_promoting_the_current_version_ends_a_canary_and_says_nothing_moved(http: httpx.Client, models: Models) -> None:
    models.push("tiny", 1)
    models.push("tiny", 2)
    assert http.put("/v1/models/tiny/aliases/production/canary", json={"version": 2, "weight": 50}).status_code == 200
    r = http.post("/v1/models/tiny/promote", json={"version": 1})
    assert r.status_code == 200, r.text
    assert (r.json()["moved"], r.json()["to_version"]) == (False, 1)
    route = model(http, "tiny")["routes"]["production"]
    assert (route["version"], route["canary_version"], route["canary_weight"]) == (1, None, 0.0)
    assert [e["action"] for e in history(http, "tiny")][:1] == ["canary"]  # the end of the canary is recorded


def test_a_canary_or_shadow_refused_by_its_alias_loads_nothing(http: httpx.Client, models: Models) -> None:
    models.push("tiny", 1)
    models.push("tiny", 2)
    for kind, body in (("canary", {"version": 2, "weight": 10}), ("shadow", {"version": 2, "weight": 10})):
        r = http.put(f"/v1/models/tiny/aliases/nosuch/{kind}", json=body)
        assert (r.status_code, r.json()["code"]) == (404, "alias_not_found"), r.text
    same = http.put("/v1/models/tiny/aliases/production/canary", json={"version": 1, "weight": 10})
    assert (same.status_code, same.json()["code"]) == (422, "invalid_field")
    assert status(http, "tiny")[2]["state"] == "unloaded"  # nothing was warmed for the refused changes
    for weight in ("10", True):
        r = http.put("/v1/models/tiny/aliases/production/canary", json={"version": 2, "weight": weight})
        assert r.status_code == 400, r.text  # a weight is a JSON number, not a string or a boolean
    unknown = http.patch("/v1/models/tiny", json={"keeplatest": 2})
    assert unknown.status_code == 400, unknown.text  # a misspelt field is refused, not ignored


def test_keep_latest_loads_the_versions_it_pins(http: httpx.Client, models: Models) -> None:
    for seed in (1, 2, 3):
        models.push("tiny", seed)
    r = http.patch("/v1/models/tiny", json={"keep_latest": 2})
    assert r.status_code == 200, r.text
    st = status(http, "tiny")
    assert {v: (s["state"], s["pinned"]) for v, s in st.items()} == {
        1: ("ready", True),  # production
        2: ("ready", True),
        3: ("ready", True),
    }


def test_a_fixed_batch_shadow_compares_every_image_of_multi_image_requests(http: httpx.Client, models: Models) -> None:
    models.push("tiny", 1)
    fixed = tiny_classifier(models.dir / "fixed.onnx", seed=2, batch=1).read_bytes()
    r = http.post("/v1/models/fx/versions", files={"model": ("fx.onnx", fixed)}, data={"manifest": MANIFEST})
    assert r.status_code == 201, r.text
    body = {"model": "fx", "version": 1, "weight": 100}
    assert http.put("/v1/models/tiny/aliases/production/shadow", json=body).status_code == 200
    cs = colours(9, seed=5)
    for i in range(3):
        files = [("file", (f"{j}.png", image(c), "image/png")) for j, c in enumerate(cs[3 * i : 3 * i + 3])]
        assert http.post("/v1/models/tiny:predict", files=files).status_code == 200

    def pair() -> dict[str, Any]:
        pairs: list[dict[str, Any]] = http.get("/v1/models/tiny/comparison").json()["pairs"]
        return pairs[0] if pairs else {"compared": 0, "failed": 0}

    until(lambda: pair()["compared"] + pair()["failed"] >= 9, "9 shadow images accounted for")
    got = pair()
    assert (got["compared"], got["failed"], got["dropped"]) == (9, 0, 0), got
    want = sum(top1(c, 1) == top1(c, 2) for c in cs) / 9
    assert got["agreement"] == pytest.approx(want)
