"""API keys, usage and the audit log: ``/v1/keys``, ``/v1/usage``, ``/v1/audit``.

Key management and the audit log need ``keys:admin``; a key's secret is in the answer of
the call that made it and nowhere else. ``GET /v1/usage`` answers any key with its own
usage, and with everyone's (and filters by key) only with ``usage:read``.
"""

from __future__ import annotations

import asyncio
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, cast

from fastapi import APIRouter, Body, Depends, Path, Query

from imaas.api.deps import KEYS_ADMIN, Principal, principal, services
from imaas.api.openapi import problem_responses
from imaas.domain import ApiKey, KeyLimits, Scope
from imaas.errors import Conflict, Forbidden, InsufficientScope, InvalidField, InvalidRequest, KeyNotFound
from imaas.metering.pricing import Priced
from imaas.registry.usage import UsageLine
from imaas.schemas.keys import (
    AuditEntryInfo,
    AuditPage,
    CreatedKeyInfo,
    KeyCreate,
    KeyInfo,
    KeyLimitsInfo,
    KeyList,
    KeyRotate,
    UsageReport,
    UsageRow,
    UsageTotals,
)
from imaas.security.keys import KEY_ID_PATTERN
from imaas.services.container import Services
from imaas.services.keys import CreatedKey

router = APIRouter(prefix="/v1", tags=["keys, usage and audit"])

KeyId = Annotated[str, Path(description="the key's id", json_schema_extra={"pattern": KEY_ID_PATTERN})]
MAX_AUDIT_PAGE = 1000
# dates and times are parsed here, strictly: pydantic would also read "0" or 1.5 as one
DAY: dict[str, Any] = {"pattern": r"^\d{4}-\d{2}-\d{2}$", "json_schema_extra": {"format": "date"}}
INSTANT: dict[str, Any] = {
    "pattern": r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,6})?([Zz]|[+-]\d{2}:\d{2})$",
    "json_schema_extra": {"format": "date-time"},
}


def _day(name: str, text: str | None) -> date | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidRequest(f"query.{name}: {text[:40]!r} is not a day (YYYY-MM-DD)") from None


def _instant(name: str, text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        at = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise InvalidRequest(f"query.{name}: {text[:40]!r} is not a time (RFC 3339)") from None
    if at.tzinfo is None:
        raise InvalidRequest(f"query.{name}: give a time zone (e.g. Z)")
    return at


def key_info(key: ApiKey) -> KeyInfo:
    """Wire form of a key (never its secret or hash)."""
    limits = key.limits
    return KeyInfo(
        id=key.id,
        name=key.name,
        scopes=sorted(key.scopes),
        models=list(key.models) if key.models is not None else None,
        limits=KeyLimitsInfo(
            rps=limits.rps,
            burst=limits.burst,
            images_per_day=limits.images_per_day,
            images_per_month=limits.images_per_month,
            free_images_per_month=limits.free_images_per_month,
        ),
        created_at=key.created_at,
        expires_at=key.expires_at,
        revoked_at=key.revoked_at,
        last_used_at=key.last_used_at,
        created_by=key.created_by,
        replaced_by=key.replaced_by,
    )


def _created(created: CreatedKey) -> CreatedKeyInfo:
    return CreatedKeyInfo(key=key_info(created.key), secret=created.text)


@router.post(
    "/keys",
    response_model=CreatedKeyInfo,
    status_code=201,
    summary="Create an API key (its secret is shown once)",
    responses=problem_responses(InvalidRequest, InvalidField, Forbidden, Conflict),
)
async def create_key(
    body: KeyCreate, svc: Services = Depends(services), p: Principal = Depends(KEYS_ADMIN)
) -> CreatedKeyInfo:
    """A new key with the scopes, models, limits and expiry given; the answer holds the
    secret, which is stored only as a hash. A key can give no scope or model it lacks."""
    limits = KeyLimits(**body.limits.model_dump()) if body.limits is not None else None
    models = tuple(body.models) if body.models is not None else None
    created = await asyncio.to_thread(
        lambda: svc.keys.create(
            body.name,
            [scope.value for scope in body.scopes],
            models=models,
            limits=limits,
            expires_at=body.expires_at,
            actor=p.actor,
            creator=p,
        )
    )
    await svc.audit.record(
        p, "key.create", created.key.id, name=body.name, scopes=sorted(created.key.scopes), models=body.models
    )
    return _created(created)


@router.get("/keys", response_model=KeyList, summary="List API keys (no secrets)")
async def list_keys(svc: Services = Depends(services), _p: Principal = Depends(KEYS_ADMIN)) -> KeyList:
    """Every key, oldest first, revoked and expired ones included, with when each was last used."""
    return KeyList(keys=[key_info(k) for k in await asyncio.to_thread(svc.keys.list_keys)])


@router.get(
    "/keys/{key_id}",
    response_model=KeyInfo,
    summary="Describe an API key",
    responses=problem_responses(KeyNotFound),
)
async def get_key(key_id: KeyId, svc: Services = Depends(services), _p: Principal = Depends(KEYS_ADMIN)) -> KeyInfo:
    """One key, without its secret."""
    return key_info(await asyncio.to_thread(svc.keys.get, key_id))


@router.delete(
    "/keys/{key_id}",
    response_model=KeyInfo,
    summary="Revoke an API key",
    responses=problem_responses(KeyNotFound, Conflict),
)
async def revoke_key(key_id: KeyId, svc: Services = Depends(services), p: Principal = Depends(KEYS_ADMIN)) -> KeyInfo:
    """Revoke the key now (every server refuses it within ``auth.refresh_s``; this one at once).
    The last usable key with ``keys:admin`` cannot be revoked (409)."""
    key = await asyncio.to_thread(svc.keys.revoke, key_id)
    await svc.audit.record(p, "key.revoke", key_id)
    return key_info(key)


@router.post(
    "/keys/{key_id}/rotate",
    response_model=CreatedKeyInfo,
    status_code=201,
    summary="Rotate an API key (a new secret; the old one works for a grace period)",
    responses=problem_responses(InvalidRequest, KeyNotFound, Conflict),
)
async def rotate_key(
    key_id: KeyId,
    body: Annotated[KeyRotate | None, Body()] = None,
    svc: Services = Depends(services),
    p: Principal = Depends(KEYS_ADMIN),
) -> CreatedKeyInfo:
    """A new key with the same name, scopes, models, limits and expiry; the old one is revoked
    after ``grace_s`` seconds and names the new one in ``replaced_by``."""
    grace = timedelta(seconds=(body or KeyRotate()).grace_s)
    created = await asyncio.to_thread(svc.keys.rotate, key_id, grace, p.actor, p)
    await svc.audit.record(p, "key.rotate", key_id, new_key=created.key.id, grace_s=grace.total_seconds())
    return _created(created)


def _row(priced: Priced) -> UsageRow:
    ln = cast(UsageLine, priced.line)
    return UsageRow(
        key_id=ln.key_id,
        model=ln.model,
        version=ln.version,
        task=ln.task,
        day=ln.day,
        requests=ln.requests,
        images=ln.images,
        compute_ms=round(ln.compute_ms, 3),
        bytes_in=ln.bytes_in,
        free_images=priced.free_images,
        billable_images=priced.billable_images,
        price_per_1000=decimal_text(priced.price_per_1000) if priced.price_per_1000 is not None else None,
        cost=decimal_text(priced.cost),
    )


def decimal_text(value: Decimal) -> str:
    """A decimal as plain digits (never exponent notation), trailing zeros dropped."""
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


@router.get(
    "/usage",
    response_model=UsageReport,
    summary="Usage and cost per key, model, version, task and day",
    responses=problem_responses(InvalidRequest, InsufficientScope),
)
async def usage(
    key_id: Annotated[str | None, Query(description="one key's usage (needs usage:read unless it is yours)")] = None,
    model: Annotated[str | None, Query(max_length=63, description="one model's usage")] = None,
    start: Annotated[str | None, Query(description="first UTC day (YYYY-MM-DD), inclusive", **DAY)] = None,
    end: Annotated[str | None, Query(description="last UTC day (YYYY-MM-DD), inclusive", **DAY)] = None,
    svc: Services = Depends(services),
    p: Principal = Depends(principal),
) -> UsageReport:
    """Units (requests, images, compute milliseconds, bytes in) and what they cost, after each
    key's monthly free tier. Without ``usage:read`` a key sees only its own usage; a key
    limited to some models sees only theirs."""
    first, last = _day("start", start), _day("end", end)
    if first is not None and last is not None and last < first:
        raise InvalidRequest("query.end: must not be before start")
    if not p.allows(Scope.USAGE_READ):
        if key_id is not None and key_id != p.key_id:
            raise InsufficientScope("reading another key's usage needs the scope 'usage:read'")
        key_id = p.key_id or "-"
    rows = await asyncio.to_thread(lambda: svc.usage.report(key_id=key_id, model=model, start=first, end=last))
    if not p.unrestricted:  # a key limited to some models reads no usage of others, whoever used them
        rows = [r for r in rows if p.sees(r.line.model)]
    total_cost = sum((r.cost for r in rows), Decimal(0))
    return UsageReport(
        rows=[_row(r) for r in rows],
        total=UsageTotals(
            requests=sum(cast(UsageLine, r.line).requests for r in rows),
            images=sum(r.line.images for r in rows),
            billable_images=sum(r.billable_images for r in rows),
            cost=decimal_text(total_cost),
        ),
    )


@router.get("/audit", response_model=AuditPage, summary="The audit log of privileged actions, newest first")
async def audit(
    limit: Annotated[int, Query(ge=1, le=MAX_AUDIT_PAGE)] = 100,
    before: Annotated[int | None, Query(ge=1, description="the `next` of the previous page")] = None,
    key_id: Annotated[str | None, Query(max_length=32, description="actions of one key")] = None,
    action: Annotated[str | None, Query(max_length=64, description="e.g. key.create, version.push")] = None,
    since: Annotated[
        str | None, Query(description="actions at or after this time (RFC 3339, with a time zone)", **INSTANT)
    ] = None,
    svc: Services = Depends(services),
    _p: Principal = Depends(KEYS_ADMIN),
) -> AuditPage:
    """Who did what to what, and when: keys, pushes, alias moves, canaries, shadows, card edits,
    deletions, loads and unloads. Append-only."""
    entries = await svc.audit.query(
        limit=limit + 1, before=before, key_id=key_id, action=action, since=_instant("since", since)
    )
    page = entries[:limit]
    return AuditPage(
        entries=[
            AuditEntryInfo(
                id=e.id, at=e.at, key_id=e.key_id, actor=e.actor, action=e.action, target=e.target, detail=e.detail
            )
            for e in page
        ],
        next=page[-1].id if len(entries) > limit else None,
    )
