"""Writes of models and versions: pushes, deletes and the cards (description, tags).

Each function runs inside a write transaction that holds the registry lock. Version
numbers come from ``models.last_version``, never from the versions that remain, so a
deleted version's number is not given to other bytes later.

Artifacts are shared by sha256 between versions (of any model). Deleting the last version
that uses some bytes records a tombstone (``artifact_tombstones``) in the same transaction
and touches no storage: a slow or stalled bucket never holds the registry lock on a
request's path. ``sweep_one`` (run by ``SqlRegistry.sweep_artifacts``) removes tombstoned
bytes later, one sha256 per short transaction under the registry lock, after checking
again that no version uses them. Only the sweeper removes bytes and only tombstoned ones,
so a push whose sha256 has no tombstone knows its bytes are stored (it committed them
before ``add_version``) and does no I/O under the lock; with a tombstone (waiting, or
removed by a sweep that may have run after the push uploaded or found its bytes) it calls
``ensure_artifact`` there, and the tombstone goes.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from types import EllipsisType
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from imaas.domain import ModelRecord, ModelVersion
from imaas.errors import Conflict, VersionInUse
from imaas.registry import queries
from imaas.registry.changes import record
from imaas.registry.tables import ModelRow, StateRow, TombstoneRow, VersionRow, utcnow
from imaas.schemas.manifest import Manifest


def add_version(
    s: Session,
    state: StateRow,
    name: str,
    sha256: str,
    size_bytes: int,
    manifest: dict[str, Any],
    *,
    source: str | None,
    parent_version: int | None,
    dataset: str | None = None,
    job_id: str | None = None,
    metrics: dict[str, Any] | None,
    actor: str | None,
    ensure_artifact: Callable[[], None] | None,
) -> tuple[ModelVersion, bool]:
    """Register a version (see ``RegistryStore.add_version``); the model is created on its first push.

    After every check passed and before the row is written (also when the same version
    already exists), a tombstone of ``sha256`` is claimed: ``ensure_artifact`` runs, since
    a sweep may have removed the bytes, and the tombstone goes (``claim_artifact``).
    """
    model = s.scalar(select(ModelRow).where(ModelRow.name == name))
    if model is None:
        model = ModelRow(name=name, task=manifest["task"], description="", created_at=utcnow(), tags={})
        s.add(model)
        s.flush()
    elif model.task != manifest["task"]:
        raise Conflict(f"model {name!r} is a {model.task} model; a {manifest['task']} version cannot join it")
    for existing in s.scalars(select(VersionRow).where(VersionRow.model_id == model.id, VersionRow.sha256 == sha256)):
        # compare in today's form: a row stored before a field was added lacks its default
        if Manifest.model_validate(existing.manifest).model_dump(mode="json") == manifest:
            claim_artifact(s, sha256, ensure_artifact)
            return queries.to_version(name, existing), False
    if parent_version is not None:
        queries.version_row(s, model, parent_version)  # VersionNotFound for an unknown parent
    claim_artifact(s, sha256, ensure_artifact)
    model.last_version += 1
    row = VersionRow(
        model_id=model.id,
        version=model.last_version,
        sha256=sha256,
        size_bytes=size_bytes,
        manifest=manifest,
        metrics=metrics or {},
        source=source,
        parent_version=parent_version,
        dataset=dataset,
        job_id=job_id,
        created_at=utcnow(),
        description="",
        tags={},
    )
    s.add(row)
    if manifest.get("description"):
        model.description = manifest["description"]
    record(s, state, name, "push", to_version=row.version, actor=actor, detail={"sha256": sha256})
    s.flush()
    return queries.to_version(name, row), True


def claim_artifact(s: Session, sha256: str, ensure_artifact: Callable[[], None] | None) -> None:
    """A version is about to use ``sha256``: if a tombstone names it, run ``ensure_artifact``
    (the sweeper may have removed the bytes, even after the caller stored or found them)
    and drop the tombstone. Without one the bytes are stored and nothing is called.

    An ``ensure_artifact`` that raises aborts the write (and keeps the tombstone).
    """
    tombstone = s.get(TombstoneRow, sha256)
    if tombstone is None:
        return
    if ensure_artifact is not None:
        ensure_artifact()
    s.delete(tombstone)


def in_use(s: Session, sha256: str) -> bool:
    """Whether any version (of any model) uses the bytes ``sha256``."""
    return s.scalar(select(VersionRow.id).where(VersionRow.sha256 == sha256).limit(1)) is not None


def delete_version(s: Session, state: StateRow, name: str, version: int, actor: str | None) -> ModelVersion:
    """Delete a version nothing routes to; ``VersionInUse`` names every alias, canary and
    shadow (of any model) that still points at it. When it was the last version using its
    bytes, a tombstone tells the sweeper to remove them (no storage call here)."""
    model = queries.model_row(s, name)
    row = queries.version_row(s, model, version)
    users = queries.version_users(s, row)
    if users:
        raise VersionInUse(f"version {version} of {name!r} is in use by {', '.join(users)}")
    deleted = queries.to_version(name, row)
    s.delete(row)
    s.flush()
    if not in_use(s, deleted.sha256):
        tombstone = s.get(TombstoneRow, deleted.sha256)
        if tombstone is None:
            s.add(TombstoneRow(sha256=deleted.sha256, since=utcnow(), removed_at=None))
        else:  # the bytes were removed once and pushed again since: they wait again
            tombstone.since, tombstone.removed_at = utcnow(), None
    record(s, state, name, "delete", from_version=version, actor=actor, detail={"sha256": deleted.sha256})
    return deleted


def sweep_candidates(s: Session, before: datetime, limit: int) -> list[str]:
    """Tombstoned sha256s waiting since before ``before``, oldest first, at most ``limit``."""
    q = (
        select(TombstoneRow.sha256)
        .where(TombstoneRow.removed_at.is_(None), TombstoneRow.since <= before)
        .order_by(TombstoneRow.since, TombstoneRow.sha256)
        .limit(max(limit, 0))
    )
    return list(s.scalars(q))


class RemovalFailed(Exception):
    """``remove_artifact`` raised inside a sweep: the transaction is rolled back and the
    tombstone stays. The message is the cause in one line (its class and first line)."""


def sweeper(
    sha256: str, before: datetime, remove_artifact: Callable[[str], None]
) -> Callable[[Session, StateRow], bool]:
    """The write that sweeps one tombstone (``sweep_one``), for ``SqlRegistry._write``."""
    return lambda s, _state: sweep_one(s, sha256, before, remove_artifact)


def sweep_one(s: Session, sha256: str, before: datetime, remove_artifact: Callable[[str], None]) -> bool:
    """Under the registry lock: remove the bytes of a waiting tombstone if still unused.

    Returns whether ``remove_artifact`` ran; when it raises, ``RemovalFailed`` rolls the
    transaction back (the tombstone waits for the next sweep). A tombstone whose bytes a
    version uses again is dropped; one another sweeper handled meanwhile is left alone.
    """
    tombstone = s.get(TombstoneRow, sha256)
    if tombstone is None or tombstone.removed_at is not None or queries.aware(tombstone.since) > before:
        return False
    if in_use(s, sha256):
        s.delete(tombstone)
        return False
    try:
        remove_artifact(sha256)
    except Exception as exc:
        lines = str(exc).strip().splitlines()
        raise RemovalFailed(f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__) from exc
    tombstone.removed_at = utcnow()
    return True


def removed_before(s: Session, before: datetime) -> bool:
    """Whether a tombstone's bytes were removed before ``before`` (``forget_removed`` has work)."""
    q = select(TombstoneRow.sha256).where(TombstoneRow.removed_at.is_not(None), TombstoneRow.removed_at < before)
    return s.scalar(q.limit(1)) is not None


def forget_removed(s: Session, before: datetime) -> int:
    """Drop tombstones whose bytes were removed before ``before``: no push still on its way
    can have seen those bytes. Returns how many went."""
    rows = list(
        s.scalars(select(TombstoneRow).where(TombstoneRow.removed_at.is_not(None), TombstoneRow.removed_at < before))
    )
    for row in rows:
        s.delete(row)
    return len(rows)


def update_model(
    s: Session,
    state: StateRow,
    name: str,
    *,
    description: str | None,
    tags: dict[str, str] | None,
    keep_latest: int | None,
    price_per_1000: Decimal | EllipsisType | None,
    actor: str | None,
) -> ModelRecord:
    """Edit a model's card (values were checked by the caller; None keeps a field, except
    ``price_per_1000``, which ``...`` keeps and None clears); an ``edit`` event names the
    fields that changed, and nothing is recorded when none did."""
    model = queries.model_row(s, name)
    changed: list[str] = []
    if description is not None and description != model.description:
        model.description = description
        changed.append("description")
    if tags is not None and tags != model.tags:
        model.tags = tags
        changed.append("tags")
    if keep_latest is not None and keep_latest != model.keep_latest:
        model.keep_latest = keep_latest
        changed.append("keep_latest")
    if not isinstance(price_per_1000, EllipsisType) and price_per_1000 != model.price_per_1000:
        model.price_per_1000 = price_per_1000
        changed.append("price_per_1000")
    if changed:
        record(s, state, name, "edit", actor=actor, detail={"fields": changed})
    return queries.records(s, [model])[0]


def update_version(
    s: Session,
    state: StateRow,
    name: str,
    version: int,
    *,
    description: str | None,
    tags: dict[str, str] | None,
    actor: str | None,
) -> ModelVersion:
    """Edit a version's card (values were checked by the caller), recorded like ``update_model``."""
    row = queries.version_row(s, queries.model_row(s, name), version)
    changed: list[str] = []
    if description is not None and description != row.description:
        row.description = description
        changed.append("description")
    if tags is not None and tags != row.tags:
        row.tags = tags
        changed.append("tags")
    if changed:
        record(s, state, name, "edit", to_version=version, actor=actor, detail={"fields": changed})
    return queries.to_version(name, row)
