"""Liveness and readiness probes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from imaas.api.deps import services
from imaas.api.responses import FastJSONResponse
from imaas.schemas.rest import Readiness
from imaas.services.container import Services

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    """Always 200 while the server runs."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: the server can serve",
    response_model=None,
    responses={
        200: {"model": Readiness, "description": "every production version is loaded or has failed to load"},
        503: {"model": Readiness, "description": "production models are still loading"},
    },
)
async def readyz(svc: Services = Depends(services)) -> Any:
    """200 once warm-up has loaded, or failed to load, every model's ``production`` version; else 503.

    A version that failed to load does not hold readiness back: it is listed under
    ``failed`` with its reason, and its requests answer 503 ``model_not_ready`` until a
    retry succeeds.
    """
    r = svc.inference.readiness()
    body = {
        "status": "ready" if r.ready else "loading",
        "loaded": r.loaded,
        "missing": r.missing,
        "failed": [{"model": ref, "reason": f.reason, "attempts": f.attempts} for ref, f in r.failed.items()],
    }
    return FastJSONResponse(body, status_code=200 if r.ready else 503)
