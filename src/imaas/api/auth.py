"""Authentication for every HTTP request, as plain ASGI, before either predict path.

``Authenticate`` runs outside the raw-image fast path and FastAPI alike, so REST (both
predict paths), OIP REST and every other route go through the one mechanism: the
``Authorization: Bearer`` value is turned into a ``Principal`` (``services/auth.py``: a
dictionary lookup and one SHA-256), the key's rate limit takes a token, and the principal
goes into the scope state, where ``api/deps.py`` and ``answer_predict`` read it. Public
paths (health probes, the OpenAPI document and its pages, OIP server metadata) need no key.

A refused request gets its problem (OIP paths: ``{"error": ...}``) with
``WWW-Authenticate: Bearer`` on a 401 (``api/problems.py``), after ``auth.refusal_delay_s``
(a tarpit: a client looping on refusals is slowed to its connections / delay instead of
spinning the event loop every other key needs); the body is never read. Responses of a key with
limits carry the IETF ``RateLimit`` / ``RateLimit-Policy`` headers of the limits the request
touched (``ratelimit`` in the scope state: the rate limit here, quotas in the predict call).

When authentication is off (``auth.enabled=false``, local development on loopback only),
every caller is ``ANONYMOUS``: every scope, every model.
"""

from __future__ import annotations

import asyncio
import contextlib

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imaas.api import problems
from imaas.domain import ANONYMOUS
from imaas.errors import ImaasError
from imaas.security.quotas import Decision, ratelimit_headers
from imaas.services.container import Services

PUBLIC_PATHS = frozenset(
    {
        "/healthz",
        "/readyz",
        "/openapi.json",
        "/docs",
        "/docs/oauth2-redirect",
        "/redoc",
        "/v2",
        "/v2/health/live",
        "/v2/health/ready",
    }
)
PUBLIC_PREFIXES = ("/static-offline-docs/",)


def is_public(path: str) -> bool:
    """Whether ``path`` is answered without a key (probes, API documentation, OIP server metadata)."""
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


class Authenticate:
    """Put the caller's ``Principal`` in ``scope["state"]["principal"]`` or answer 401/429."""

    def __init__(self, app: ASGIApp, enabled: bool, refusal_delay_s: float = 0.05) -> None:
        self.app = app
        self.enabled = enabled
        self.refusal_delay_s = refusal_delay_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        if not self.enabled:
            state["principal"] = ANONYMOUS
            await self.app(scope, receive, send)
            return
        services: Services = scope["app"].state.services
        authorization = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
                break
        if is_public(scope["path"]):  # answered without a key; a valid one may see more (/readyz)
            if authorization is not None:
                with contextlib.suppress(ImaasError):
                    state["principal"] = services.auth.authenticate(authorization)
            await self.app(scope, receive, send)
            return
        try:
            principal = services.auth.authenticate(authorization)
            decision = await services.usage.take_request(principal)
        except ImaasError as exc:
            # answered after a short pause: a client looping on refusals cannot spin the event
            # loop that every other key's requests need (a tarpit, as gateways' delayed limits)
            if self.refusal_delay_s:
                await asyncio.sleep(self.refusal_delay_s)
            await _refuse(exc, scope, send)
            return
        state["principal"] = principal
        if not principal.limits.limited:
            await self.app(scope, receive, send)
            return
        decisions: list[Decision] = [decision] if decision is not None else []
        state["ratelimit"] = decisions

        async def send_with_limits(message: Message) -> None:
            if message["type"] == "http.response.start" and decisions:
                headers = list(message.get("headers", []))
                for key, value in ratelimit_headers(decisions).items():
                    headers.append((key.lower().encode("latin-1"), value.encode("latin-1")))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_limits)


async def _refuse(exc: ImaasError, scope: Scope, send: Send) -> None:
    response = await problems.imaas_error(Request(scope), exc)
    await response(scope, _no_body, send)


async def _no_body() -> Message:
    return {"type": "http.disconnect"}
