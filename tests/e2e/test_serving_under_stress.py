"""The real server over HTTP and gRPC when queues fill, deadlines pass, loads are slow or fail,
workers break, models are unloaded mid-queue, and bodies come compressed or too many.

Each test serves a tiny real ONNX model from a private home (no zoo, so these stay in the
fast loop). A batch worker is held on a gate where a test needs a full queue or a passed
deadline, and every wait is for a positive signal (the worker entered the model, the queue
has N items), never a sleep.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from imaas.runtime.batching import BatchQueue
from imaas.services.container import build_services
from imaas.settings import RuntimeSettings, ServerSettings, Settings
from tests.conftest import RunningServer
from tests.factories import solid, tiny_classifier, tiny_weights

KEY = ("tiny", 1)
PREDICT = "/v1/models/tiny:predict"
MANIFEST = {"labels": ["red", "blue", "c2", "c3"], "preprocess": {"resize": "exact"}}
RED = solid((250, 10, 10), size=(32, 32))


def make_home(tmp_path: Path, batch: int | None = None) -> Path:
    """A home whose registry has ``tiny`` version 1 (production)."""
    home = tmp_path / "home"
    services = build_services(Settings(home=home))
    try:
        services.models.push_file("tiny", tiny_classifier(tmp_path / "tiny.onnx", batch=batch), MANIFEST)
    finally:
        asyncio.run(services.close())
    return home


def settings(home: Path, server: dict[str, Any] | None = None, **runtime: Any) -> Settings:
    rt = {"workers": 1, "solo_threads": 1, **runtime}
    return Settings(home=home, runtime=RuntimeSettings(**rt), server=ServerSettings(**(server or {})))


def queue_of(server: RunningServer) -> BatchQueue:
    model = server.app.state.services.inference.engine.get(KEY)
    assert model is not None, "tiny@1 is not loaded"
    queue: BatchQueue = model.queue
    return queue


class Gate:
    """Holds every batch of a queue inside the model until released."""

    def __init__(self, queue: BatchQueue) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        run = queue._run_batch

        def gated(batch: np.ndarray) -> list[np.ndarray]:
            self.entered.set()
            self.release.wait(30)
            return run(batch)

        queue._run_batch = gated


def until(cond: Callable[[], bool], what: str, limit_s: float = 20.0) -> None:
    end = time.monotonic() + limit_s
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.002)


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(8) as p:
        yield p


def post_image(server: RunningServer, body: bytes = RED, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(
        f"{server.url}{PREDICT}",
        content=body,
        headers={**server.headers, "Content-Type": "image/png", **(headers or {})},
        timeout=30,
    )


def grpc_infer(server: RunningServer, images: list[bytes], metadata: tuple[tuple[str, str], ...] = ()) -> Any:
    """One ModelInfer with encoded images as a BYTES input, with the server's key; returns
    (response, call) or raises grpc.RpcError."""
    request = pb.ModelInferRequest(model_name="tiny")
    tensor = request.inputs.add()
    tensor.name, tensor.datatype = "image", "BYTES"
    tensor.shape.extend([len(images)])
    tensor.contents.bytes_contents.extend(images)
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        return stub.ModelInfer.with_call(request, metadata=(*server.headers.items(), *metadata), timeout=30)


def hold_session_loads(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Make every ONNX Runtime session load of the engine wait until the returned event is set."""
    from imaas.runtime import engine
    from imaas.runtime.session import OnnxSession

    release = threading.Event()

    class SlowSession(OnnxSession):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            release.wait(30)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(engine, "OnnxSession", SlowSession)
    return release


def expected_probabilities(rgb: tuple[int, int, int]) -> np.ndarray:
    """What tiny computes for a solid colour, from its weights: softmax(mean RGB / 255 @ W)."""
    logits = (np.array(rgb, dtype=np.float64) / 255.0) @ tiny_weights().astype(np.float64)
    e = np.exp(logits - logits.max())
    return e / e.sum()


def test_a_full_queue_answers_429_with_retry_after_over_http_and_grpc(
    tmp_path: Path, serve: Callable[..., RunningServer], pool: ThreadPoolExecutor
) -> None:
    server = serve(settings(make_home(tmp_path), max_queue=1))
    queue = queue_of(server)
    gate = Gate(queue)
    running = pool.submit(post_image, server)
    assert gate.entered.wait(20)
    waiting = pool.submit(post_image, server)
    until(lambda: queue.depth == 1, "a second request queued")

    refused = post_image(server)
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["code"] == "overloaded"
    with pytest.raises(grpc.RpcError) as info:
        grpc_infer(server, [RED])
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert ("retry-after", "1") in tuple(info.value.trailing_metadata())

    gate.release.set()
    assert running.result().status_code == 200
    assert waiting.result().status_code == 200
    assert queue.stats.rejected == 2


def test_a_passed_deadline_answers_504_over_http_and_grpc(
    tmp_path: Path, serve: Callable[..., RunningServer], pool: ThreadPoolExecutor
) -> None:
    server = serve(settings(make_home(tmp_path), request_timeout_s=0.5))
    gate = Gate(queue_of(server))
    try:
        late = post_image(server)
        assert late.status_code == 504
        assert late.json()["code"] == "deadline_exceeded"
        assert gate.entered.is_set()
        with pytest.raises(grpc.RpcError) as info:
            grpc_infer(server, [RED])
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    finally:
        gate.release.set()


def test_while_a_model_loads_readiness_waits_and_requests_answer_503(
    tmp_path: Path, serve: Callable[..., RunningServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    release = hold_session_loads(monkeypatch)
    server = serve(settings(make_home(tmp_path), request_timeout_s=0.3), wait_ready=False)
    try:
        ready = httpx.get(f"{server.url}/readyz", headers=server.headers)
        assert ready.status_code == 503
        assert ready.json()["missing"] in (["tiny@1"], ["warm-up still running"])
        assert httpx.get(f"{server.url}/v2/health/ready").status_code == 400
        loading = post_image(server)
        assert loading.status_code == 503
        assert loading.json()["code"] == "model_not_ready"
        assert "still loading" in loading.json()["detail"]
        assert loading.headers["retry-after"] == "1"
        with pytest.raises(grpc.RpcError) as info:
            grpc_infer(server, [RED])
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        detail = httpx.get(f"{server.url}/v1/models/tiny", headers=server.headers).json()
        assert detail["versions"][0]["state"] == "loading"
    finally:
        release.set()
    until(lambda: httpx.get(f"{server.url}/readyz").status_code == 200, "ready after the load")
    assert post_image(server).status_code == 200


def test_a_model_that_fails_to_load_is_remembered_retried_with_backoff_and_recovers(
    tmp_path: Path, serve: Callable[..., RunningServer]
) -> None:
    home = make_home(tmp_path)
    artifact = next(p for p in (home / "artifacts").rglob("*") if p.is_file() and p.parent.name != "tmp")
    good = artifact.read_bytes()
    artifact.write_bytes(b"this is not an onnx file any more")
    server = serve(settings(home))  # ready although its only model failed: the server can serve
    loader = server.app.state.services.inference.loader

    class Clock:
        t = loader.failures[KEY].failed_at  # time stands still from the first failure on

        def now(self) -> float:
            return self.t

    clock = Clock()
    loader.clock = clock

    ready = httpx.get(f"{server.url}/readyz", headers=server.headers).json()
    assert ready["status"] == "ready"
    assert [(f["model"], f["attempts"]) for f in ready["failed"]] == [("tiny@1", 1)]
    assert "no longer hash to its sha256" in ready["failed"][0]["reason"]  # checked before ONNX Runtime reads it
    failed = post_image(server)
    assert failed.status_code == 503
    assert failed.json()["code"] == "model_not_ready"
    assert "could not be loaded" in failed.json()["detail"]
    assert failed.headers["retry-after"] == "1"  # the first backoff, 1 s, is all still ahead
    version = httpx.get(f"{server.url}/v1/models/tiny", headers=server.headers).json()["versions"][0]
    assert version["state"] == "failed"
    assert "no longer hash to its sha256" in version["load_error"]
    index = httpx.post(f"{server.url}/v2/repository/index", json={}, headers=server.headers).json()
    assert index[0]["state"] == "UNAVAILABLE"
    assert index[0]["reason"].startswith("failed:")
    surfaces = failed.text + json.dumps(ready) + json.dumps(version) + json.dumps(index)
    assert str(tmp_path) not in surfaces  # ONNX Runtime's message names the file; it is not passed on
    assert "/artifacts" not in surfaces

    assert post_image(server).status_code == 503  # within the backoff: no new attempt
    assert loader.failures[KEY].attempts == 1
    clock.t += 1.01  # first backoff (1 s) over: the next request tries again, and fails again
    again = post_image(server)
    assert again.status_code == 503
    assert again.headers["retry-after"] == "2"  # the backoff doubled
    assert loader.failures[KEY].attempts == 2
    artifact.write_bytes(good)
    clock.t += 1.0  # the second backoff is 2 s: not yet
    assert post_image(server).status_code == 503
    assert loader.failures[KEY].attempts == 2
    clock.t += 1.01
    recovered = post_image(server)
    assert recovered.status_code == 200, recovered.text
    ready = httpx.get(f"{server.url}/readyz", headers=server.headers).json()
    assert ready["failed"] == []
    assert ready["loaded"] == ["tiny@1"]


def test_an_operators_load_skips_the_backoff_and_a_retry_keeps_the_server_ready(
    tmp_path: Path, serve: Callable[..., RunningServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    home = make_home(tmp_path)
    artifact = next(p for p in (home / "artifacts").rglob("*") if p.is_file() and p.parent.name != "tmp")
    good = artifact.read_bytes()
    artifact.write_bytes(b"broken")
    server = serve(settings(home, request_timeout_s=0.2))
    loader = server.app.state.services.inference.loader
    assert loader.failures[KEY].attempts == 1

    release = hold_session_loads(monkeypatch)
    artifact.write_bytes(good)
    with ThreadPoolExecutor(1) as one:
        forced = one.submit(
            httpx.post, f"{server.url}/v2/repository/models/tiny/load", headers=server.headers, timeout=30
        )
        until(lambda: loader.state(KEY)[0] == "loading", "the operator's load started within the backoff")
        during = httpx.get(f"{server.url}/readyz", headers=server.headers)
        assert during.status_code == 200  # a failed version being retried does not make the server unready
        assert [f["model"] for f in during.json()["failed"]] == ["tiny@1"]
        assert post_image(server).status_code == 503  # still loading at this request's deadline
        release.set()
        assert forced.result().status_code == 200
    assert loader.failures == {}
    assert post_image(server).status_code == 200


def test_a_load_that_fails_after_every_waiter_gave_up_is_still_remembered(
    tmp_path: Path, serve: Callable[..., RunningServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = serve(settings(make_home(tmp_path), request_timeout_s=0.2, load_on_startup=False))
    loader = server.app.state.services.inference.loader
    from imaas.errors import InvalidModel
    from imaas.runtime import engine

    release = threading.Event()
    calls = []

    class FailingLate:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            calls.append(1)
            release.wait(30)
            raise InvalidModel("the graph is broken")

    monkeypatch.setattr(engine, "OnnxSession", FailingLate)
    first = post_image(server)
    assert first.status_code == 503
    assert "still loading" in first.json()["detail"]
    release.set()
    until(lambda: KEY in loader.failures, "the failure recorded with nobody waiting")
    assert loader.failures[KEY].reason == "the graph is broken"
    refused = post_image(server)
    assert refused.status_code == 503
    assert "the graph is broken" in refused.json()["detail"]
    assert len(calls) == 1  # within the backoff: no second load


def test_a_missing_artifact_never_shows_a_server_path(tmp_path: Path, serve: Callable[..., RunningServer]) -> None:
    home = make_home(tmp_path)
    for p in (home / "artifacts").rglob("*"):
        if p.is_file():
            p.unlink()
    server = serve(settings(home))
    r = post_image(server)
    assert r.status_code == 503
    text = (
        r.text
        + httpx.get(f"{server.url}/readyz", headers=server.headers).text
        + httpx.get(f"{server.url}/v1/models/tiny", headers=server.headers).text
    )
    assert str(tmp_path) not in text
    assert "/artifacts" not in text
    assert "missing" in r.json()["detail"]


@pytest.mark.parametrize("batch", [1, 4])
def test_a_model_with_a_fixed_batch_serves_16_concurrent_requests(
    tmp_path: Path, serve: Callable[..., RunningServer], batch: int
) -> None:
    server = serve(settings(make_home(tmp_path, batch=batch), workers=2))
    detail = httpx.get(f"{server.url}/v1/models/tiny", headers=server.headers).json()
    assert detail["versions"][0]["manifest"]["input"]["batch"] == batch
    rng = np.random.default_rng(batch)
    colours = [tuple(int(c) for c in rng.integers(0, 256, 3)) for _ in range(16)]
    gate = Gate(queue_of(server))  # hold the first batch so the others pile up and must be stacked

    async def send_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60, headers=server.headers) as client:
            calls = [
                client.post(
                    f"{PREDICT}?top_k=4", content=solid(c, size=(32, 32)), headers={"Content-Type": "image/png"}
                )
                for c in colours
            ]
            return list(await asyncio.gather(*calls))

    with ThreadPoolExecutor(1) as one:
        answers = one.submit(asyncio.run, send_all())
        assert gate.entered.wait(20)
        until(lambda: queue_of(server).depth >= 8, "requests queued behind the held batch")
        gate.release.set()
        responses = answers.result()
    for colour, r in zip(colours, responses, strict=True):
        assert r.status_code == 200, r.text
        got = {p["index"]: p["score"] for p in r.json()["results"][0]["predictions"]}
        np.testing.assert_allclose([got[i] for i in range(4)], expected_probabilities(colour), atol=2e-3)
    sizes = queue_of(server).stats.batch_sizes
    assert max(sizes) == batch  # stacked up to the fixed size, never past it
    assert sum(sizes) == 16


def test_a_worker_that_breaks_fails_only_its_batch_and_keeps_serving(
    tmp_path: Path, serve: Callable[..., RunningServer]
) -> None:
    class Injected(BaseException):
        """Not an Exception: escapes the per-item and per-batch handlers, as a bug would."""

    server = serve(settings(make_home(tmp_path)))
    queue = queue_of(server)
    run = queue._run_batch
    broken = threading.Event()

    def once(batch: np.ndarray) -> list[np.ndarray]:
        if not broken.is_set():
            broken.set()
            raise Injected
        return run(batch)

    queue._run_batch = once
    r = post_image(server)
    assert r.status_code == 500
    assert r.json()["code"] == "inference_failed"
    assert post_image(server).status_code == 200  # the same single worker carries on
    assert queue.stats.worker_errors == 1
    assert queue.stats.worker_restarts == 0


def test_an_unload_lets_queued_requests_finish(
    tmp_path: Path, serve: Callable[..., RunningServer], pool: ThreadPoolExecutor
) -> None:
    server = serve(settings(make_home(tmp_path)))
    engine = server.app.state.services.inference.engine
    queue = queue_of(server)
    gate = Gate(queue)
    requests: list[Future[httpx.Response]] = [pool.submit(post_image, server)]
    assert gate.entered.wait(20)
    requests += [pool.submit(post_image, server) for _ in range(3)]
    until(lambda: queue.depth == 3, "three requests queued behind the held one")
    unload = pool.submit(
        httpx.post, f"{server.url}/v2/repository/models/tiny/unload", headers=server.headers, timeout=30
    )
    until(lambda: engine.get(KEY) is None, "the unload took the model out of service")
    assert post_image(server).status_code == 200  # a new request loads it again meanwhile
    assert not unload.done()  # the unload waits for the queue it is draining
    gate.release.set()
    assert [f.result().status_code for f in requests] == [200] * 4
    assert unload.result().status_code == 200
    assert queue.stats.items == 4


def test_the_image_limit_is_one_answer_in_every_format(tmp_path: Path, serve: Callable[..., RunningServer]) -> None:
    server = serve(settings(make_home(tmp_path), server={"max_images_per_request": 2}))
    want = "the request has more than 2 images; the limit is 2 per request"
    files = [("file", (f"{i}.png", RED, "image/png")) for i in range(3)]
    multipart = httpx.post(f"{server.url}{PREDICT}", files=files, headers=server.headers)
    images = {"images": [{"data": base64.b64encode(RED).decode()}] * 3}
    as_json = httpx.post(f"{server.url}{PREDICT}", json=images, headers=server.headers)
    for r in (multipart, as_json):
        assert r.status_code == 400
        assert (r.json()["code"], r.json()["detail"]) == ("too_many_images", want)
    oip = httpx.post(
        f"{server.url}/v2/models/tiny/infer",
        json={"inputs": [{"name": "image", "datatype": "BYTES", "shape": [3], "data": ["a", "b", "c"]}]},
        headers=server.headers,
    )
    assert oip.status_code == 400
    assert oip.json() == {"error": want}
    with pytest.raises(grpc.RpcError) as info:
        grpc_infer(server, [RED] * 3)
    assert (info.value.code(), info.value.details()) == (grpc.StatusCode.INVALID_ARGUMENT, want)
    two = httpx.post(f"{server.url}{PREDICT}", files=files[:2], headers=server.headers)
    assert two.status_code == 200


def test_compressed_bodies_are_inflated_within_the_body_limit(
    tmp_path: Path, serve: Callable[..., RunningServer]
) -> None:
    server = serve(settings(make_home(tmp_path), server={"max_body_bytes": 200_000}))
    tensor = [0.5] * (3 * 32 * 32)
    infer = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, 32, 32], "data": tensor}]}
    for encoding, pack in (("gzip", gzip.compress), ("deflate", zlib.compress)):
        raw = httpx.post(
            f"{server.url}{PREDICT}",
            content=pack(RED),
            headers={**server.headers, "Content-Type": "image/png", "Content-Encoding": encoding},
        )
        assert raw.status_code == 200, raw.text
        assert raw.json()["results"][0]["predictions"][0]["label"] == "red"
        body = httpx.Request("POST", "/", json={"images": [{"data": base64.b64encode(RED).decode()}]}).content
        as_json = httpx.post(
            f"{server.url}{PREDICT}",
            content=pack(body),
            headers={**server.headers, "Content-Type": "application/json", "Content-Encoding": encoding},
        )
        assert as_json.status_code == 200, as_json.text
        form = httpx.Request("POST", "/", files=[("file", ("a.png", RED, "image/png"))])
        multipart = httpx.post(
            f"{server.url}{PREDICT}",
            content=pack(form.read()),
            headers={**server.headers, "Content-Type": form.headers["content-type"], "Content-Encoding": encoding},
        )
        assert multipart.status_code == 200, multipart.text
        oip = httpx.post(
            f"{server.url}/v2/models/tiny/infer",
            content=pack(httpx.Request("POST", "/", json=infer).content),
            headers={**server.headers, "Content-Type": "application/json", "Content-Encoding": encoding},
        )
        assert oip.status_code == 200, oip.text
        assert oip.json()["outputs"][0]["shape"] == [1, 4]
    bomb = gzip.compress(b"\0" * 5_000_000)  # 5 KB on the wire, 25 times the limit inflated
    assert len(bomb) < 200_000
    for path in (PREDICT, "/v2/models/tiny/infer"):
        r = httpx.post(
            f"{server.url}{path}",
            content=bomb,
            headers={**server.headers, "Content-Type": "application/json", "Content-Encoding": "gzip"},
        )
        assert r.status_code == 413, r.text
    truncated = httpx.post(
        f"{server.url}{PREDICT}",
        content=gzip.compress(RED)[:-12],
        headers={**server.headers, "Content-Type": "image/png", "Content-Encoding": "gzip"},
    )
    assert truncated.status_code == 400
    assert "truncated" in truncated.json()["detail"]
    unknown = httpx.post(
        f"{server.url}{PREDICT}",
        content=RED,
        headers={**server.headers, "Content-Type": "image/png", "Content-Encoding": "br"},
    )
    assert unknown.status_code == 400


def test_the_callers_request_id_comes_back(tmp_path: Path, serve: Callable[..., RunningServer]) -> None:
    server = serve(settings(make_home(tmp_path)))
    ok = post_image(server, headers={"X-Request-ID": "trace-42"})
    problem = httpx.post(
        f"{server.url}/v1/models/nope:predict", content=RED, headers={**server.headers, "X-Request-ID": "trace-43"}
    )
    oip = httpx.get(f"{server.url}/v2/models/tiny", headers={**server.headers, "X-Request-ID": "trace-44"})
    assert [r.headers["x-request-id"] for r in (ok, problem, oip)] == ["trace-42", "trace-43", "trace-44"]
    assert problem.json()["request_id"] == "trace-43"
    generated = post_image(server).headers["x-request-id"]
    assert generated
    assert generated != post_image(server).headers["x-request-id"]
    _, call = grpc_infer(server, [RED], metadata=(("x-request-id", "trace-45"),))
    assert ("x-request-id", "trace-45") in tuple(call.initial_metadata())
