"""Open Inference Protocol (KServe V2) over REST under ``/v2``, as tritonclient expects."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request
from starlette.responses import Response

from imaas.api.bodies import read_body
from imaas.api.deps import Principal, principal, services
from imaas.api.offload import parse_sized
from imaas.api.oip_codec import HEADER_LENGTH, encode_response, parse_request
from imaas.api.responses import FastJSONResponse
from imaas.services.container import Services

router = APIRouter(prefix="/v2", tags=["open inference protocol"])

_INFER_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": (
            "An OIP inference request. Send the model's pre-processed input tensor, or encoded image files "
            "as a BYTES tensor named `image`. With the `Inference-Header-Content-Length` header, tensor "
            "data may follow the JSON as binary (`binary_data_size`)."
        ),
        "content": {
            "application/json": {
                "example": {
                    "inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["<JPEG as text>"]}],
                    "outputs": [{"name": "logits", "parameters": {"classification": 3}}],
                }
            },
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


def _flag(ok: bool, key: str) -> FastJSONResponse:
    return FastJSONResponse({key: ok}, status_code=200 if ok else 400)


@router.get("/health/live", summary="Server liveness")
async def live() -> dict[str, bool]:
    """200 while the server runs."""
    return {"live": True}


@router.get("/health/ready", summary="Server readiness (200 ready, 400 not yet)")
async def ready(svc: Services = Depends(services)) -> FastJSONResponse:
    """200 once every production model is loaded."""
    return _flag(svc.oip.server_ready(), "ready")


@router.get("", summary="Server metadata")
async def server_metadata(svc: Services = Depends(services)) -> dict[str, Any]:
    """Name, version and protocol extensions."""
    return svc.oip.server_metadata()


@router.get("/models/{model}", summary="Model metadata (default version)")
@router.get("/models/{model}/versions/{version}", summary="Model metadata")
async def model_metadata(
    model: str, version: str | None = None, svc: Services = Depends(services), _p: Principal = Depends(principal)
) -> dict[str, Any]:
    """Inputs (the raw tensor, and ``image`` for encoded images as BYTES), outputs (-1 for variable dims)."""
    return await svc.oip.model_metadata(model, version)


@router.get("/models/{model}/ready", summary="Model readiness (default version)")
@router.get("/models/{model}/versions/{version}/ready", summary="Model readiness")
async def model_ready(
    model: str, version: str | None = None, svc: Services = Depends(services), _p: Principal = Depends(principal)
) -> FastJSONResponse:
    """200 when the version is loaded, 400 when it is not."""
    return _flag(await svc.oip.model_ready(model, version), "ready")


@router.post("/models/{model}/infer", summary="Inference (default version)", openapi_extra=_INFER_DOC)
@router.post("/models/{model}/versions/{version}/infer", summary="Inference", openapi_extra=_INFER_DOC)
async def infer(
    model: str,
    request: Request,
    version: str | None = None,
    svc: Services = Depends(services),
    _p: Principal = Depends(principal),
) -> Response:
    """Run the model; JSON and binary tensor data, and the classification extension."""
    server = svc.settings.server
    body = await read_body(request, server.max_body_bytes)
    header_length = request.headers.get(HEADER_LENGTH)
    parsed = await parse_sized(
        len(body), parse_request, model, version, body, header_length, server.max_tensor_elements
    )
    content, headers = encode_response(await svc.oip.infer(parsed))
    return Response(content, headers=headers, media_type=headers["Content-Type"])


@router.post("/repository/index", summary="Model repository index")
async def repository_index(
    body: Annotated[dict[str, Any] | None, Body()] = None,
    svc: Services = Depends(services),
    _p: Principal = Depends(principal),
) -> Any:
    """Every model with its default version and state (``READY`` when loaded)."""
    ready_only = bool((body or {}).get("ready", False))
    return FastJSONResponse(await svc.oip.repository_index(ready_only))


@router.post("/repository/models/{model}/load", summary="Load a model")
async def load(model: str, svc: Services = Depends(services), _p: Principal = Depends(principal)) -> Response:
    """Load the model's default (``production``) version."""
    await svc.oip.load(model)
    return Response(status_code=200)


@router.post("/repository/models/{model}/unload", summary="Unload a model")
async def unload(model: str, svc: Services = Depends(services), _p: Principal = Depends(principal)) -> Response:
    """Unload every loaded version; the next request loads it again."""
    await svc.oip.unload(model)
    return Response(status_code=200)
