"""Request building, transport-error translation and response decoding shared by both clients."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from imaas.errors import ImaasError, ServerTimeout, ServerUnreachable, TransportError, error_for_code

ImageSource = str | Path | bytes
DEFAULT_URL = "http://127.0.0.1:8000"

# Magic bytes of the image formats the server decodes. Anything else is sent as
# application/octet-stream so the server sniffs it and answers as it does to curl; a media
# type guessed from the file name (text/plain for notes.txt) would earn a 415 instead.
_MAGIC: list[tuple[str, dict[int, bytes]]] = [  # media type, {offset: bytes found there}
    ("image/jpeg", {0: b"\xff\xd8\xff"}),
    ("image/png", {0: b"\x89PNG\r\n\x1a\n"}),
    ("image/gif", {0: b"GIF8"}),
    ("image/bmp", {0: b"BM"}),
    ("image/tiff", {0: b"II*\x00"}),
    ("image/tiff", {0: b"MM\x00*"}),
    ("image/webp", {0: b"RIFF", 8: b"WEBP"}),  # a RIFF container whose form type is WEBP
]
OCTET_STREAM = "application/octet-stream"
# What an API key may hold: the visible ASCII characters an HTTP header value carries as is
# (an imaas key is ``imaas_`` + base32 + ``_`` + urlsafe base64, well inside this).
_KEY_TEXT = re.compile(r"[\x21-\x7e]+")


API_KEY_ENV = "IMAAS_API_KEY"


def auth_headers(api_key: str | None) -> dict[str, str]:
    """The ``Authorization`` header for ``api_key``, or for ``$IMAAS_API_KEY`` when it is
    None (no header for an empty key or none at all).

    Whitespace around the key (a newline read from a key file) is dropped. A key with any
    other character is refused here, with a message that does not repeat it: sent as is, the
    HTTP layer's own error would quote the whole header, secret included.

    Example::

        auth_headers("imaas_ABC_xyz")  # {"Authorization": "Bearer imaas_ABC_xyz"}
    """
    if api_key is None:
        api_key = os.environ.get(API_KEY_ENV)
    if api_key is None or not api_key.strip():
        return {}
    key = api_key.strip()
    if not _KEY_TEXT.fullmatch(key):
        raise ValueError("api_key: an API key is visible ASCII characters only (no spaces or control characters)")
    return {"Authorization": f"Bearer {key}"}


def _without_secret(text: str, http: httpx.Client | httpx.AsyncClient) -> str:
    """``text`` with the client's API key masked, should a library's message ever quote it."""
    scheme, _, secret = http.headers.get("authorization", "").partition(" ")
    return text.replace(secret, "***") if scheme == "Bearer" and secret else text


@dataclass(frozen=True)
class EncodedImage:
    """Bytes of an image file with its name and media type."""

    data: bytes
    filename: str
    content_type: str


def path_segment(text: str) -> str:
    """``text`` as one URL path segment: a mistyped name must not reach another route.

    ``/`` is quoted, and so are ``.`` and ``..``, which URL normalisation would otherwise
    resolve (``/v1/datasets/..`` is ``/v1/``).
    """
    quoted = quote(text, safe="")
    return quoted.replace(".", "%2E") if quoted in (".", "..") else quoted


def load_image(source: ImageSource) -> EncodedImage:
    """Read an image from a path or take raw bytes, with the media type its bytes show."""
    if isinstance(source, bytes):
        data, name = source, "image"
    else:
        path = Path(source)
        data, name = path.read_bytes(), path.name
    return EncodedImage(data, name, sniff_type(data))


def sniff_type(data: bytes) -> str:
    """The image media type ``data``'s magic bytes show, else ``application/octet-stream``.

    The file name is deliberately ignored: the server decides what the bytes are, so a
    file gets the same answer from the SDK, the CLI and curl.

    Example::

        sniff_type(b"\x89PNG\r\n\x1a\n...")  # "image/png"
        sniff_type(b"meeting notes")        # "application/octet-stream"
    """
    for ctype, parts in _MAGIC:
        if all(data[offset : offset + len(magic)] == magic for offset, magic in parts.items()):
            return ctype
    return OCTET_STREAM


@contextmanager
def transport_errors(http: httpx.Client | httpx.AsyncClient) -> Iterator[None]:
    """Raise httpx's transport failures inside the block as ``imaas.errors`` classes.

    This is where httpx enters the SDK, so callers catch one tree (``ImaasError`` >
    ``TransportError`` > ``ServerUnreachable``/``ServerTimeout``) whether the server said no
    or never answered. The httpx exception stays reachable as ``__context__`` but is not
    chained, so a traceback shows one error, not two.

    Example::

        with transport_errors(self._http):
            response = self._http.request("GET", "/v1/models")
    """
    try:
        yield
    except httpx.TransportError as exc:
        raise translate_transport_error(exc, http) from None


def translate_transport_error(exc: httpx.TransportError, http: httpx.Client | httpx.AsyncClient) -> TransportError:
    """The ``imaas.errors`` class for one httpx transport failure, with a detail naming the URL.

    A connection refused or never accepted (``ConnectError``, ``ConnectTimeout``) means
    nothing answers at the URL: ``ServerUnreachable``. Any other timeout means the server
    took the request but did not answer in time: ``ServerTimeout``. The rest (a dropped
    connection, a URL without ``http://``) is a plain ``TransportError``.
    """
    base = str(http.base_url).rstrip("/")
    reason = _without_secret(str(exc) or type(exc).__name__, http)
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return ServerUnreachable(f"nothing answers at {base}", url=base, reason=reason)
    if isinstance(exc, httpx.UnsupportedProtocol):  # the URL itself is wrong, e.g. no http://
        return TransportError(f"cannot send to {base}: {reason}", url=base, reason=reason)
    request = _request_line(exc)
    if isinstance(exc, httpx.TimeoutException):
        seconds = http.timeout.read
        within = f" within {seconds:g} s" if seconds is not None else ""
        return ServerTimeout(f"{base} sent no answer to {request}{within}", url=base, reason=reason)
    return TransportError(f"{request} to {base} failed: {reason}", url=base, reason=reason)


def _request_line(exc: httpx.TransportError) -> str:
    try:
        request = exc.request
    except RuntimeError:  # httpx sets it for every request it sends; this is only a guard
        return "the request"
    return f"{request.method} {request.url.raw_path.decode('ascii', 'replace')}"


Option = str | int | float | bool


def predict_request(
    model: str,
    images: list[EncodedImage],
    top_k: int | None,
    version: int | None,
    alias: str | None,
    routing_key: str | None = None,
    options: Mapping[str, Option] | None = None,
    accept: str | None = None,
) -> dict[str, Any]:
    """Keyword arguments for ``httpx`` to send a predict call (``routing_key``: the
    ``X-Imaas-Routing-Key`` that keeps one caller on one side of a canary; ``options``: the
    task's query parameters, e.g. ``{"score": 0.5}`` for a detector)."""
    params: dict[str, Any] = {k: _option(v) for k, v in (options or {}).items()}
    params.update({k: v for k, v in {"top_k": top_k, "version": version, "alias": alias}.items() if v is not None})
    headers = {"X-Imaas-Routing-Key": routing_key} if routing_key else {}
    if accept:
        headers["Accept"] = accept
    kwargs: dict[str, Any] = {"url": f"/v1/models/{model}:predict", "params": params, "headers": headers}
    if len(images) == 1:
        kwargs["content"] = images[0].data
        headers["Content-Type"] = images[0].content_type
    else:
        kwargs["files"] = [("file", (im.filename, im.data, im.content_type)) for im in images]
    return kwargs


def _option(value: Option) -> str | int | float:
    return ("true" if value else "false") if isinstance(value, bool) else value


def image_accept(fmt: str) -> str:
    """The ``Accept`` header that asks for an image answer as ``fmt`` (``jpeg`` or ``png``)."""
    if fmt.lower() not in ("jpeg", "png"):
        raise ValueError("fmt must be 'jpeg' or 'png'")
    return f"image/{fmt.lower()}"


def page_params(limit: int | None, after: str | None) -> dict[str, str | int]:
    """Query parameters for one page of ``GET /v1/models``."""
    params: dict[str, str | int] = {}
    if limit is not None:
        params["limit"] = limit
    if after is not None:
        params["after"] = after
    return params


def push_request(name: str, manifest: str | None, alias: str | None) -> dict[str, Any]:
    """Keyword arguments for ``httpx`` to push a version (the file is opened by the caller)."""
    data = {k: v for k, v in {"manifest": manifest, "alias": alias}.items() if v is not None}
    return {"url": f"/v1/models/{name}/versions", "data": data}


def raise_for_problem(response: httpx.Response) -> None:
    """Raise the ``imaas.errors`` class matching the problem's ``code`` on a non-2xx answer."""
    if response.is_success:
        return
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    code = str(body.get("code") or "http_error")
    detail = str(body.get("detail") or body.get("title") or response.text[:200] or response.reason_phrase)
    cls = error_for_code(code)
    err = cls(detail) if cls is not ImaasError else ImaasError(f"HTTP {response.status_code}: {detail}")
    err.extra.update({"status": response.status_code, "code": code, "request_id": body.get("request_id")})
    if response.headers.get("retry-after"):
        err.extra["retry_after"] = response.headers["retry-after"]
        with suppress(ValueError):  # seconds, as the server sends them; an HTTP-date stays only in extra
            err.retry_after = float(response.headers["retry-after"])
    raise err
