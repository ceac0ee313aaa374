"""Recording privileged actions: who (key and name), what, to what, when.

Every key change, push, alias move, canary, shadow, card edit, deletion, load and unload
is recorded here by the service or route that performed it, after it succeeded, with the
caller's ``Principal``. The log is append-only (``registry/audit.py``). A write that fails
(the registry went away between the action and its record) is retried once and then logged
as an error naming the action, never turned into a failure of an action that happened.

Example::

    await audit.record(principal, "alias.set", "mobilenet-v2:production", version=3)
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

from imaas.domain import Principal
from imaas.registry.audit import AuditEntry, SqlAudit

log = logging.getLogger(__name__)

MAX_TEXT = 200  # target and detail strings are clamped: the log is for people, not payloads


def _clamp(value: Any) -> Any:
    if isinstance(value, str):
        return value[:MAX_TEXT]
    if isinstance(value, list | tuple):
        return [_clamp(v) for v in value[:64]]
    if isinstance(value, dict):
        return {str(k)[:64]: _clamp(v) for k, v in list(value.items())[:64]}
    if value is None or isinstance(value, bool | int | float):
        return value
    return str(value)[:MAX_TEXT]


class AuditService:
    """Appends to and reads the audit log."""

    def __init__(self, store: SqlAudit) -> None:
        self.store = store

    async def record(self, p: Principal, action: str, target: str, **detail: Any) -> None:
        """Append one entry for an action ``p`` just performed (never raises)."""
        args = (p.key_id, p.actor[:MAX_TEXT], action, target[:MAX_TEXT], _clamp(detail))
        for attempt in (1, 2):
            try:
                await asyncio.to_thread(self.store.record, *args)
                return
            except Exception as exc:
                if attempt == 2:
                    log.error("the audit log did not take %s on %s by %s: %s", action, target, p.actor, exc)

    async def query(
        self,
        *,
        limit: int = 100,
        before: int | None = None,
        key_id: str | None = None,
        action: str | None = None,
        since: datetime | None = None,
    ) -> list[AuditEntry]:
        """Entries newest first (see ``SqlAudit.query``)."""
        return await asyncio.to_thread(
            lambda: self.store.query(limit=limit, before=before, key_id=key_id, action=action, since=since)
        )
