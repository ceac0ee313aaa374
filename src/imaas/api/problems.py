"""Every error leaves the server as RFC 9457 problem details with a stable ``code``.

Errors from imaas carry their own status and code; FastAPI's validation errors become
``invalid_request``; unknown routes ``not_found``; anything unexpected is logged with the
request id and answered with a bare ``internal_error`` (no stack trace leaves the server).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from imaas.api.responses import FastJSONResponse, ProblemResponse
from imaas.errors import ImaasError, MissingCredentials, PayloadTooLarge, Unauthorized

log = logging.getLogger("imaas.api")

_HTTP_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def request_id(request: Request) -> str | None:
    """The id the request-id middleware gave this request."""
    rid = request.scope.get("state", {}).get("request_id")
    return str(rid) if rid is not None else None


def problem(request: Request, status: int, code: str, title: str, detail: str | None, **extra: Any) -> JSONResponse:
    """Build a problem response for ``request`` (the OIP error form under ``/v2``)."""
    if request.scope.get("path", "").startswith("/v2"):  # the path, without building a URL
        return oip_error(request, status, detail or title)
    body: dict[str, Any] = {
        "type": f"https://imaas.dev/problems/{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        "request_id": request_id(request),
    }
    body.update({k: v for k, v in extra.items() if v is not None})
    headers = {"X-Request-ID": body["request_id"]} if body["request_id"] else None
    return ProblemResponse(body, status_code=status, headers=headers)


def oip_error(request: Request, status: int, message: str) -> JSONResponse:
    """The Open Inference Protocol's ``{"error": "..."}``; 422s become 400 as Triton answers."""
    rid = request_id(request)
    headers = {"X-Request-ID": rid} if rid else None
    return FastJSONResponse({"error": message}, status_code=400 if status == 422 else status, headers=headers)


async def imaas_error(request: Request, exc: Exception) -> JSONResponse:
    """Render an ``ImaasError``."""
    assert isinstance(exc, ImaasError)
    if exc.status == 500:  # a fault; 503/504 repeat what the loader and the queue already logged once
        log.warning("%s on %s %s: %s", exc.code, request.method, request.url.path, exc.detail)
    elif exc.status > 500:
        log.debug("%s on %s %s: %s", exc.code, request.method, request.url.path, exc.detail)
    resp = problem(request, exc.status, exc.code, exc.title, exc.detail, **exc.extra)
    if exc.retry_after is not None:
        resp.headers["Retry-After"] = retry_after_header(exc.retry_after)
    if exc.headers:
        resp.headers.update(exc.headers)
    if isinstance(exc, Unauthorized):  # RFC 6750: no error code when no credentials came
        error = "" if isinstance(exc, MissingCredentials) else ', error="invalid_token"'
        resp.headers["WWW-Authenticate"] = f'Bearer realm="imaas"{error}'
    return resp


def retry_after_header(seconds: float) -> str:
    """``Retry-After`` in whole seconds, at least 1 (HTTP has no fractions there)."""
    return str(max(1, math.ceil(seconds)))


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    """Render FastAPI's request validation errors as ``invalid_request``."""
    assert isinstance(exc, RequestValidationError)
    errors = [{"field": ".".join(str(p) for p in e.get("loc", ())), "message": e.get("msg", "")} for e in exc.errors()]
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return problem(request, 400, "invalid_request", "Invalid request", detail, errors=errors)


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    """Render Starlette's HTTP exceptions (unknown route, wrong method, bad multipart)."""
    assert isinstance(exc, StarletteHTTPException)
    limit = request.scope.get("state", {}).get("body_exceeded")
    if limit is not None:  # a body parser failed because the body limit cut it off
        return await imaas_error(request, PayloadTooLarge(f"the body exceeds the limit of {limit} bytes"))
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    title = code.replace("_", " ").capitalize()
    resp = problem(request, exc.status_code, code, title, str(exc.detail))
    if exc.headers:
        resp.headers.update(exc.headers)
    if exc.status_code == 405 and (allowed := allowed_methods(request)):
        resp.headers["Allow"] = ", ".join(sorted(allowed))  # every route of the path, not only the first
    return resp


def allowed_methods(request: Request) -> set[str]:
    """The methods of every route whose path matches the request's (a path served by several
    routes, e.g. GET and PATCH ``/v1/models/{name}``, allows all of theirs)."""
    path = request.scope.get("path", "")
    methods: set[str] = set()
    for route in _flat(request.app.router.routes):
        regex = getattr(route, "path_regex", None)
        if regex is not None and regex.match(path):
            methods |= set(getattr(route, "methods", None) or ())
    return methods


def _flat(routes: Iterable[Any]) -> Iterator[Any]:
    """Routes, with those of included routers (FastAPI keeps them inside the router they came from)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from _flat(inner.routes)
        else:
            yield route


async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    """Log an unexpected exception and answer 500 without leaking internals."""
    log.exception("unhandled error on %s %s (request %s)", request.method, request.url.path, request_id(request))
    return problem(request, 500, "internal_error", "Internal server error", "an unexpected error occurred")


def install(app: FastAPI) -> None:
    """Register the handlers on ``app``."""
    app.add_exception_handler(ImaasError, imaas_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected_error)
