"""Writes that decide where an alias sends traffic: moves, canaries, shadows, and their events.

Each function runs inside a write transaction that already holds the registry lock
(``changes.lock_registry``), so what it reads is what it changes: an ``expect`` check and
the move it guards cannot be separated by another writer. Every change records one event;
a request that changes nothing records none and reports so.
"""

from __future__ import annotations

from types import EllipsisType
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from imaas.domain import AliasRoute
from imaas.errors import ConcurrentChange
from imaas.registry import queries
from imaas.registry.changes import NOT_MOVES, record
from imaas.registry.fields import invalid
from imaas.registry.tables import AliasRow, ModelRow, StateRow, VersionRow, utcnow


def _number(s: Session, version_id: int | None) -> int | None:
    """The version number of a version row id (None for None)."""
    if version_id is None:
        return None
    return s.scalar(select(VersionRow.version).where(VersionRow.id == version_id))


def move_alias(
    s: Session,
    state: StateRow,
    model: ModelRow,
    alias: str,
    target: VersionRow,
    actor: str | None,
    *,
    if_absent: bool = False,
    expect: int | EllipsisType | None = ...,
    action: str = "alias",
    detail: dict[str, Any] | None = None,
) -> bool:
    """Point ``alias`` at ``target`` (see ``RegistryStore.set_alias``); returns whether it moved.

    A move ends the alias's canary, whatever its version: the rollout it measured is
    decided. A shadow that is the new version itself is cleared too (a version mirrored
    to itself measures nothing); any other shadow stays.
    """
    if action in NOT_MOVES:
        raise ValueError(f"an alias move cannot be recorded as {action!r}: that action means something else")
    row = s.scalar(select(AliasRow).where(AliasRow.model_id == model.id, AliasRow.name == alias))
    current = _number(s, row.version_id) if row is not None else None
    if not isinstance(expect, EllipsisType) and expect != current:
        now = "does not exist" if current is None else f"points at version {current}"
        wanted = "not to exist" if expect is None else f"to point at version {expect}"
        raise ConcurrentChange(f"alias {alias!r} of {model.name!r} {now}; this change expected it {wanted}")
    if row is not None and (if_absent or row.version_id == target.id):
        return False
    extra: dict[str, Any] = dict(detail or {})
    if row is None:
        s.add(AliasRow(model_id=model.id, name=alias, version_id=target.id, updated_at=utcnow()))
    else:
        if row.canary_version_id is not None:
            extra["ended_canary"] = _number(s, row.canary_version_id)
            row.canary_version_id, row.canary_weight = None, 0.0
        if row.shadow_version_id == target.id:
            extra["ended_shadow"] = target.version
            row.shadow_version_id, row.shadow_weight = None, 0.0
        row.version_id = target.id
        row.updated_at = utcnow()
    record(
        s,
        state,
        model.name,
        action,
        alias=alias,
        from_version=current,
        to_version=target.version,
        actor=actor,
        detail=extra,
    )
    return True


def set_canary(
    s: Session,
    state: StateRow,
    model: ModelRow,
    alias: str,
    version: int | None,
    weight: float,
    actor: str | None,
) -> AliasRoute:
    """Start, change, complete or end ``alias``'s canary (see ``RegistryStore.set_canary``).

    ``weight`` was checked by the caller (0-100). Completing (100) is a ``promote`` move of
    the alias to the canary; everything else is a ``canary`` event from the old canary
    version (None: there was none) to the new one (None: ended).
    """
    row = queries.alias_row(s, model, alias)
    old = _number(s, row.canary_version_id)
    if version is None or weight == 0:
        if row.canary_version_id is not None:
            row.canary_version_id, row.canary_weight, row.updated_at = None, 0.0, utcnow()
            record(s, state, model.name, "canary", alias=alias, from_version=old, actor=actor, detail={"weight": 0.0})
        return queries.alias_route(s, model, alias)
    target = queries.version_row(s, model, version)
    if target.id == row.version_id:
        raise invalid(
            "version",
            f"{alias!r} of {model.name!r} already points at version {version}; a canary must be another version",
        )
    if weight == 100:
        detail = {"canary_weight": row.canary_weight if row.canary_version_id == target.id else 0.0}
        move_alias(s, state, model, alias, target, actor, action="promote", detail=detail)
        return queries.alias_route(s, model, alias)
    if row.canary_version_id == target.id and row.canary_weight == weight:
        return queries.alias_route(s, model, alias)
    row.canary_version_id, row.canary_weight, row.updated_at = target.id, weight, utcnow()
    record(
        s,
        state,
        model.name,
        "canary",
        alias=alias,
        from_version=old,
        to_version=version,
        actor=actor,
        detail={"weight": weight},
    )
    return queries.alias_route(s, model, alias)


def set_shadow(
    s: Session,
    state: StateRow,
    model: ModelRow,
    alias: str,
    target: tuple[str, int] | None,
    weight: float,
    actor: str | None,
) -> AliasRoute:
    """Start, change or end ``alias``'s shadow (see ``RegistryStore.set_shadow``).

    The shadow may be a version of another model, as long as it does the same task (its
    outputs are compared with the alias's). The event is recorded on the alias's model, with
    the shadow's model in ``detail["model"]``.
    """
    row = queries.alias_row(s, model, alias)
    old = s.execute(
        select(ModelRow.name, VersionRow.version)
        .join(VersionRow, VersionRow.model_id == ModelRow.id)
        .where(VersionRow.id == row.shadow_version_id)
    ).first()
    old_detail = {"from_model": old[0]} if old is not None else {}
    if target is None or weight == 0:
        if old is not None:
            row.shadow_version_id, row.shadow_weight, row.updated_at = None, 0.0, utcnow()
            record(
                s,
                state,
                model.name,
                "shadow",
                alias=alias,
                from_version=old[1],
                actor=actor,
                detail={**old_detail, "weight": 0.0},
            )
        return queries.alias_route(s, model, alias)
    name, version = target
    shadow_model = model if name == model.name else queries.model_row(s, name)
    if shadow_model.task != model.task:
        raise invalid(
            "model",
            f"{name!r} is a {shadow_model.task} model; the shadow of {model.name}:{alias} must be a {model.task} model",
        )
    shadow = queries.version_row(s, shadow_model, version)
    if shadow.id == row.version_id:
        raise invalid(
            "version",
            f"{alias!r} of {model.name!r} points at version {version} itself; a shadow must be another version",
        )
    if row.shadow_version_id == shadow.id and row.shadow_weight == weight:
        return queries.alias_route(s, model, alias)
    row.shadow_version_id, row.shadow_weight, row.updated_at = shadow.id, weight, utcnow()
    record(
        s,
        state,
        model.name,
        "shadow",
        alias=alias,
        from_version=old[1] if old is not None else None,
        to_version=version,
        actor=actor,
        detail={**old_detail, "model": name, "weight": weight},
    )
    return queries.alias_route(s, model, alias)
