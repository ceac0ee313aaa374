"""Request building and response decoding shared by the sync and async clients."""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from imaas.errors import ImaasError, error_for_code

ImageSource = str | Path | bytes
DEFAULT_URL = "http://127.0.0.1:8000"

_MAGIC = [
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF8", "image/gif"),
    (b"BM", "image/bmp"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
]


@dataclass(frozen=True)
class EncodedImage:
    """Bytes of an image file with its name and media type."""

    data: bytes
    filename: str
    content_type: str


def load_image(source: ImageSource) -> EncodedImage:
    """Read an image from a path or take raw bytes; guess the media type."""
    if isinstance(source, bytes):
        data, name = source, "image"
    else:
        path = Path(source)
        data, name = path.read_bytes(), path.name
    return EncodedImage(data, name, guess_type(data, name))


def guess_type(data: bytes, name: str) -> str:
    """Media type from magic bytes, else from the file name, else octet-stream."""
    for magic, ctype in _MAGIC:
        if data.startswith(magic):
            return ctype
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def predict_request(
    model: str, images: list[EncodedImage], top_k: int | None, version: int | None, alias: str | None
) -> dict[str, Any]:
    """Keyword arguments for ``httpx`` to send a predict call."""
    params = {k: v for k, v in {"top_k": top_k, "version": version, "alias": alias}.items() if v is not None}
    kwargs: dict[str, Any] = {"url": f"/v1/models/{model}:predict", "params": params}
    if len(images) == 1:
        kwargs["content"] = images[0].data
        kwargs["headers"] = {"Content-Type": images[0].content_type}
    else:
        kwargs["files"] = [("file", (im.filename, im.data, im.content_type)) for im in images]
    return kwargs


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
    raise err
