"""Daily usage rows in the registry: added to in batches, read back by key, model and day.

A batch is one transaction of upserts (``INSERT ... ON CONFLICT DO UPDATE SET n = n +
excluded.n`` on SQLite and PostgreSQL alike), so several servers flushing the same key's
units on the same day add up instead of overwriting each other. No registry lock and no
change sequence: usage is not a change other servers act on.

Example::

    usage = SqlUsage(registry)
    usage.add([UsageLine("k1", "mobilenet-v2", 1, "classification", date(2026, 12, 2), 1, 2, 12.5, 40_000)])
    usage.query(key_id="k1", start=date(2026, 12, 1), end=date(2026, 12, 31))
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite

from imaas.registry.sql import SqlRegistry
from imaas.registry.tables import UsageRow

_UNITS = ("requests", "images", "compute_ms", "bytes_in")


@dataclass(frozen=True)
class UsageLine:
    """One key's units on one model version and task in one UTC day."""

    key_id: str
    model: str
    version: int
    task: str
    day: date
    requests: int
    images: int
    compute_ms: float
    bytes_in: int


class SqlUsage:
    """The ``usage_daily`` table of a ``SqlRegistry``."""

    def __init__(self, registry: SqlRegistry) -> None:
        self.registry = registry
        dialect = registry.engine.dialect.name
        self._insert = postgresql.insert if dialect == "postgresql" else sqlite.insert

    def add(self, lines: Iterable[UsageLine]) -> None:
        """Add every line's units to its row (created when absent), in one transaction.

        Lines for the same row are summed first: PostgreSQL refuses one statement that
        updates a row twice.
        """
        merged: dict[tuple[str, str, int, str, date], dict[str, float]] = {}
        for ln in lines:
            row = merged.setdefault((ln.key_id, ln.model, ln.version, ln.task, ln.day), dict.fromkeys(_UNITS, 0))
            for u in _UNITS:
                row[u] += getattr(ln, u)
        if not merged:
            return
        keys = ("key_id", "model", "version", "task", "day")
        values = [dict(zip(keys, k, strict=True)) | units for k, units in merged.items()]
        stmt = self._insert(UsageRow).values(values)
        stmt = stmt.on_conflict_do_update(
            index_elements=["key_id", "model", "version", "task", "day"],
            set_={u: getattr(UsageRow, u) + getattr(stmt.excluded, u) for u in _UNITS},
        )
        with self.registry._session() as s:
            s.execute(stmt)

    def query(
        self,
        *,
        key_id: str | None = None,
        model: str | None = None,
        start: date | None = None,
        end: date | None = None,
    ) -> list[UsageLine]:
        """Rows matching every filter given (days ``start`` to ``end`` inclusive), by day, key, model, version."""
        q = select(UsageRow).order_by(UsageRow.day, UsageRow.key_id, UsageRow.model, UsageRow.version, UsageRow.task)
        if key_id is not None:
            q = q.where(UsageRow.key_id == key_id)
        if model is not None:
            q = q.where(UsageRow.model == model)
        if start is not None:
            q = q.where(UsageRow.day >= start)
        if end is not None:
            q = q.where(UsageRow.day <= end)
        with self.registry._session() as s:
            return [
                UsageLine(r.key_id, r.model, r.version, r.task, r.day, r.requests, r.images, r.compute_ms, r.bytes_in)
                for r in s.scalars(q)
            ]
