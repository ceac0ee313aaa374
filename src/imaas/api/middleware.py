"""Pure ASGI middleware (cheaper than Starlette's BaseHTTPMiddleware on the hot path)."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imaas.api import problems
from imaas.domain import parse_decimal
from imaas.errors import ImaasError, PayloadTooLarge


class RequestContext:
    """Give each request an id (the caller's ``X-Request-ID`` if sane) and echo it back.

    Generated ids are a random per-process prefix and a counter: unique, and cheaper than a
    uuid4 per request.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._prefix = uuid.uuid4().hex[:12]
        self._counter = itertools.count(1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                if 0 < len(candidate) <= 128 and candidate.isprintable():
                    rid = candidate
                break
        rid = rid or f"{self._prefix}-{next(self._counter):x}"
        scope.setdefault("state", {})["request_id"] = rid
        header = (b"x-request-id", rid.encode("latin-1"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(h[0] == b"x-request-id" for h in headers):
                    headers.append(header)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_id)


HTML_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    # the docs pages load their scripts from this server (and run one inline script each)
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
        b"img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    ),
)


class SecurityHeaders:
    """Add the browser security headers to every HTML page (GET only: no predict pays for it)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                for name, value in headers:
                    if name == b"content-type" and value.startswith(b"text/html"):
                        headers.extend(HTML_HEADERS)
                        message["headers"] = headers
                        break
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodyLimit:
    """Refuse request bodies over a per-path limit, before and while reading them.

    A declared ``Content-Length`` over the limit is answered 413 at once, unread; a chunked
    body fails as soon as the running count passes the limit (the route sees
    ``PayloadTooLarge``, and ``body_exceeded`` in the scope state tells the error handlers
    that a parser's own error was really this).
    """

    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = parse_decimal(value.decode("latin-1"))
                if declared is not None and declared > limit:
                    exc = PayloadTooLarge(f"the body is {declared} bytes; the limit is {limit}")
                    await _problem(exc, scope, send)
                    return
                break
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    scope.setdefault("state", {})["body_exceeded"] = limit
                    raise PayloadTooLarge(f"the body exceeds the limit of {limit} bytes")
            return message

        await self.app(scope, counted, send)


async def _problem(exc: ImaasError, scope: Scope, send: Send) -> None:
    # The one renderer: a problem on /v1, the protocol's {"error": ...} under /v2.
    response = await problems.imaas_error(Request(scope), exc)
    response.headers["Connection"] = "close"
    await response(scope, _no_body, send)


async def _no_body() -> Message:
    return {"type": "http.disconnect"}
