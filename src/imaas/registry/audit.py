"""The audit log: who did what, to what, when, for every privileged action. Append-only.

``record`` inserts one row in its own short transaction (no registry lock: the log orders
by time and id, it is not a change other servers act on); nothing here updates or deletes
a row. ``query`` reads newest first, a page at a time (keyset on the id).

Example::

    audit = SqlAudit(registry)
    audit.record("k1", "admin (k1)", "key.create", "key:3f5k2m7q9xab", {"scopes": ["infer"]})
    audit.query(limit=50)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select

from imaas.registry.queries import aware
from imaas.registry.sql import SqlRegistry
from imaas.registry.tables import AuditRow, utcnow


@dataclass(frozen=True)
class AuditEntry:
    """One privileged action as recorded."""

    id: int
    at: datetime
    key_id: str | None
    actor: str
    action: str
    target: str
    detail: dict[str, Any] = field(default_factory=dict)


class SqlAudit:
    """The ``audit_log`` table of a ``SqlRegistry``."""

    def __init__(self, registry: SqlRegistry) -> None:
        self.registry = registry

    def record(self, key_id: str | None, actor: str, action: str, target: str, detail: dict[str, Any]) -> None:
        """Append one entry (``detail`` must be JSON-serialisable and must never hold a secret)."""
        with self.registry._session() as s:
            s.add(AuditRow(at=utcnow(), key_id=key_id, actor=actor, action=action, target=target, detail=detail))

    def query(
        self,
        *,
        limit: int = 100,
        before: int | None = None,
        key_id: str | None = None,
        action: str | None = None,
        since: datetime | None = None,
    ) -> list[AuditEntry]:
        """Entries newest first: up to ``limit`` with id below ``before``, matching the filters given."""
        q = select(AuditRow).order_by(AuditRow.id.desc()).limit(limit)
        if before is not None:
            q = q.where(AuditRow.id < before)
        if key_id is not None:
            q = q.where(AuditRow.key_id == key_id)
        if action is not None:
            q = q.where(AuditRow.action == action)
        if since is not None:
            q = q.where(AuditRow.at >= since)
        with self.registry._session() as s:
            return [
                AuditEntry(r.id, aware(r.at), r.key_id, r.actor, r.action, r.target, dict(r.detail))
                for r in s.scalars(q)
            ]
