"""One reader and one answer for ``POST /v1/models/{name}:predict``, whichever path serves it.

Two edges receive predict calls: the raw-image fast path (plain ASGI, ``api/fastpath.py``)
and the FastAPI route (multipart and JSON bodies, and the endpoint's OpenAPI description).
Both call ``answer_predict``, so the caller's identity, the query parameters, the body in
each of its three forms, the service call and the response are written once, here: what
later issues add to a predict call (authentication, quotas, metering, tracing) goes here too.

Large JSON bodies are parsed on a worker thread (``api/offload.py``).

Example::

    response = await answer_predict(request, "mobilenet-v2@3")
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from starlette.datastructures import QueryParams, UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message

from imaas.api.bodies import check_json_size, load_json, read_body, validated
from imaas.api.deps import principal_of
from imaas.api.offload import parse_sized
from imaas.api.responses import FastJSONResponse
from imaas.domain import ModelRef, Scope, parse_decimal
from imaas.errors import InvalidRequest, UnsupportedMediaType
from imaas.imaging.draw import ImageFormat
from imaas.schemas.rest import PredictRequest
from imaas.services.access import authorize, check_model
from imaas.services.container import Services
from imaas.services.inference import Answer, ImageInput, too_many_images
from imaas.services.routing import ROUTING_KEY_HEADER, VERSION_HEADER, header_key


@dataclass(frozen=True)
class PredictCall:
    """What a predict request asks for, whatever form its body took: the model, the images
    and the task's options (query parameters, and a JSON body's ``top_k`` and ``options``),
    which the model's task checks."""

    ref: ModelRef
    images: list[ImageInput]
    params: dict[str, str]


def body_kind(content_type: str) -> str:
    """``raw`` (one encoded image), ``multipart``, ``json``, or ``""`` for anything else."""
    ctype = content_type.split(";", 1)[0].strip().lower()
    if ctype.startswith("image/") or ctype == "application/octet-stream":
        return "raw"
    if ctype == "multipart/form-data":
        return "multipart"
    if ctype == "application/json":
        return "json"
    return ""


def query_int(query: QueryParams, name: str, low: int, high: int | None = None) -> int | None:
    """An optional integer query parameter within ``[low, high]``; ``InvalidRequest`` otherwise."""
    raw = query.get(name)
    if raw is None:
        return None
    value = parse_decimal(raw)
    if value is None or value < low or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"between {low} and {high}"
        raise InvalidRequest(f"query.{name}: must be an integer {bounds}")
    return value


async def read_predict(request: Request, name: str, services: Services) -> PredictCall:
    """The model reference, images and task options of a predict request."""
    query = request.query_params
    ref = ModelRef.parse(name, version=query_int(query, "version", 1), alias=query.get("alias"))
    params = {k: v for k, v in query.items() if k not in ("version", "alias")}
    kind = body_kind(request.headers.get("content-type", ""))
    server = services.settings.server
    limit = server.max_images_per_request
    if kind == "raw":
        return PredictCall(ref, [ImageInput(await read_body(request, server.max_body_bytes))], params)
    if kind == "multipart":
        if "content-encoding" in request.headers:  # the form parser reads the stream: give it the inflated body
            request = _with_body(request, await read_body(request, server.max_body_bytes))
        return PredictCall(ref, await _multipart(request, limit), params)
    if kind == "json":
        body = await read_body(request, server.max_body_bytes)
        images, body_params = await parse_sized(len(body), _json_images, body, limit)
        return PredictCall(ref, images, {**body_params, **params})
    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip()
    raise UnsupportedMediaType(
        f"Content-Type {ctype[:100] or '(none)'!r} is not accepted; "
        "send image/*, multipart/form-data or application/json"
    )


def image_format(accept: str) -> ImageFormat:
    """PNG when the ``Accept`` header prefers ``image/png`` to ``image/jpeg``, else JPEG."""
    weights = {"image/jpeg": -1.0, "image/png": -1.0}
    for part in accept.split(",")[:32]:
        media, _, rest = part.strip().partition(";")
        media = media.strip().lower()
        if media in weights:
            q = 1.0
            for p in rest.split(";"):
                key, _, value = p.strip().partition("=")
                if key.strip() == "q":
                    try:
                        q = float(value)
                    except ValueError:
                        q = 0.0
            weights[media] = q
    return "PNG" if weights["image/png"] > max(weights["image/jpeg"], 0.0) else "JPEG"


async def answer_predict(request: Request, name: str) -> Response:
    """Authorise, read, charge, predict, meter and render one predict call; errors are raised
    for the caller to render. (The ``Authenticate`` middleware found the caller and took its
    rate-limit token before either path was chosen.)"""
    p = principal_of(request)
    authorize(p, Scope.INFER)
    services: Services = request.app.state.services
    call = await read_predict(request, name, services)
    check_model(p, call.ref.name)
    routing_key = header_key(request.headers.get(ROUTING_KEY_HEADER))
    fmt = image_format(request.headers.get("accept", ""))
    answer, decisions = await services.usage.metered(
        p,
        len(call.images),
        sum(len(im.data) for im in call.images),
        lambda: services.inference.predict(call.ref, call.images, call.params, routing_key, fmt),
        Answer.served_by,
    )
    if decisions:
        request.scope["state"].setdefault("ratelimit", []).extend(decisions)
    body = answer.body
    headers = {VERSION_HEADER: f"{body['model']}@{body['version']}"}
    if answer.image is not None:
        return Response(answer.image, media_type=answer.media_type, headers=headers)
    return FastJSONResponse(body, headers=headers)


def _with_body(request: Request, body: bytes) -> Request:
    """A request like ``request`` whose stream yields ``body`` (already read and decoded)."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(request.scope, receive)


class _InMemoryParser(MultiPartParser):
    """Starlette's multipart parser, with file parts never rolled over to a temporary file:
    request images are never written to disk (the body limit bounds what memory holds)."""

    spool_max_size = 2**62


async def _multipart(request: Request, limit: int) -> list[ImageInput]:
    try:
        parser = _InMemoryParser(request.headers, request.stream(), max_files=limit, max_fields=limit)
        form = await parser.parse()
    except (MultiPartException, HTTPException) as exc:  # Starlette re-raises the first as the second in an app
        message = exc.message if isinstance(exc, MultiPartException) else str(exc.detail)
        if message.startswith("Too many files"):
            raise too_many_images(limit) from None
        raise InvalidRequest(f"malformed multipart body: {message}") from None
    images: list[ImageInput] = []
    try:
        for _key, value in form.multi_items():
            if isinstance(value, UploadFile):
                images.append(ImageInput(await value.read(), value.filename))
    finally:
        await form.close()
    if not images:
        raise InvalidRequest("the multipart body has no file part")
    return images


def _json_images(body: bytes, limit: int) -> tuple[list[ImageInput], dict[str, str]]:
    # a predict body is a few values per image (base64 strings hold no commas or brackets)
    check_json_size(body, max_values=16 * limit + 64, max_containers=4 * limit + 16)
    doc = load_json(body)
    if isinstance(doc, dict) and isinstance(doc.get("images"), list) and len(doc["images"]) > limit:
        raise too_many_images(limit)
    req = validated(PredictRequest, doc)
    images = []
    for i, im in enumerate(req.images):
        try:
            images.append(ImageInput(base64.b64decode(im.data, validate=True), im.filename))
        except (binascii.Error, ValueError):
            raise InvalidRequest(f"images.{i}.data is not valid base64") from None
    params = {k: _option_text(v) for k, v in (req.options or {}).items()}
    if req.top_k is not None:
        params.setdefault("top_k", str(req.top_k))
    return images, params


def _option_text(value: str | int | float | bool) -> str:
    """A JSON option as the query parameter it stands for (``true``, ``0.5``, ``3``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
