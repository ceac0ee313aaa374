"""The audit log (registry/audit.py), both databases."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from imaas.registry.audit import SqlAudit
from imaas.registry.sql import open_registry


@pytest.fixture
def audit(registry_url: str) -> Iterator[SqlAudit]:
    registry = open_registry(registry_url)
    yield SqlAudit(registry)
    registry.close()


def test_entries_come_back_newest_first_with_what_was_recorded(audit: SqlAudit) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    audit.record("k1", "admin (k1)", "key.create", "key:abc", {"scopes": ["infer"]})
    audit.record(None, "anonymous", "model.push", "model:cats@1", {})
    audit.record("k1", "admin (k1)", "key.revoke", "key:abc", {})
    entries = audit.query()
    assert [e.action for e in entries] == ["key.revoke", "model.push", "key.create"]
    first = entries[-1]
    expected = ("k1", "admin (k1)", "key:abc", {"scopes": ["infer"]})
    assert (first.key_id, first.actor, first.target, first.detail) == expected
    assert first.at >= before
    assert first.at.tzinfo is not None


def test_filters_and_pages(audit: SqlAudit) -> None:
    for i in range(5):
        audit.record("k1" if i % 2 else "k2", "x", "model.push", f"model:m@{i}", {})
    page1 = audit.query(limit=2)
    page2 = audit.query(limit=2, before=page1[-1].id)
    assert [e.target for e in page1 + page2] == ["model:m@4", "model:m@3", "model:m@2", "model:m@1"]
    assert [e.target for e in audit.query(key_id="k1")] == ["model:m@3", "model:m@1"]
    assert audit.query(action="key.create") == []
    assert len(audit.query(since=datetime.now(UTC) + timedelta(hours=1))) == 0
