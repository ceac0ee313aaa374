"""The SDK without a server: API parity of the two clients, media-type sniffing, and how
transport failures and problems become ``imaas.errors`` (httpx's MockTransport stands in
for the network)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from imaas.client import AsyncClient, Client
from imaas.client.common import load_image, sniff_type
from imaas.errors import ImaasError, Overloaded, ServerTimeout, ServerUnreachable, TransportError

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
