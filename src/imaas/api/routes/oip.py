"""Open Inference Protocol (KServe V2) over REST under ``/v2``, as tritonclient expects.

Each per-model endpoint comes twice, with and without ``/versions/{version}`` (the default
version is the model's ``production`` alias); both call the same handler body.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request
from starlette.responses import Response

from imaas.api.bodies import read_body
from imaas.api.deps import DESCRIBE, INFER, READ, WRITE, Principal, services
from imaas.api.offload import parse_sized
from imaas.api.oip_codec import HEADER_LENGTH, encode_response, parse_request
from imaas.api.openapi import LOOKUP_ERRORS, SERVING_ERRORS, ModelName, VersionPath, oip_responses, ref
from imaas.api.responses import FastJSONResponse
from imaas.errors import InvalidInput, InvalidRequest, ModelNotFound, ModelNotReady
from imaas.schemas.oip import (
    Live,
    ModelMetadata,
    Ready,
    RepositoryIndexRequest,
    RepositoryModel,
    ServerMetadata,
)
from imaas.services.container import Services
from imaas.services.routing import ROUTING_KEY_HEADER, VERSION_HEADER, header_key

router = APIRouter(prefix="/v2", tags=["open inference protocol"])

_INFER_DOC: dict[str, Any] = {
    "parameters": [
        {
            "name": "Inference-Header-Content-Length",
            "in": "header",
            "required": False,
            "description": "length of the JSON at the start of the body; binary tensor data follows it",
            "schema": {"type": "integer", "minimum": 0},
        }
    ],
    "requestBody": {
        "required": True,
        "description": (
            "An OIP inference request. Send the model's pre-processed input tensor, or encoded image files "
            "as a BYTES tensor named `image`. With the `Inference-Header-Content-Length` header, tensor "
            "data may follow the JSON as binary (`binary_data_size`). `Content-Encoding: gzip` or `deflate` "
            "is undone within the body limit."
        ),
        "content": {
            "application/json": {
                "schema": ref("InferenceRequest"),
                "example": {
                    "inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["<JPEG as text>"]}],
                    "outputs": [{"name": "logits", "parameters": {"classification": 3}}],
                },
            },
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    },
}
_INFER_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the outputs; with binary outputs, binary data follows the JSON",
        "content": {
            "application/json": {"schema": ref("InferenceResponse")},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
        "headers": {
            "Inference-Header-Content-Length": {
                "description": "length of the JSON at the start of a binary response",
                "schema": {"type": "integer", "minimum": 0},
            }
        },
    },
    # The protocol folds a request that does not fit the model (invalid_input) into 400.
    **oip_responses(*LOOKUP_ERRORS, InvalidInput, *SERVING_ERRORS),
}
_READY_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": Ready, "description": '`{"ready": true}`'},
    400: {
        "description": '`{"ready": false}`; or an invalid model name or version (`error`)',
        "content": {"application/json": {"schema": {"anyOf": [ref("Ready"), ref("OipError")]}}},
    },
}


def _flag(ok: bool, key: str) -> FastJSONResponse:
    return FastJSONResponse({key: ok}, status_code=200 if ok else 400)


@router.get("/health/live", summary="Server liveness", response_model=None, responses={200: {"model": Live}})
async def live() -> dict[str, bool]:
    """200 while the server runs."""
    return {"live": True}


@router.get(
    "/health/ready",
    summary="Server readiness (200 ready, 400 not yet)",
    response_model=None,
    responses={200: {"model": Ready}, 400: {"model": Ready, "description": '`{"ready": false}`'}},
)
async def ready(svc: Services = Depends(services)) -> FastJSONResponse:
    """200 once every production model is loaded."""
    return _flag(svc.oip.server_ready(), "ready")


@router.get("", summary="Server metadata", response_model=None, responses={200: {"model": ServerMetadata}})
async def server_metadata(svc: Services = Depends(services)) -> dict[str, Any]:
    """Name, version and protocol extensions."""
    return svc.oip.server_metadata()


_METADATA_RESPONSES = {200: {"model": ModelMetadata}, **oip_responses(*LOOKUP_ERRORS)}


@router.get(
    "/models/{model}", summary="Model metadata (default version)", response_model=None, responses=_METADATA_RESPONSES
)
async def model_metadata(
    model: ModelName, svc: Services = Depends(services), p: Principal = Depends(DESCRIBE)
) -> dict[str, Any]:
    """Inputs (the raw tensor, and ``image`` for encoded images as BYTES), outputs (-1 for variable dims)."""
    return await svc.oip.model_metadata(p, model, None)


@router.get(
    "/models/{model}/versions/{version}",
    summary="Model metadata",
    response_model=None,
    responses=_METADATA_RESPONSES,
)
async def model_version_metadata(
    model: ModelName, version: VersionPath, svc: Services = Depends(services), p: Principal = Depends(DESCRIBE)
) -> dict[str, Any]:
    """Inputs (the raw tensor, and ``image`` for encoded images as BYTES), outputs (-1 for variable dims)."""
    return await svc.oip.model_metadata(p, model, version)


_MODEL_READY_RESPONSES = {**oip_responses(*LOOKUP_ERRORS), **_READY_RESPONSES}


@router.get(
    "/models/{model}/ready",
    summary="Model readiness (default version)",
    response_model=None,
    responses=_MODEL_READY_RESPONSES,
)
async def model_ready(
    model: ModelName, svc: Services = Depends(services), p: Principal = Depends(DESCRIBE)
) -> FastJSONResponse:
    """200 when the version is loaded, 400 when it is not."""
    return _flag(await svc.oip.model_ready(p, model, None), "ready")


@router.get(
    "/models/{model}/versions/{version}/ready",
    summary="Model readiness",
    response_model=None,
    responses=_MODEL_READY_RESPONSES,
)
async def model_version_ready(
    model: ModelName, version: VersionPath, svc: Services = Depends(services), p: Principal = Depends(DESCRIBE)
) -> FastJSONResponse:
    """200 when the version is loaded, 400 when it is not."""
    return _flag(await svc.oip.model_ready(p, model, version), "ready")


@router.post(
    "/models/{model}/infer",
    summary="Inference (default version)",
    response_class=Response,
    openapi_extra=_INFER_DOC,
    responses=_INFER_RESPONSES,
)
async def infer(
    model: ModelName, request: Request, svc: Services = Depends(services), p: Principal = Depends(INFER)
) -> Response:
    """Run the model; JSON and binary tensor data, and the classification extension."""
    return await _infer(svc, p, request, model, None)


@router.post(
    "/models/{model}/versions/{version}/infer",
    summary="Inference",
    response_class=Response,
    openapi_extra=_INFER_DOC,
    responses=_INFER_RESPONSES,
)
async def infer_version(
    model: ModelName,
    version: VersionPath,
    request: Request,
    svc: Services = Depends(services),
    p: Principal = Depends(INFER),
) -> Response:
    """Run the model; JSON and binary tensor data, and the classification extension."""
    return await _infer(svc, p, request, model, version)


async def _infer(svc: Services, p: Principal, request: Request, model: str, version: str | None) -> Response:
    server = svc.settings.server
    body = await read_body(request, server.max_body_bytes)
    header_length = request.headers.get(HEADER_LENGTH)
    parsed = await parse_sized(
        len(body),
        parse_request,
        model,
        version,
        body,
        header_length,
        server.max_tensor_elements,
        server.max_json_values,
    )
    parsed.routing_key = header_key(request.headers.get(ROUTING_KEY_HEADER))
    answer, decisions = await svc.oip.infer(p, parsed, len(body))
    if decisions:
        request.scope["state"].setdefault("ratelimit", []).extend(decisions)
    content, headers = encode_response(answer)
    headers[VERSION_HEADER] = f"{answer.model_name}@{answer.model_version}"
    return Response(content, headers=headers, media_type=headers["Content-Type"])


@router.post(
    "/repository/index",
    summary="Model repository index",
    response_model=None,
    responses={200: {"model": list[RepositoryModel]}, **oip_responses(InvalidRequest)},
)
async def repository_index(
    body: Annotated[RepositoryIndexRequest | None, Body()] = None,
    svc: Services = Depends(services),
    p: Principal = Depends(READ),
) -> Any:
    """Every model with its default version and state (``READY`` when loaded)."""
    ready_only = body is not None and body.ready
    return FastJSONResponse(await svc.oip.repository_index(p, ready_only))


@router.post(
    "/repository/models/{model}/load",
    summary="Load a model",
    response_class=Response,
    responses={200: {"description": "loaded (no body)"}, **oip_responses(*LOOKUP_ERRORS, ModelNotReady)},
)
async def load(model: ModelName, svc: Services = Depends(services), p: Principal = Depends(WRITE)) -> Response:
    """Load the model's default (``production``) version."""
    await svc.oip.load(p, model)
    return Response(status_code=200)


@router.post(
    "/repository/models/{model}/unload",
    summary="Unload a model",
    response_class=Response,
    responses={200: {"description": "unloaded (no body)"}, **oip_responses(InvalidRequest, ModelNotFound)},
)
async def unload(model: ModelName, svc: Services = Depends(services), p: Principal = Depends(WRITE)) -> Response:
    """Unload every loaded version; the next request loads it again."""
    await svc.oip.unload(p, model)
    return Response(status_code=200)
