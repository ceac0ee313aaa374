"""The SDK without a server: API parity of the two clients, media-type sniffing, and how
transport failures and problems become ``imaas.errors`` (httpx's MockTransport stands in
for the network)."""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from imaas.client import AsyncClient, Client
from imaas.client.common import load_image, sniff_type
from imaas.errors import (
    Forbidden,
    ImaasError,
    InsufficientScope,
    InvalidCredentials,
    KeyExpired,
    KeyNotFound,
    KeyRevoked,
    LimitExceeded,
    MalformedCredentials,
    MissingCredentials,
    ModelForbidden,
    NotFound,
    Overloaded,
    QuotaExceeded,
    RateLimited,
    ServerTimeout,
    ServerUnreachable,
    TransportError,
    Unauthorized,
)
from imaas.schemas.keys import AuditPage, CreatedKeyInfo, KeyInfo, KeyLimitsInfo, UsageReport

BASE = "http://imaas.test:8000"

# The one public name that differs, as in httpx: the async client closes with ``aclose``.
ASYNC_NAME = {"close": "aclose"}


def _public_methods(cls: type) -> dict[str, Callable[..., object]]:
    return {name: fn for name, fn in vars(cls).items() if not name.startswith("_") and inspect.isfunction(fn)}


def _without_self(fn: Callable[..., object]) -> inspect.Signature:
    sig = inspect.signature(fn)
    return sig.replace(parameters=list(sig.parameters.values())[1:])


def test_async_client_has_every_client_method_with_the_same_signature() -> None:
    sync, asynchronous = _public_methods(Client), _public_methods(AsyncClient)
    assert {ASYNC_NAME.get(name, name) for name in sync} == set(asynchronous)
    for name, fn in sync.items():
        twin = asynchronous[ASYNC_NAME.get(name, name)]
        if inspect.isasyncgenfunction(twin):  # a stream: Iterator[X] in Client, AsyncIterator[X] here
            assert inspect.isgeneratorfunction(fn), f"Client.{name} should be a generator like its twin"
            assert list(_without_self(twin).parameters.values()) == list(_without_self(fn).parameters.values())
            continue
        assert inspect.iscoroutinefunction(twin), f"AsyncClient.{twin.__name__} is not a coroutine"
        assert _without_self(twin) == _without_self(fn), f"{name}: {_without_self(twin)} != {_without_self(fn)}"


def test_constructors_take_the_same_parameters() -> None:
    def shape(cls: type) -> list[tuple[str, object, object]]:
        return [(p.name, p.kind, p.default) for p in _without_self(cls.__init__).parameters.values()]  # type: ignore[misc]

    assert shape(AsyncClient) == shape(Client)


RIFF_WEBP = b"RIFF\x24\x00\x00\x00WEBPVP8 "


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "image/jpeg"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "image/png"),
        (b"GIF89a", "image/gif"),
        (b"BM\x36\x00", "image/bmp"),
        (b"II*\x00\x08\x00", "image/tiff"),
        (b"MM\x00*\x00\x00", "image/tiff"),
        (RIFF_WEBP, "image/webp"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", "application/octet-stream"),  # RIFF, but audio
        (b"meeting notes: ship it", "application/octet-stream"),
        (b"", "application/octet-stream"),
    ],
)
def test_sniff_type_goes_by_magic_bytes(data: bytes, expected: str) -> None:
    assert sniff_type(data) == expected


def test_file_name_does_not_decide_the_media_type(tmp_path: Path) -> None:
    notes, fake_jpeg, webp = tmp_path / "notes.txt", tmp_path / "cat.jpg", tmp_path / "photo.bin"
    notes.write_bytes(b"meeting notes")
    fake_jpeg.write_bytes(b"not a jpeg at all")
    webp.write_bytes(RIFF_WEBP)
    assert load_image(notes).content_type == "application/octet-stream"
    assert load_image(fake_jpeg).content_type == "application/octet-stream"
    assert load_image(webp).content_type == "image/webp"
    assert load_image(webp).filename == "photo.bin"


def _failing(exc_type: type[httpx.TransportError], message: str) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc_type(message, request=request)

    return httpx.MockTransport(handler)


TRANSLATIONS = [
    (httpx.ConnectError, "[Errno 111] Connection refused", ServerUnreachable, f"nothing answers at {BASE}"),
    (httpx.ConnectTimeout, "timed out", ServerUnreachable, f"nothing answers at {BASE}"),
    (httpx.ReadTimeout, "timed out", ServerTimeout, f"{BASE} sent no answer to GET /v1/models/m within 2.5 s"),
    (
        httpx.RemoteProtocolError,
        "Server disconnected without sending a response.",
        TransportError,
        f"GET /v1/models/m to {BASE} failed: Server disconnected without sending a response.",
    ),
]


@pytest.mark.parametrize(("httpx_error", "message", "expected", "detail"), TRANSLATIONS)
def test_client_raises_transport_failures_as_imaas_errors(
    httpx_error: type[httpx.TransportError], message: str, expected: type[TransportError], detail: str
) -> None:
    with Client(BASE, timeout=2.5, transport=_failing(httpx_error, message)) as c, pytest.raises(ImaasError) as info:
        c.get_model("m")
    assert type(info.value) is expected
    assert info.value.detail == detail
    assert info.value.extra == {"url": BASE, "reason": message}
    assert info.value.__cause__ is None  # one error in a traceback, not "during handling of ... another"
    assert info.value.__suppress_context__


@pytest.mark.parametrize(("httpx_error", "message", "expected", "detail"), TRANSLATIONS)
async def test_async_client_raises_transport_failures_as_imaas_errors(
    httpx_error: type[httpx.TransportError], message: str, expected: type[TransportError], detail: str
) -> None:
    async with AsyncClient(BASE, timeout=2.5, transport=_failing(httpx_error, message)) as c:
        with pytest.raises(ImaasError) as info:
            await c.get_model("m")
    assert type(info.value) is expected
    assert info.value.detail == detail
    assert info.value.__cause__ is None


def test_a_url_without_scheme_is_a_transport_error() -> None:
    with Client("127.0.0.1:8000") as c, pytest.raises(TransportError) as info:
        c.list_models()
    assert type(info.value) is TransportError
    assert "'http://' or 'https://'" in info.value.detail


def test_ready_is_false_only_when_nothing_answers() -> None:
    with Client(BASE, transport=_failing(httpx.ConnectError, "refused")) as c:
        assert c.ready() is False
    with Client(BASE, transport=_failing(httpx.ReadTimeout, "timed out")) as c, pytest.raises(ServerTimeout):
        c.ready()
    with Client(BASE, transport=httpx.MockTransport(lambda r: httpx.Response(503))) as c:
        assert c.ready() is False
    with Client(BASE, transport=httpx.MockTransport(lambda r: httpx.Response(200))) as c:
        assert c.ready() is True


async def test_async_ready_is_false_only_when_nothing_answers() -> None:
    async with AsyncClient(BASE, transport=_failing(httpx.ConnectError, "refused")) as c:
        assert await c.ready() is False
    async with AsyncClient(BASE, transport=_failing(httpx.ReadTimeout, "timed out")) as c:
        with pytest.raises(ServerTimeout):
            await c.ready()
    async with AsyncClient(BASE, transport=httpx.MockTransport(lambda r: httpx.Response(200))) as c:
        assert await c.ready() is True


def test_retry_after_reaches_the_error() -> None:
    problem = {"code": "overloaded", "detail": "queue full", "request_id": "r1"}

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, json=problem, headers={"Retry-After": "3"})

    with Client(BASE, transport=httpx.MockTransport(handler)) as c, pytest.raises(Overloaded) as info:
        c.predict("m", b"\xff\xd8\xff")
    assert info.value.retry_after == 3.0
    assert info.value.extra["status"] == 429


# -- API keys ----------------------------------------------------------------------------------
KEY = "imaas_ABCDEFGHIJKL_" + "s" * 43


class Recorder:
    """A MockTransport handler that records each request and answers with ``reply``."""

    def __init__(self, reply: httpx.Response | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self.reply = reply

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.reply or httpx.Response(200, json=MODEL_DETAIL)


MODEL_DETAIL = {"name": "m", "task": "classification", "versions": [], "aliases": {}, "routes": {}}


def test_the_api_key_goes_with_every_request_and_nowhere_else() -> None:
    seen = Recorder(httpx.Response(200, json={"models": [], "next": None}))
    with Client(BASE, api_key=f"  {KEY}\n", transport=httpx.MockTransport(seen)) as c:
        c.list_models()
        c.ready()
        assert KEY not in repr(c)
        assert repr(c) == f"Client({BASE!r}, api_key=***)"
    assert [r.headers["authorization"] for r in seen.requests] == [f"Bearer {KEY}"] * 2  # read from a file: stripped
    for no_key in (None, "", "   "):
        bare = Recorder(httpx.Response(200, json={"models": [], "next": None}))
        with Client(BASE, api_key=no_key, transport=httpx.MockTransport(bare)) as c:
            c.list_models()
            assert repr(c) == f"Client({BASE!r})"
        assert "authorization" not in bare.requests[0].headers


async def test_the_async_client_sends_the_api_key() -> None:
    seen = Recorder(httpx.Response(200, json={"models": [], "next": None}))
    async with AsyncClient(BASE, api_key=KEY, transport=httpx.MockTransport(seen)) as c:
        await c.list_models()
        assert KEY not in repr(c)
    assert seen.requests[0].headers["authorization"] == f"Bearer {KEY}"


@pytest.mark.parametrize("bad", [f"{KEY} extra", f"{KEY}\r\nX-Evil: 1", f"{KEY}\u00e9"])
def test_a_key_no_header_can_carry_is_refused_without_quoting_it(bad: str) -> None:
    for cls in (Client, AsyncClient):
        with pytest.raises(ValueError, match="api_key") as info:
            cls(BASE, api_key=bad)
        assert KEY not in str(info.value)


def test_a_transport_error_never_quotes_the_key() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.LocalProtocolError(f"Illegal header value b'Bearer {KEY}'", request=request)

    with Client(BASE, api_key=KEY, transport=httpx.MockTransport(handler)) as c, pytest.raises(TransportError) as info:
        c.list_models()
    assert KEY not in info.value.detail
    assert KEY not in str(info.value.extra)
    assert "Bearer ***" in info.value.detail


AUTH_PROBLEMS = [
    (401, "missing_credentials", MissingCredentials, Unauthorized),
    (401, "malformed_credentials", MalformedCredentials, Unauthorized),
    (401, "invalid_credentials", InvalidCredentials, Unauthorized),
    (401, "key_revoked", KeyRevoked, Unauthorized),
    (401, "key_expired", KeyExpired, Unauthorized),
    (403, "insufficient_scope", InsufficientScope, Forbidden),
    (403, "model_forbidden", ModelForbidden, Forbidden),
    (429, "rate_limited", RateLimited, LimitExceeded),
    (429, "quota_exceeded", QuotaExceeded, LimitExceeded),
    (404, "key_not_found", KeyNotFound, NotFound),
]


@pytest.mark.parametrize(("status", "code", "cls", "family"), AUTH_PROBLEMS)
def test_authentication_problems_are_raised_as_their_classes(
    status: int, code: str, cls: type[ImaasError], family: type[ImaasError]
) -> None:
    problem = {"code": code, "detail": f"the server says {code}", "status": status, "request_id": "r9"}
    headers = {"Retry-After": "7", "WWW-Authenticate": "Bearer"}
    reply = httpx.Response(status, json=problem, headers=headers, request=httpx.Request("GET", BASE))
    with Client(BASE, api_key=KEY, transport=httpx.MockTransport(lambda r: reply)) as c, pytest.raises(family) as info:
        c.get_key("ABCDEFGHIJKL")
    assert type(info.value) is cls
    assert (info.value.code, info.value.detail) == (code, f"the server says {code}")
    assert info.value.extra["status"] == status
    assert info.value.retry_after == 7.0
    assert KEY not in str(info.value)
    assert KEY not in repr(info.value.extra)


KEY_INFO = {
    "id": "ABCDEFGHIJKL",
    "name": "ci",
    "scopes": ["infer"],
    "models": ["team-a-*"],
    "limits": {"rps": 5.0, "burst": None, "images_per_day": None, "images_per_month": 1000, "free_images_per_month": 0},
    "created_at": "2026-12-01T10:00:00Z",
}
CREATED = {"key": KEY_INFO, "secret": KEY}


def _sync_and_async_calls() -> list[tuple[str, Callable[[Any], Any], str, str, Any, dict[str, str], Any]]:
    """(name, call, method, path, json body or None, query, answer) for each key, usage and audit call."""
    when = datetime(2027, 1, 1, 12, 0, tzinfo=UTC)
    usage = {"rows": [], "total": {"requests": 0, "images": 0, "billable_images": 0, "cost": "0"}}
    audit: dict[str, Any] = {"entries": [], "next": None}
    return [
        (
            "create_key",
            lambda c: c.create_key(
                "ci",
                ["infer"],
                models=["team-a-*"],
                expires_at=when,
                limits=KeyLimitsInfo(rps=5, images_per_month=1000),
            ),
            "POST",
            "/v1/keys",
            {
                "name": "ci",
                "scopes": ["infer"],
                "models": ["team-a-*"],
                "expires_at": "2027-01-01T12:00:00Z",
                "limits": {"rps": 5.0, "images_per_month": 1000, "free_images_per_month": 0},
            },
            {},
            CREATED,
        ),
        (
            "create_key minimal",
            lambda c: c.create_key("ci", ["infer"]),
            "POST",
            "/v1/keys",
            {"name": "ci", "scopes": ["infer"]},
            {},
            CREATED,
        ),
        ("list_keys", lambda c: c.list_keys(), "GET", "/v1/keys", None, {}, {"keys": [KEY_INFO]}),
        ("get_key", lambda c: c.get_key("ABCDEFGHIJKL"), "GET", "/v1/keys/ABCDEFGHIJKL", None, {}, KEY_INFO),
        ("get_key odd id", lambda c: c.get_key("../models"), "GET", "/v1/keys/..%2Fmodels", None, {}, KEY_INFO),
        ("revoke_key", lambda c: c.revoke_key("ABCDEFGHIJKL"), "DELETE", "/v1/keys/ABCDEFGHIJKL", None, {}, KEY_INFO),
        (
            "rotate_key",
            lambda c: c.rotate_key("ABCDEFGHIJKL", grace_s=3600),
            "POST",
            "/v1/keys/ABCDEFGHIJKL/rotate",
            {"grace_s": 3600},
            {},
            CREATED,
        ),
        ("usage", lambda c: c.usage(), "GET", "/v1/usage", None, {}, usage),
        (
            "usage filtered",
            lambda c: c.usage(key_id="ABCDEFGHIJKL", model="m", start=date(2026, 12, 1), end=when),
            "GET",
            "/v1/usage",
            None,
            {"key_id": "ABCDEFGHIJKL", "model": "m", "start": "2026-12-01", "end": "2027-01-01"},
            usage,
        ),
        ("audit", lambda c: c.audit(), "GET", "/v1/audit", None, {"limit": "100"}, audit),
        (
            "audit filtered",
            lambda c: c.audit(limit=5, before=40, key_id="ABCDEFGHIJKL", action="key.create", since=when),
            "GET",
            "/v1/audit",
            None,
            {
                "limit": "5",
                "before": "40",
                "key_id": "ABCDEFGHIJKL",
                "action": "key.create",
                "since": "2027-01-01T12:00:00+00:00",
            },
            audit,
        ),
    ]


KEY_CALLS = _sync_and_async_calls()


@pytest.mark.parametrize(
    ("name", "call", "method", "path", "body", "query", "answer"), KEY_CALLS, ids=[c[0] for c in KEY_CALLS]
)
async def test_key_usage_and_audit_calls_send_and_parse(
    name: str, call: Callable[[Any], Any], method: str, path: str, body: Any, query: dict[str, str], answer: Any
) -> None:
    status = 201 if method == "POST" else 200
    sync_seen, async_seen = Recorder(httpx.Response(status, json=answer)), Recorder(httpx.Response(status, json=answer))
    with Client(BASE, api_key=KEY, transport=httpx.MockTransport(sync_seen)) as c:
        got = call(c)
    async with AsyncClient(BASE, api_key=KEY, transport=httpx.MockTransport(async_seen)) as ac:
        assert await call(ac) == got  # the same call and answer from both clients
    for request in (sync_seen.requests[0], async_seen.requests[0]):
        assert (request.method, request.url.raw_path.split(b"?")[0].decode()) == (method, path)
        assert dict(request.url.params) == query
        assert (json.loads(request.content) if request.content else None) == body
    if name == "list_keys":
        assert [k.id for k in got] == ["ABCDEFGHIJKL"]
    elif isinstance(got, CreatedKeyInfo):
        assert (got.secret, got.key.limits.images_per_month) == (KEY, 1000)
        assert KEY not in repr(got.key)
    elif isinstance(got, KeyInfo):
        assert (got.id, got.models) == ("ABCDEFGHIJKL", ["team-a-*"])
    else:
        assert isinstance(got, UsageReport | AuditPage)


def test_the_key_comes_from_imaas_api_key_unless_given(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        return httpx.Response(200, json={"models": [], "next": None})

    monkeypatch.setenv("IMAAS_API_KEY", "imaas_fromtheenvir_secret\n")
    with Client(BASE, transport=httpx.MockTransport(handler)) as c:
        c.list_models()
    with Client(BASE, api_key="imaas_given_secret", transport=httpx.MockTransport(handler)) as c:
        c.list_models()
    monkeypatch.delenv("IMAAS_API_KEY")
    with Client(BASE, transport=httpx.MockTransport(handler)) as c:
        c.list_models()
    assert seen == ["Bearer imaas_fromtheenvir_secret", "Bearer imaas_given_secret", None]
