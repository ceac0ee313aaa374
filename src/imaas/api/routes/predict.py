"""``POST /v1/models/{name}:predict``: raw image body, multipart files or base64 JSON.

The route documents the endpoint and serves multipart and JSON bodies; raw image bodies
are answered earlier by the fast path (``api/fastpath.py``). Both call ``answer_predict``,
which reads the query and the body itself, so the parameters below are described in the
OpenAPI document rather than parsed a second time by FastAPI.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from imaas.api.predict_call import MAX_TOP_K, answer_predict
from imaas.schemas.rest import PredictRequest, PredictResponse

router = APIRouter(prefix="/v1/models", tags=["inference"])

_PARAMETERS: list[dict[str, Any]] = [
    {
        "name": "top_k",
        "in": "query",
        "required": False,
        "description": "how many classes to return per image (default: the manifest's top_k)",
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_TOP_K},
    },
    {
        "name": "version",
        "in": "query",
        "required": False,
        "description": "a version number (default: the production alias)",
        "schema": {"type": "integer", "minimum": 1},
    },
    {
        "name": "alias",
        "in": "query",
        "required": False,
        "description": "an alias such as production or staging",
        "schema": {"type": "string"},
    },
]

_BODY_DOC: dict[str, Any] = {
    "parameters": _PARAMETERS,
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
    },
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
async def predict(name: str, request: Request) -> Response:
    """Run the model on each image. ``name`` may carry ``@version`` or ``:alias`` too."""
    return await answer_predict(request, name)
