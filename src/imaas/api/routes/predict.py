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

from imaas.api.openapi import LOOKUP_ERRORS, SERVING_ERRORS, ModelRefPath, problem_responses, ref
from imaas.api.predict_call import answer_predict
from imaas.domain import ALIAS_RE, MAX_VERSION
from imaas.errors import ImageTooLarge, ImageTooSmall, InvalidImage, TooManyImages, UnsupportedMediaType
from imaas.runtime.tasks.classification import MAX_TOP_K
from imaas.runtime.tasks.detection import MAX_DETECTIONS
from imaas.schemas.rest import PredictResponse

router = APIRouter(prefix="/v1/models", tags=["inference"])

_PARAMETERS: list[dict[str, Any]] = [
    {
        "name": "top_k",
        "in": "query",
        "required": False,
        "description": "classification: how many classes to return per image (default: the manifest's top_k)",
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_TOP_K},
    },
    {
        "name": "score",
        "in": "query",
        "required": False,
        "description": "detection: the confidence a box needs (default: the manifest's `postprocess.score`)",
        "schema": {"type": "number", "minimum": 0, "maximum": 1},
    },
    {
        "name": "iou",
        "in": "query",
        "required": False,
        "description": "detection: boxes of one class overlapping a better one by more than this are dropped "
        "(default: the manifest's `postprocess.iou`)",
        "schema": {"type": "number", "minimum": 0, "maximum": 1},
    },
    {
        "name": "max_detections",
        "in": "query",
        "required": False,
        "description": "detection: at most this many boxes per image",
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_DETECTIONS},
    },
    {
        "name": "draw",
        "in": "query",
        "required": False,
        "description": "detection: answer the image (one per request) with its boxes drawn, as JPEG, or PNG "
        "when `Accept` prefers `image/png`",
        "schema": {"type": "boolean"},
    },
    {
        "name": "redact",
        "in": "query",
        "required": False,
        "description": "detection: answer the image (one per request) with every box found blurred or pixelated "
        "(privacy redaction with the `faces` detector), as JPEG, or PNG when `Accept` prefers `image/png`",
        "schema": {"type": "string", "enum": ["blur", "pixelate"]},
    },
    {
        "name": "regions",
        "in": "query",
        "required": False,
        "description": "detection, with `draw` or `redact`: answer JSON whose result holds the image (base64) "
        "and the regions drawn or redacted",
        "schema": {"type": "boolean"},
    },
    {
        "name": "version",
        "in": "query",
        "required": False,
        "description": "a version number (default: the production alias); not with `alias` or a suffix in `name`",
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_VERSION},
    },
    {
        "name": "alias",
        "in": "query",
        "required": False,
        "description": "an alias such as production or staging; not with `version` or a suffix in `name`",
        "schema": {"type": "string", "pattern": ALIAS_RE.pattern},
    },
    {
        "name": "X-Imaas-Routing-Key",
        "in": "header",
        "required": False,
        "description": "a caller's stable key (e.g. a user id): with a canary, one key always lands on the same "
        "version; without it the split is drawn per request",
        "schema": {"type": "string"},
    },
]

# An 8x8 orange PNG: the example body really gets an answer.
_TINY_PNG = "iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAIAAABLbSncAAAAFUlEQVR42mM8UaHBgA0wMeAAg1MCAB4nAXgllso1AAAAAElFTkSuQmCC"
_RAW_IMAGE = {"schema": {"type": "string", "format": "binary"}}

_BODY_DOC: dict[str, Any] = {
    "parameters": _PARAMETERS,
    "requestBody": {
        "required": True,
        "description": (
            "One image as the raw body (any `image/*` type, or `application/octet-stream`), several as "
            "multipart file parts, or base64 images in JSON. `Content-Encoding: gzip` or `deflate` is undone "
            "within the body limit."
        ),
        "content": {
            "image/jpeg": _RAW_IMAGE,
            "image/png": _RAW_IMAGE,
            "image/webp": _RAW_IMAGE,
            "image/*": _RAW_IMAGE,
            "application/octet-stream": _RAW_IMAGE,
            "multipart/form-data": {"schema": ref("PredictUpload")},
            "application/json": {
                "schema": ref("PredictRequest"),
                "example": {"images": [{"data": _TINY_PNG, "filename": "orange.png"}], "top_k": 3},
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
    summary="Predict: classes, boxes or embeddings of images",
    openapi_extra=_BODY_DOC,
    responses={
        200: {
            "content": {
                "application/json": {"example": _RESPONSE_EXAMPLE},
                "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
                "image/png": {"schema": {"type": "string", "format": "binary"}},
            },
            "headers": {
                "X-Imaas-Version": {
                    "description": "the version that answered, `name@N` (a canary answers its share)",
                    "schema": {"type": "string"},
                }
            },
        },
        **problem_responses(
            *LOOKUP_ERRORS,
            TooManyImages,
            UnsupportedMediaType,
            InvalidImage,
            ImageTooLarge,
            ImageTooSmall,
            *SERVING_ERRORS,
        ),
    },
)
async def predict(name: ModelRefPath, request: Request) -> Response:
    """Run the model on each image; each result has the form of the model's task (classification:
    `predictions`; detection: `detections` with boxes in the image's pixels; embedding: `embedding`).
    Options a task does not take are refused (400). ``name`` may carry ``@version`` or ``:alias`` too."""
    return await answer_predict(request, name)
