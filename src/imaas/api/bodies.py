"""Request bodies: ``Content-Encoding`` undone within the body limit, JSON bounded before parsing.

The body limit middleware bounds the bytes on the wire; ``decompress`` bounds what they
inflate to by the same limit, so a 20 KB gzip bomb that would become gigabytes stops at
the limit with 413. ``check_json_size`` bounds what a JSON document can cost to parse:
orjson parses in one C call that holds the GIL (a thread does not help the event loop),
and its cost follows the number of values and above all of arrays and objects (a million
one-element arrays take 0.6 s and 50 times their bytes), so those are counted first, at
memchr speed.

Example::

    body = await read_body(request, limit=20 * 1024 * 1024)
"""

from __future__ import annotations

import asyncio
import zlib
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from imaas.errors import InvalidRequest, PayloadTooLarge

M = TypeVar("M", bound=BaseModel)

ENCODINGS = ("gzip", "deflate")


def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """Undo ``Content-Encoding`` gzip/deflate, refusing output past ``limit`` bytes (zip bombs)."""
    encoding = (encoding or "").strip().lower()
    if not encoding or encoding == "identity":
        return body
    if encoding not in ENCODINGS:
        raise InvalidRequest(f"unsupported Content-Encoding {encoding[:40]!r}; use gzip or deflate")
    d = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        out = d.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidRequest(f"the {encoding} body is corrupt: {exc}") from None
    if len(out) > limit or d.unconsumed_tail:
        raise PayloadTooLarge(f"the decompressed body exceeds the limit of {limit} bytes")
    if not d.eof:
        raise InvalidRequest(f"the {encoding} body is truncated")
    return out


def check_json_size(body: bytes, max_values: int, max_containers: int) -> None:
    """Refuse a JSON document with more than about ``max_values`` values or ``max_containers``
    arrays and objects before it is parsed (``PayloadTooLarge``; counting never undercounts)."""
    containers = body.count(b"[") + body.count(b"{")
    if containers > max_containers:
        raise PayloadTooLarge(
            f"the JSON has {containers} arrays and objects; the limit is {max_containers} "
            "(send large tensors as binary data)"
        )
    values = body.count(b",") + containers + 1
    if values > max_values:
        raise PayloadTooLarge(
            f"the JSON has about {values} values; the limit is {max_values} (send large tensors as binary data)"
        )


async def read_body(request: Request, limit: int) -> bytes:
    """The request's body with its ``Content-Encoding`` undone (on a worker thread: a small
    compressed body may inflate to ``limit`` bytes)."""
    body = await request.body()
    encoding = request.headers.get("content-encoding")
    if not encoding:
        return body
    return await asyncio.to_thread(decompress, body, encoding, limit)


def load_json(body: bytes) -> Any:
    """The JSON document ``body`` (``check_json_size`` it first); ``InvalidRequest`` when it is not JSON."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the body is not valid JSON: {exc}") from None


def validated(model: type[M], doc: Any) -> M:
    """``doc`` as ``model``; ``InvalidRequest`` naming each field that does not fit (``images.0.data: ...``)."""
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise InvalidRequest(detail[:2000]) from None
