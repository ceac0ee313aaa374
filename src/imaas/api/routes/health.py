"""Liveness and readiness probes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from imaas.api.deps import services
from imaas.api.responses import FastJSONResponse
from imaas.domain import Scope
from imaas.schemas.rest import Readiness
from imaas.services.access import model_of
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
async def readyz(request: Request, svc: Services = Depends(services)) -> Any:
    """200 once warm-up has loaded, or failed to load, every model's ``production`` version; else 503.

    A version that failed to load does not hold readiness back: it is listed under
    ``failed`` with its reason, and its requests answer 503 ``model_not_ready`` until a
    retry succeeds. Models are listed only to a key with ``models:read`` (the ones it sees):
    without one the probe says only whether the server is ready.
    """
    r = svc.inference.readiness()
    p = request.scope.get("state", {}).get("principal")
    show = p is not None and p.allows(Scope.MODELS_READ)

    def shown(refs: list[str]) -> list[str]:
        return [ref for ref in refs if show and p.sees(model_of(ref))]

    body = {
        "status": "ready" if r.ready else "loading",
        "loaded": shown(r.loaded),
        "missing": [m for m in r.missing if show and (" " in m or p.sees(model_of(m)))],
        "failed": [
            {"model": ref, "reason": f.reason, "attempts": f.attempts}
            for ref, f in r.failed.items()
            if show and p.sees(model_of(ref))
        ],
    }
    return FastJSONResponse(body, status_code=200 if r.ready else 503)
