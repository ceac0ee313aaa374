"""The SDK's dataset and training-job calls without a server: URLs, bodies and the quoting of
names, the archive upload (media type, streaming, length), the SSE parser, and how the event
stream resumes after a dropped connection (httpx's MockTransport stands in for the network)."""

from __future__ import annotations

import asyncio
import inspect
import io
import itertools
import json
import tarfile
import zipfile
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from imaas.client import AsyncClient, Client
from imaas.client.training import (
    CHUNK,
    MAX_RECONNECTS,
    SseEvent,
    SseParser,
    cancel_job_call,
    get_dataset_call,
    get_dataset_version_call,
    get_job_call,
    job_events_call,
    job_log_call,
    job_plot_call,
    list_datasets_call,
    list_jobs_call,
    train_call,
)
from imaas.errors import JobNotFound, ServerUnreachable, TransportError
from imaas.schemas.training import Augment, TrainConfig

BASE = "http://imaas.test:8000"
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
NEW_METHODS = [
    "push_dataset", "list_datasets", "get_dataset", "get_dataset_version", "train", "list_jobs", "get_job",
    "cancel_job", "job_log", "job_plot", "job_events", "wait_for_job",
]  # fmt: skip


# -- call builders ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("call", "method", "url"),
    [
        (list_datasets_call(), "GET", "/v1/datasets"),
        (get_dataset_call("digits"), "GET", "/v1/datasets/digits"),
        (get_dataset_version_call("digits", 3), "GET", "/v1/datasets/digits/versions/3"),
        (get_job_call("job_0123456789ab"), "GET", "/v1/jobs/job_0123456789ab"),
        (cancel_job_call("job_0123456789ab"), "POST", "/v1/jobs/job_0123456789ab/cancel"),
        (job_log_call("job_0123456789ab"), "GET", "/v1/jobs/job_0123456789ab/log"),
        (job_plot_call("job_0123456789ab", "curves"), "GET", "/v1/jobs/job_0123456789ab/plots/curves.png"),
        (train_call("digits@2", "digits-cnn"), "POST", "/v1/jobs"),
        (list_jobs_call(), "GET", "/v1/jobs"),
    ],
)
def test_each_call_goes_to_its_route(call: Any, method: str, url: str) -> None:
    assert (call.method, call.kwargs["url"]) == (method, url)


@pytest.mark.parametrize(
    ("name", "raw_path"),
    [
        ("../models", b"/v1/datasets/..%2Fmodels"),  # no slash: it stays one segment
        ("..", b"/v1/datasets/%2E%2E"),  # URL normalisation would make it /v1/
        (".", b"/v1/datasets/%2E"),
        ("a b?c#d", b"/v1/datasets/a%20b%3Fc%23d"),  # not a query, not a fragment
    ],
)
def test_a_name_is_one_path_segment_on_the_wire(name: str, raw_path: bytes) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"name": name, "versions": []})

    with Client(BASE, transport=httpx.MockTransport(handler)) as c:
        c.get_dataset(name)
    assert seen[0].url.raw_path == raw_path  # what httpx really sent, after its own normalisation


def test_a_job_id_cannot_reach_another_route() -> None:
    assert get_job_call("../keys").kwargs["url"] == "/v1/jobs/..%2Fkeys"
    assert job_plot_call("job_0123456789ab", "../x").kwargs["url"] == "/v1/jobs/job_0123456789ab/plots/..%2Fx.png"


def test_train_sends_only_the_fields_given() -> None:
    bare = train_call("digits", "digits-cnn").kwargs["json"]
    assert bare == {"dataset": "digits", "model": "digits-cnn"}  # no config: the server's defaults

    typed = train_call("digits", "m", TrainConfig(epochs=3, augment=Augment(rotation_deg=5)), "first try")
    assert typed.kwargs["json"] == {
        "dataset": "digits",
        "model": "m",
        "config": {"epochs": 3, "augment": {"rotation_deg": 5.0}},
        "description": "first try",
    }
    # a mapping goes as is, unchecked: the server names the bad field
    loose = train_call("digits", "m", {"epoch": 0, "early_stopping": {"patience": 2}}).kwargs["json"]
    assert loose["config"] == {"epoch": 0, "early_stopping": {"patience": 2}}
    assert train_call("digits", "m", {}).kwargs["json"]["config"] == {}


def test_list_jobs_repeats_the_state_parameter() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"jobs": []})

    with Client(BASE, transport=httpx.MockTransport(handler)) as c:
        assert c.list_jobs(["queued", "running"], limit=5) == []
        c.list_jobs()
    assert seen[0].url.params.get_list("state") == ["queued", "running"]
    assert seen[0].url.params["limit"] == "5"
    assert "state" not in seen[1].url.params


# -- uploads ---------------------------------------------------------------------------------------
def _zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("a/1.png", b"x" * 100)
    return buf.getvalue()


def _tar_bytes() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        info = tarfile.TarInfo("a/1.png")
        info.size = 3
        t.addfile(info, io.BytesIO(b"abc"))
    return buf.getvalue()


def _gz_tar_bytes() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        t.addfile(tarfile.TarInfo("empty"), io.BytesIO(b""))
    return buf.getvalue()


def _push_answer(created: bool = True) -> dict[str, Any]:
    return {
        "dataset": "digits", "version": 1, "ref": "digits@1", "sha256": "0" * 64, "size_bytes": 10,
        "created_at": NOW.isoformat(), "summary": {}, "report": {"kept": 1}, "created": created,
    }  # fmt: skip


class Recorder:
    """A MockTransport handler that keeps each request with its body read in full."""

    def __init__(self, status: int = 201) -> None:
        self.status = status
        self.requests: list[httpx.Request] = []
        self.bodies: list[bytes] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.bodies.append(request.read())
        return httpx.Response(self.status, json=_push_answer(self.status == 201))


@pytest.mark.parametrize(
    ("make", "ctype"),
    [
        (_zip_bytes, "application/zip"),
        (_tar_bytes, "application/x-tar"),
        (_gz_tar_bytes, "application/gzip"),
        (lambda: b"not an archive at all", "application/octet-stream"),
    ],
)
def test_the_upload_is_labelled_by_its_bytes_not_its_name(
    make: Callable[[], bytes], ctype: str, tmp_path: Path
) -> None:
    data = make()
    path = tmp_path / "misleading.zip"
    path.write_bytes(data)
    rec = Recorder()
    with Client(BASE, transport=httpx.MockTransport(rec)) as c:
        c.push_dataset("digits", data)
        c.push_dataset("digits", path)
    for request, body in zip(rec.requests, rec.bodies, strict=True):
        assert request.headers["content-type"] == ctype
        assert request.headers["content-length"] == str(len(data))
        assert body == data


class CountingFile(io.BytesIO):
    """A binary file that remembers how much each read asked for."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.asked: list[int] = []

    def read(self, size: int | None = -1, /) -> bytes:
        self.asked.append(-1 if size is None else size)
        return super().read(size)


def test_a_file_is_streamed_in_chunks_with_its_length_and_the_query(tmp_path: Path) -> None:
    data = _zip_bytes() + bytes(range(256)) * (CHUNK * 3 // 256 + 7)  # a bit over 3 MiB
    f = CountingFile(data)
    f.seek(0)
    rec = Recorder(status=200)
    with Client(BASE, transport=httpx.MockTransport(rec), timeout=5) as c:
        pushed = c.push_dataset("digits", f, split=(1 / 3, 1 / 3, 1 / 3), seed=7, description="third try")
    assert pushed.created is False  # 200: the same version again
    assert pushed.ref == "digits@1"
    assert rec.bodies[0] == data
    assert all(0 < n <= CHUNK for n in f.asked), f.asked  # never one read of the whole file
    assert not f.closed  # the caller's file stays the caller's
    request = rec.requests[0]
    assert request.headers["content-length"] == str(len(data))
    assert request.url.path == "/v1/datasets/digits"
    assert dict(request.url.params) == {"split": "0.333333,0.333333,0.333333", "seed": "7", "description": "third try"}
    timeout = request.extensions["timeout"]
    assert timeout["read"] >= 600  # cleaning takes minutes
    assert timeout["connect"] == 5  # connecting does not


class Pipe(io.RawIOBase):
    """A file that cannot seek, as a pipe: its length is unknown before it is read."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        chunk = self._data.read(len(b))
        b[: len(chunk)] = chunk
        return len(chunk)


def test_an_unseekable_file_goes_chunked_and_a_text_file_is_refused() -> None:
    data = _tar_bytes()
    rec = Recorder()
    with Client(BASE, transport=httpx.MockTransport(rec)) as c:
        c.push_dataset("digits", io.BufferedReader(Pipe(data)))
        with pytest.raises(TypeError, match="binary"):
            c.push_dataset("digits", io.StringIO("a,b"))  # type: ignore[arg-type]
    request = rec.requests[0]
    assert "content-length" not in request.headers
    assert request.headers["transfer-encoding"] == "chunked"
    assert request.headers["content-type"] == "application/x-tar"
    assert rec.bodies[0] == data


def test_the_async_client_streams_a_path_the_same_way(tmp_path: Path) -> None:
    data = _zip_bytes() * 1000
    path = tmp_path / "d.zip"
    path.write_bytes(data)
    rec = Recorder()

    async def main() -> None:
        async with AsyncClient(BASE, transport=httpx.MockTransport(rec)) as c:
            pushed = await c.push_dataset("digits", path, seed=3)
            assert pushed.created is True

    asyncio.run(main())
    assert rec.bodies[0] == data
    assert rec.requests[0].headers["content-type"] == "application/zip"
    assert dict(rec.requests[0].url.params) == {"split": "0.8,0.1,0.1", "seed": "3"}


# -- the SSE parser --------------------------------------------------------------------------------
def _parse(lines: list[str]) -> list[SseEvent]:
    parser = SseParser()
    return [e for e in map(parser.feed, lines) if e is not None]


def test_sse_lines_become_events() -> None:
    lines = [
        ": ping - 2026-01-02 03:04:05",  # the server's keep-alive comment
        "",
        "event: state",
        "id: 1",
        'data: {"a": 1}',
        "",
        "event: log",
        "data:first",  # no space after the colon
        "data:  second",  # only the first space is dropped
        "retry: 1000",  # a field the SDK ignores
        "unknown field",
        "",
        'data: {"b": 2}',  # no event name, no id: the type is message and the id stays the last one
        "",
        "",
    ]
    assert _parse(lines) == [
        SseEvent("state", '{"a": 1}', "1"),
        SseEvent("log", "first\n second", "1"),
        SseEvent("message", '{"b": 2}', "1"),
    ]


def test_an_event_without_data_is_not_delivered_and_does_not_leak_its_name() -> None:
    assert _parse(["event: state", "id: 4", "", 'data: "x"', ""]) == [SseEvent("message", '"x"', "4")]


# -- following a job -------------------------------------------------------------------------------
def _event(seq: int, kind: str = "progress", **data: Any) -> dict[str, Any]:
    return {"seq": seq, "at": NOW.isoformat(), "kind": kind, "data": data}


def _sse(event: dict[str, Any]) -> bytes:
    # as sse-starlette writes it: CRLF line ends, a blank line after each event
    return f"event: {event['kind']}\r\nid: {event['seq']}\r\ndata: {json.dumps(event)}\r\n\r\n".encode()


class Stream(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A response body of ``parts`` (an iterable: it may never end), then a dropped
    connection when ``drop`` is set."""

    def __init__(self, parts: Iterable[bytes], drop: bool) -> None:
        self.parts, self.drop = parts, drop

    def __iter__(self) -> Iterator[bytes]:
        yield from self.parts
        if self.drop:
            raise httpx.ReadError("connection reset by peer")

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for part in self.parts:
            await asyncio.sleep(0)  # a network read gives the loop a turn
            yield part
        if self.drop:
            raise httpx.ReadError("connection reset by peer")


FINAL = _event(5, "state", state="succeeded")
HISTORY = [
    _event(1, "state", state="running"), _event(2), _event(3, "epoch", epoch=1), _event(4, "log", message="m"), FINAL,
]  # fmt: skip


class EventServer:
    """Serves ``HISTORY`` after the cursor a request names (``Last-Event-ID`` over ``after``),
    dropping each connection once it has sent ``per_connection`` events."""

    def __init__(self, per_connection: int, history: list[dict[str, Any]] = HISTORY) -> None:
        self.per_connection = per_connection
        self.history = history
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        cursor = int(request.headers.get("last-event-id") or request.url.params["after"])
        rest = [e for e in self.history if e["seq"] > cursor]
        sent = rest[: self.per_connection]
        body = [b": ping\r\n\r\n", *map(_sse, sent)]
        stream = Stream(body, drop=sent != rest)
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=stream)


def test_a_reconnect_names_the_last_event_seen() -> None:
    first = job_events_call("job_0123456789ab", 7, None, httpx.Timeout(5.0))
    again = job_events_call("job_0123456789ab", 7, 12, httpx.Timeout(5.0))
    assert first.kwargs["url"] == "/v1/jobs/job_0123456789ab/events"
    assert first.kwargs["params"] == again.kwargs["params"] == {"after": 7}
    assert "Last-Event-ID" not in first.kwargs["headers"]
    assert again.kwargs["headers"]["Last-Event-ID"] == "12"  # the server prefers it to after


def test_a_dropped_stream_resumes_from_the_last_event_seen() -> None:
    server = EventServer(per_connection=2)
    with Client(BASE, transport=httpx.MockTransport(server)) as c:
        seqs = [e.seq for e in c.job_events("job_0123456789ab", after=0)]
    assert seqs == [1, 2, 3, 4, 5]  # nothing missed, nothing twice
    assert [r.headers.get("last-event-id") for r in server.requests] == [None, "2", "4"]
    assert all(r.headers["accept"] == "text/event-stream" for r in server.requests)
    assert server.requests[0].extensions["timeout"]["read"] == 60  # the server pings every 15 s


def test_the_async_client_resumes_the_same_way() -> None:
    server = EventServer(per_connection=3)

    async def main() -> list[int]:
        async with AsyncClient(BASE, transport=httpx.MockTransport(server)) as c:
            return [e.seq async for e in c.job_events("job_0123456789ab", after=1)]

    assert asyncio.run(main()) == [2, 3, 4, 5]
    assert [r.headers.get("last-event-id") for r in server.requests] == [None, "4"]
    assert server.requests[0].url.params["after"] == "1"


def test_a_stream_that_keeps_dropping_without_events_is_given_up() -> None:
    server = EventServer(per_connection=0)  # every connection drops before its first event
    with Client(BASE, transport=httpx.MockTransport(server)) as c, pytest.raises(TransportError, match="failed"):
        list(c.job_events("job_0123456789ab"))
    assert len(server.requests) == 1 + MAX_RECONNECTS


def test_a_finished_job_with_nothing_after_the_cursor_ends_at_once() -> None:
    server = EventServer(per_connection=10)
    with Client(BASE, transport=httpx.MockTransport(server)) as c:
        assert list(c.job_events("job_0123456789ab", after=5)) == []
    assert len(server.requests) == 1  # the server closed cleanly: no reconnect


def test_no_server_and_no_job_are_raised_at_once() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with Client(BASE, transport=httpx.MockTransport(refuse)) as c, pytest.raises(ServerUnreachable):
        list(c.job_events("job_0123456789ab"))

    def missing(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"code": "job_not_found", "detail": "no job with id 'job_x'"})

    with Client(BASE, transport=httpx.MockTransport(missing)) as c, pytest.raises(JobNotFound, match="job_x"):
        list(c.job_events("job_x"))


def _job(state: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": "job_0123456789ab", "kind": "train", "state": state, "model": "m", "dataset": "d@1", "config": {},
        "created_at": NOW.isoformat(), **fields,
    }  # fmt: skip


def test_wait_for_job_follows_the_stream_then_reads_the_job() -> None:
    events = EventServer(per_connection=10)
    states = iter(["running", "succeeded"])

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            return events(request)
        return httpx.Response(200, json=_job(next(states), result={"version": 4}))

    with Client(BASE, transport=httpx.MockTransport(handler)) as c:
        job = c.wait_for_job("job_0123456789ab")
    assert (job.state, job.result["version"]) == ("succeeded", 4)
    assert len(events.requests) == 1


def test_wait_for_job_gives_up_after_its_timeout() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            return httpx.Response(200, stream=Stream(itertools.repeat(b": ping\r\n\r\n"), drop=False))  # pings forever
        return httpx.Response(200, json=_job("running"))

    with Client(BASE, transport=httpx.MockTransport(handler)) as c, pytest.raises(TimeoutError, match="job_0123"):
        c.wait_for_job("job_0123456789ab", timeout=0)

    async def main() -> None:
        async with AsyncClient(BASE, transport=httpx.MockTransport(handler)) as c:
            await c.wait_for_job("job_0123456789ab", timeout=0)

    with pytest.raises(TimeoutError, match="job_0123"):
        asyncio.run(main())


def test_job_log_and_plot_return_the_body() -> None:
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 20

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith(".png"):
            return httpx.Response(200, content=png, headers={"content-type": "image/png"})
        return httpx.Response(200, text="line 1\nline 2\n")

    with Client(BASE, transport=httpx.MockTransport(handler)) as c:
        assert c.job_log("job_0123456789ab") == "line 1\nline 2\n"
        assert c.job_plot("job_0123456789ab", "confusion") == png


def test_both_clients_have_the_new_methods_with_the_same_parameters() -> None:
    for name in NEW_METHODS:
        sync, twin = getattr(Client, name), getattr(AsyncClient, name)
        assert list(inspect.signature(sync).parameters.values()) == list(inspect.signature(twin).parameters.values())
        assert inspect.iscoroutinefunction(twin) or inspect.isasyncgenfunction(twin), name
    assert inspect.isasyncgenfunction(AsyncClient.job_events)  # async for event in c.job_events(...)
