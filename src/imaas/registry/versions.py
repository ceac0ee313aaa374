"""Writes of models and versions: pushes, deletes and the cards (description, tags).

Each function runs inside a write transaction that holds the registry lock. Version
numbers come from ``models.last_version``, never from the versions that remain, so a
deleted version's number is not given to other bytes later.

Artifacts are shared by sha256 between versions (of any model) and removed only when the
last version using them is gone; both the push (``ensure_artifact``) and the removal run
under the registry lock, so they cannot interleave: a push either finds the bytes gone and
stores them again, or the removal finds the push's new row and keeps them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from imaas.domain import ModelRecord, ModelVersion
from imaas.errors import Conflict, VersionInUse
from imaas.registry import queries
from imaas.registry.changes import record
from imaas.registry.tables import ModelRow, StateRow, VersionRow, utcnow
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
    metrics: dict[str, Any] | None,
    actor: str | None,
    ensure_artifact: Callable[[], None] | None,
) -> tuple[ModelVersion, bool]:
    """Register a version (see ``RegistryStore.add_version``); the model is created on its first push.

    ``ensure_artifact`` runs after every check passed and before the row is written, also
    when the same version already exists (so the answer "it is there" holds for the bytes too).
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
            if ensure_artifact is not None:
                ensure_artifact()
            return queries.to_version(name, existing), False
    if parent_version is not None:
        queries.version_row(s, model, parent_version)  # VersionNotFound for an unknown parent
    if ensure_artifact is not None:
        ensure_artifact()
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


def delete_version(s: Session, state: StateRow, name: str, version: int, actor: str | None) -> ModelVersion:
    """Delete a version nothing routes to; ``VersionInUse`` names every alias, canary and
    shadow (of any model) that still points at it. The artifact is the caller's next step."""
    model = queries.model_row(s, name)
    row = queries.version_row(s, model, version)
    users = queries.version_users(s, row)
    if users:
        raise VersionInUse(f"version {version} of {name!r} is in use by {', '.join(users)}")
    deleted = queries.to_version(name, row)
    s.delete(row)
    record(s, state, name, "delete", from_version=version, actor=actor, detail={"sha256": row.sha256})
    return deleted


def remove_unused_artifact(s: Session, sha256: str, remove_artifact: Callable[[str], None]) -> bool:
    """Call ``remove_artifact(sha256)`` when no version row uses those bytes any more."""
    if s.scalar(select(VersionRow.id).where(VersionRow.sha256 == sha256).limit(1)) is not None:
        return False
    remove_artifact(sha256)
    return True


def update_model(
    s: Session,
    state: StateRow,
    name: str,
    *,
    description: str | None,
    tags: dict[str, str] | None,
    keep_latest: int | None,
    actor: str | None,
) -> ModelRecord:
    """Edit a model's card (values were checked by the caller); an ``edit`` event names the
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
