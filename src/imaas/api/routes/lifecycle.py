"""Model lifecycle endpoints: promote, rollback, canary, shadow, status, comparison,
history, model cards and version deletion. Thin: each calls ``LifecycleService``."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query
from fastapi.responses import Response

from imaas.api.deps import READ, WRITE, Principal, services
from imaas.api.openapi import AliasName, ModelName, VersionPath, problem_responses
from imaas.api.routes.models import WARM_ERRORS, WRITE_ERRORS, route_info, summary, version_info
from imaas.domain import ALIAS_RE, MAX_VERSION, check_name, parse_decimal
from imaas.errors import (
    AliasNotFound,
    InvalidField,
    InvalidRequest,
    ModelNotFound,
    NothingToRollBack,
    VersionInUse,
    VersionNotFound,
)
from imaas.schemas.lifecycle import (
    AliasChangeInfo,
    CanaryRequest,
    Comparison,
    EventInfo,
    History,
    LatencyInfo,
    ModelCardUpdate,
    ModelStatus,
    PairInfo,
    PromoteRequest,
    RollbackRequest,
    ShadowRequest,
    VersionCardUpdate,
    VersionStatusInfo,
)
from imaas.schemas.rest import AliasRouteInfo, ModelSummary, VersionInfo
from imaas.services.access import check_model
from imaas.services.comparison import Latency
from imaas.services.container import Services
from imaas.services.lifecycle import AliasChange

router = APIRouter(prefix="/v1/models", tags=["lifecycle"])

LOOKUP = (InvalidRequest, ModelNotFound, VersionNotFound)


def _version(text: str) -> int:
    number = parse_decimal(text)
    if number is None or not 1 <= number <= MAX_VERSION:
        raise InvalidRequest(f"invalid version {text[:40]!r}: versions are integers from 1 to {MAX_VERSION}")
    return number


def _alias(alias: str) -> str:
    if not ALIAS_RE.fullmatch(alias):
        raise InvalidRequest(f"invalid alias {alias[:40]!r}")
    return alias


def _change(change: AliasChange) -> AliasChangeInfo:
    return AliasChangeInfo(
        model=change.model,
        alias=change.alias,
        from_version=change.from_version,
        to_version=change.to_version,
        moved=change.moved,
    )


def _epoch(seconds: float | None) -> datetime | None:
    return datetime.fromtimestamp(seconds, UTC) if seconds is not None else None


def _latency(lat: Latency) -> LatencyInfo:
    return LatencyInfo(p50_ms=lat.p50_ms, p95_ms=lat.p95_ms, mean_ms=lat.mean_ms)


@router.post(
    "/{name}/promote",
    response_model=AliasChangeInfo,
    summary="Promote a version to an alias (loaded and warmed first)",
    responses=problem_responses(*LOOKUP, *WRITE_ERRORS, *WARM_ERRORS),
)
async def promote(
    name: ModelName, body: PromoteRequest, svc: Services = Depends(services), p: Principal = Depends(WRITE)
) -> AliasChangeInfo:
    """Load ``version``, run one real inference on it, then move the alias atomically.

    Requests in flight finish on the old version, which is unloaded once drained and no
    alias needs it. If the version cannot load or answer, the alias stays and the 409 says
    why; a concurrent change of the alias is a 409 ``concurrent_change``.
    """
    check_name(name)
    change = await svc.lifecycle.promote(name, body.version, body.alias, p.actor)
    await svc.audit.record(p, "model.promote", f"{name}:{body.alias}", version=body.version)
    return _change(change)


@router.post(
    "/{name}/rollback",
    response_model=AliasChangeInfo,
    summary="Roll an alias back to its previous version",
    responses=problem_responses(*LOOKUP, AliasNotFound, NothingToRollBack, *WRITE_ERRORS, *WARM_ERRORS),
)
async def rollback(
    name: ModelName,
    body: Annotated[RollbackRequest | None, Body()] = None,
    svc: Services = Depends(services),
    p: Principal = Depends(WRITE),
) -> AliasChangeInfo:
    """Undo the alias's last change (repeated rollbacks walk back through its history)."""
    check_name(name)
    alias = (body or RollbackRequest()).alias
    change = await svc.lifecycle.rollback(name, alias, p.actor)
    await svc.audit.record(p, "model.rollback", f"{name}:{alias}", version=change.to_version)
    return _change(change)


@router.put(
    "/{name}/aliases/{alias}/canary",
    response_model=AliasRouteInfo,
    summary="Split an alias's traffic with a canary version",
    responses=problem_responses(*LOOKUP, AliasNotFound, InvalidField, *WRITE_ERRORS, *WARM_ERRORS),
)
async def set_canary(
    name: ModelName,
    alias: AliasName,
    body: CanaryRequest,
    svc: Services = Depends(services),
    p: Principal = Depends(WRITE),
) -> AliasRouteInfo:
    """Answer ``weight`` percent of the alias's requests with ``version`` (warmed first).

    A request with an ``X-Imaas-Routing-Key`` header always lands on the same side for the
    same key; others are split at random. Weight 100 completes the rollout (the alias moves
    to the canary), weight 0 ends it.
    """
    check_name(name)
    route = await svc.lifecycle.set_canary(name, _alias(alias), body.version, body.weight, p.actor)
    await svc.audit.record(p, "model.canary", f"{name}:{alias}", version=body.version, weight=body.weight)
    return route_info(route, p)


@router.delete(
    "/{name}/aliases/{alias}/canary",
    response_model=AliasRouteInfo,
    summary="End an alias's canary",
    responses=problem_responses(*LOOKUP, AliasNotFound, *WRITE_ERRORS),
)
async def end_canary(
    name: ModelName, alias: AliasName, svc: Services = Depends(services), p: Principal = Depends(WRITE)
) -> AliasRouteInfo:
    """Send all of the alias's traffic back to its version."""
    check_name(name)
    route = await svc.lifecycle.set_canary(name, _alias(alias), None, 0.0, p.actor)
    await svc.audit.record(p, "model.canary_end", f"{name}:{alias}")
    return route_info(route, p)


@router.put(
    "/{name}/aliases/{alias}/shadow",
    response_model=AliasRouteInfo,
    summary="Mirror a share of an alias's traffic to a shadow version",
    responses=problem_responses(*LOOKUP, AliasNotFound, InvalidField, *WRITE_ERRORS, *WARM_ERRORS),
)
async def set_shadow(
    name: ModelName,
    alias: AliasName,
    body: ShadowRequest,
    svc: Services = Depends(services),
    p: Principal = Depends(WRITE),
) -> AliasRouteInfo:
    """Copy ``weight`` percent of the alias's requests to a version (of this model or
    another of the same task) that never answers callers; compare them with
    ``GET /v1/models/{name}/comparison``."""
    check_name(name)
    target = (body.model or name, body.version)
    check_model(p, target[0])  # a limited key shadows only to models it sees
    route = await svc.lifecycle.set_shadow(name, _alias(alias), target, body.weight, p.actor)
    await svc.audit.record(
        p, "model.shadow", f"{name}:{alias}", model=target[0], version=body.version, weight=body.weight
    )
    return route_info(route, p)


@router.delete(
    "/{name}/aliases/{alias}/shadow",
    response_model=AliasRouteInfo,
    summary="End an alias's shadow",
    responses=problem_responses(*LOOKUP, AliasNotFound, *WRITE_ERRORS),
)
async def end_shadow(
    name: ModelName, alias: AliasName, svc: Services = Depends(services), p: Principal = Depends(WRITE)
) -> AliasRouteInfo:
    """Stop copying the alias's traffic."""
    check_name(name)
    route = await svc.lifecycle.set_shadow(name, _alias(alias), None, 0.0, p.actor)
    await svc.audit.record(p, "model.shadow_end", f"{name}:{alias}")
    return route_info(route, p)


@router.get(
    "/{name}/status",
    response_model=ModelStatus,
    summary="Load state, memory and last use of each version on this server",
    responses=problem_responses(InvalidRequest, ModelNotFound),
)
async def status(name: ModelName, svc: Services = Depends(services), _p: Principal = Depends(READ)) -> ModelStatus:
    """Per version, newest first: ready, loading, failed (with the reason), draining or
    unloaded; its resident memory, load time and last use, on the server that answered."""
    check_name(name)
    versions, rss = await svc.lifecycle.status(name)
    return ModelStatus(
        model=name,
        resident_bytes=rss,
        versions=[
            VersionStatusInfo(
                version=v.version,
                state=v.state,
                reason=v.reason,
                memory_bytes=v.memory_bytes,
                load_seconds=v.load_seconds,
                loaded_at=_epoch(v.loaded_at),
                last_used_at=_epoch(v.last_used_at),
                pinned=v.pinned,
                queue_depth=v.queue_depth,
            )
            for v in versions
        ],
    )


@router.get(
    "/{name}/comparison",
    response_model=Comparison,
    summary="How shadows agree with the versions that answered",
    responses=problem_responses(InvalidRequest, ModelNotFound),
)
async def comparison(name: ModelName, svc: Services = Depends(services), p: Principal = Depends(READ)) -> Comparison:
    """Per pair of versions: images compared, agreement (classification: same top-1 class),
    copies dropped or failed, and each side's latency; this server's figures since start."""
    check_name(name)
    pairs = await svc.lifecycle.comparison(name)
    return Comparison(
        model=name,
        pairs=[
            PairInfo(
                version=s.primary[1],
                shadow_model=s.shadow[0],
                shadow_version=s.shadow[1],
                compared=s.compared,
                agreement=s.agreement,
                dropped=s.dropped,
                failed=s.failed,
                latency=_latency(s.primary_latency),
                shadow_latency=_latency(s.shadow_latency),
            )
            for s in pairs
            if p.sees(s.shadow[0])  # a limited key learns no other model's name
        ],
    )


@router.get(
    "/{name}/history",
    response_model=History,
    summary="Every push, promote, rollback, canary, shadow, edit and delete of a model",
    responses=problem_responses(InvalidRequest, ModelNotFound),
)
async def history(
    name: ModelName,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before: Annotated[int | None, Query(ge=1, le=MAX_VERSION, description="the `next` of the previous page")] = None,
    svc: Services = Depends(services),
    p: Principal = Depends(READ),
) -> History:
    """Who changed what and when, newest first."""
    check_name(name)
    events = await svc.lifecycle.history(name, limit + 1, before)
    page = events[:limit]
    return History(
        model=name,
        events=[
            EventInfo(
                seq=e.seq,
                action=e.action,
                alias=e.alias,
                from_version=e.from_version,
                to_version=e.to_version,
                actor=e.actor,
                at=e.at,
                detail=_visible_detail(e.detail, p),
            )
            for e in page
        ],
        next=page[-1].seq if len(events) > limit else None,
    )


@router.patch(
    "/{name:imaas_model}",
    response_model=ModelSummary,
    summary="Edit a model's description, tags, keep_latest or price",
    responses=problem_responses(InvalidRequest, ModelNotFound, InvalidField, *WRITE_ERRORS),
)
async def update_model(
    name: ModelName, body: ModelCardUpdate, svc: Services = Depends(services), p: Principal = Depends(WRITE)
) -> ModelSummary:
    """Change the fields given; the others stay. ``"price_per_1000": null`` clears the price
    (the task's price applies again); null for any other field keeps it."""
    check_name(name)
    fields = body.model_dump(exclude_none=True)
    if "price_per_1000" in body.model_fields_set:  # given, null included: null means "no price of its own"
        fields["price_per_1000"] = body.price_per_1000
    record = await svc.lifecycle.update_model(name, p.actor, **fields)
    await svc.audit.record(p, "model.update", name, fields=sorted(fields))
    return summary(record, p)


@router.patch(
    "/{name}/versions/{version}",
    response_model=VersionInfo,
    summary="Edit a version's description or tags",
    responses=problem_responses(*LOOKUP, InvalidField, *WRITE_ERRORS),
)
async def update_version(
    name: ModelName,
    version: VersionPath,
    body: VersionCardUpdate,
    svc: Services = Depends(services),
    p: Principal = Depends(WRITE),
) -> VersionInfo:
    """Change the fields given; the others stay."""
    check_name(name)
    fields = body.model_dump(exclude_none=True)
    updated = await svc.lifecycle.update_version(name, _version(version), p.actor, **fields)
    await svc.audit.record(p, "version.update", f"{name}@{updated.version}", fields=sorted(fields))
    record = await asyncio.to_thread(svc.models.get_model, name)
    return version_info(updated, record.aliases, svc)


@router.delete(
    "/{name}/versions/{version}",
    status_code=204,
    response_class=Response,
    summary="Delete a version",
    responses=problem_responses(*LOOKUP, VersionInUse, *WRITE_ERRORS),
)
async def delete_version(
    name: ModelName, version: VersionPath, svc: Services = Depends(services), p: Principal = Depends(WRITE)
) -> Response:
    """Delete a version no alias, canary or shadow points at (409 ``version_in_use``
    otherwise); its file is removed with its last reference."""
    check_name(name)
    deleted = await svc.lifecycle.delete_version(name, _version(version), p.actor)
    await svc.audit.record(p, "version.delete", f"{name}@{deleted.version}", sha256=deleted.sha256)
    return Response(status_code=204)


def _visible_detail(detail: dict[str, Any], p: Principal) -> dict[str, Any]:
    """An event's detail without the other model a limited key does not see (a shadow's target)."""
    other = detail.get("model")
    if isinstance(other, str) and not p.sees(other):
        return {k: v for k, v in detail.items() if k not in ("model", "version")}
    return detail
