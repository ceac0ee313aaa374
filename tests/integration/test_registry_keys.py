"""API keys in the registry (registry/keys.py), on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from imaas.domain import KeyLimits
from imaas.errors import Conflict, KeyNotFound
from imaas.registry.keys import SqlKeys
from imaas.registry.sql import open_registry
from imaas.security.keys import hash_key, new_key, parse_key, verify


@pytest.fixture
def keys(registry_url: str):  # type: ignore[no-untyped-def]
    registry = open_registry(registry_url)
    yield SqlKeys(registry)
    registry.close()


def test_a_created_key_is_stored_by_hash_and_verifies(keys: SqlKeys) -> None:
    issued = new_key()
    limits = KeyLimits(rps=5, burst=10, images_per_day=100, free_images_per_month=50)
    expires = datetime(2030, 1, 1, tzinfo=UTC)
    record = keys.create(
        issued.id,
        issued.secret_hash,
        "ci",
        ["infer", "models:read", "infer"],
        models=("team-a-*", "cats"),
        limits=limits,
        expires_at=expires,
        created_by="admin (x)",
    )
    got = keys.get(issued.id)
    assert got == record
    assert got.scopes == frozenset({"infer", "models:read"})
    assert got.models == ("team-a-*", "cats")
    assert got.limits == limits
    assert got.expires_at == expires
    assert got.secret_hash == hash_key(issued.text)
    assert issued.text not in repr(got)
    assert verify(parse_key(issued.text), got.secret_hash)


def test_a_taken_id_is_a_conflict(keys: SqlKeys) -> None:
    issued = new_key()
    keys.create(issued.id, issued.secret_hash, "a", ["infer"])
    with pytest.raises(Conflict):
        keys.create(issued.id, new_key(issued.id).secret_hash, "b", ["infer"])
    assert [k.name for k in keys.list_keys()] == ["a"]


def test_changes_are_numbered_so_a_refresh_sees_creates_and_revokes(keys: SqlKeys) -> None:
    a, b = new_key(), new_key()
    ka = keys.create(a.id, a.secret_hash, "a", ["infer"])
    kb = keys.create(b.id, b.secret_hash, "b", ["infer"])
    assert kb.seq > ka.seq
    assert [k.id for k in keys.changed_since(0)] == [a.id, b.id]
    assert [k.id for k in keys.changed_since(ka.seq)] == [b.id]
    assert keys.changed_since(kb.seq) == []
    revoked = keys.revoke(a.id)
    assert revoked.revoked_at is not None
    assert revoked.seq > kb.seq
    assert [(k.id, k.revoked_at is not None) for k in keys.changed_since(kb.seq)] == [(a.id, True)]
    again = keys.revoke(a.id)  # idempotent: the first revocation time stays, no new change
    assert again.revoked_at == revoked.revoked_at
    assert again.seq == revoked.seq


def test_unknown_keys_are_not_found(keys: SqlKeys) -> None:
    with pytest.raises(KeyNotFound):
        keys.get("nosuchkeyidxx")
    with pytest.raises(KeyNotFound):
        keys.revoke("nosuchkeyidxx")


def test_touch_records_last_use_without_a_change_number(keys: SqlKeys) -> None:
    a = new_key()
    created = keys.create(a.id, a.secret_hash, "a", ["infer"])
    at = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    keys.touch({a.id: at, "unknownkeyidz": at})
    got = keys.get(a.id)
    assert got.last_used_at is not None
    assert abs(got.last_used_at - at) < timedelta(seconds=1)
    assert got.seq == created.seq
    assert keys.changed_since(created.seq) == []
