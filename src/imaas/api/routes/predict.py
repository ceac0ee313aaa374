"""``POST /v1/models/{name}:predict``: raw image body, multipart files or base64 JSON."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException

from imaas.api.deps import Principal, principal, services
from imaas.api.responses import FastJSONResponse
from imaas.domain import ModelRef
from imaas.errors import InvalidRequest, UnsupportedMediaType
from imaas.schemas.rest import PredictRequest, PredictResponse
from imaas.services.container import Services
from imaas.services.inference import ImageInput

router = APIRouter(prefix="/v1/models", tags=["inference"])

_BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "One image as the raw body, several as multipart files, or base64 images in JSON.",
        "content": {
            "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
            "image/png": {"schema": {"type": "string", "format": "binary"}},
            "image/webp": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "array", "items": {"type": "string", "format": "binary"}}},
                }
            },
            "application/json": {
                "schema": PredictRequest.model_json_schema(),
                "example": {"images": [{"data": "<base64 of a JPEG>", "filename": "cat.jpg"}], "top_k": 3},
            },
        },
    }
}

_RESPONSE_EXAMPLE = {
    "model": "mobilenet-v2",
    "version": 1,
    "task": "classification",
    "results": [
        {
            "filename": None,
            "predictions": [
                {"index": 285, "label": "Egyptian cat", "score": 0.69},
                {"index": 281, "label": "tabby, tabby cat", "score": 0.19},
            ],
        }
    ],
}


@router.post(
    "/{name}:predict",
    response_model=PredictResponse,
    summary="Classify images",
    openapi_extra=_BODY_DOC,
    responses={
        200: {"content": {"application/json": {"example": _RESPONSE_EXAMPLE}}},
        404: {"description": "model_not_found / version_not_found / alias_not_found"},
        413: {"description": "payload_too_large"},
        415: {"description": "unsupported_media_type"},
        422: {"description": "invalid_image / image_too_large / image_too_small"},
        429: {"description": "overloaded (see Retry-After)"},
        504: {"description": "deadline_exceeded"},
    },
)
async def predict(
    name: str,
    request: Request,
    top_k: Annotated[int | None, Query(ge=1, le=1000, description="how many classes to return")] = None,
    version: Annotated[int | None, Query(ge=1, description="a version number (default: production)")] = None,
    alias: Annotated[str | None, Query(description="an alias such as production or staging")] = None,
    svc: Services = Depends(services),
    _p: Principal = Depends(principal),
) -> FastJSONResponse:
    """Run the model on each image. ``name`` may carry ``@version`` or ``:alias`` too."""
    ref = ModelRef.parse(name, version=version, alias=alias)
    images, body_top_k = await read_images(request)
    result = await svc.inference.predict(ref, images, top_k or body_top_k)
    return FastJSONResponse(result)


async def read_images(request: Request) -> tuple[list[ImageInput], int | None]:
    """Images from the body, whatever of the three forms it takes."""
    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if ctype.startswith("image/") or ctype == "application/octet-stream":
        return [ImageInput(await request.body())], None
    if ctype == "multipart/form-data":
        return await _multipart(request), None
    if ctype == "application/json":
        return _json_images(await request.body())
    raise UnsupportedMediaType(
        f"Content-Type {ctype or '(none)'!r} is not accepted; send image/*, multipart/form-data or application/json"
    )


async def _multipart(request: Request) -> list[ImageInput]:
    limit = request.app.state.services.settings.server.max_images_per_request
    try:
        form = await request.form(max_files=limit, max_fields=limit)
    except MultiPartException as exc:
        raise InvalidRequest(f"malformed multipart body: {exc.message}") from None
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


def _json_images(body: bytes) -> tuple[list[ImageInput], int | None]:
    try:
        req = PredictRequest.model_validate(orjson.loads(body))
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the body is not valid JSON: {exc}") from None
    except ValidationError as exc:
        detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise InvalidRequest(detail) from None
    images = []
    for i, im in enumerate(req.images):
        try:
            images.append(ImageInput(base64.b64decode(im.data, validate=True), im.filename))
        except (binascii.Error, ValueError):
            raise InvalidRequest(f"images.{i}.data is not valid base64") from None
    return images, req.top_k
