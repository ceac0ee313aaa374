"""Liveness and readiness probes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from imaas.api.deps import services
from imaas.api.responses import FastJSONResponse
from imaas.services.container import Services

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    """Always 200 while the server runs."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: every production model is loaded",
    responses={503: {"description": "still loading (or a production model failed to load)"}},
)
async def readyz(svc: Services = Depends(services)) -> Any:
    """200 once warm-up has loaded every model's ``production`` version, else 503."""
    ready, missing = svc.inference.ready()
    loaded = [f"{v.model}@{v.version}" for v in svc.inference.engine.loaded]
    body = {"status": "ready" if ready else "loading", "loaded": sorted(loaded), "missing": missing}
    return FastJSONResponse(body, status_code=200 if ready else 503)
