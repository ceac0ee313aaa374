"""API keys in the registry database: created, listed, revoked, refreshed incrementally.

Every change to a key (create, revoke) takes the next number of the registry's change
sequence under the registry lock and stamps it on the key's row, so a server keeps an
in-memory table of every key up to date with ``changed_since(last_seq)``: one indexed
query, however many keys exist, and a key revoked on one replica is refused on all of them
within one refresh. ``last_used_at`` is written in batches (``touch``) and takes no number.
Only the SHA-256 of a key is stored (``security/keys.py``).

Example::

    keys = SqlKeys(open_registry("sqlite:////tmp/imaas/registry.db"))
    issued = new_key()            # imaas.security.keys: the text is shown once, never stored
    record = keys.create(issued.id, issued.secret_hash, "ci", {"infer"}, models=("team-a-*",))
    keys.revoke(record.id)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update

from imaas.domain import ApiKey, KeyLimits
from imaas.errors import Conflict, KeyNotFound
from imaas.registry.queries import aware
from imaas.registry.sql import SqlRegistry
from imaas.registry.tables import ApiKeyRow, utcnow


def to_key(row: ApiKeyRow) -> ApiKey:
    """The domain form of a key row."""
    return ApiKey(
        id=row.id,
        name=row.name,
        secret_hash=row.secret_hash,
        scopes=frozenset(row.scopes),
        models=tuple(row.models) if row.models is not None else None,
        limits=KeyLimits(**row.limits),
        created_at=aware(row.created_at),
        expires_at=_maybe_aware(row.expires_at),
        revoked_at=_maybe_aware(row.revoked_at),
        last_used_at=_maybe_aware(row.last_used_at),
        created_by=row.created_by,
        replaced_by=row.replaced_by,
        seq=row.seq,
    )


def _maybe_aware(dt: datetime | None) -> datetime | None:
    return aware(dt) if dt is not None else None


def _utc(dt: datetime | None) -> datetime | None:
    # SQLite keeps no offset: every time goes in as UTC, so it reads back as the same instant
    return dt.astimezone(UTC) if dt is not None else None


class SqlKeys:
    """The API-key table of a ``SqlRegistry`` (its sessions, write lock and error translation)."""

    def __init__(self, registry: SqlRegistry) -> None:
        self.registry = registry

    def create(
        self,
        key_id: str,
        secret_hash: str,
        name: str,
        scopes: Iterable[str],
        *,
        models: tuple[str, ...] | None = None,
        limits: KeyLimits | None = None,
        expires_at: datetime | None = None,
        created_by: str | None = None,
    ) -> ApiKey:
        """Store a new key by its id and the hash of its text (``security.keys.new_key``);
        ``Conflict`` when the id is taken (the caller draws another)."""

        def work(s: Any, state: Any) -> ApiKey:
            if s.get(ApiKeyRow, key_id) is not None:
                raise Conflict(f"an API key with id {key_id!r} exists")
            state.seq += 1
            row = ApiKeyRow(
                id=key_id,
                name=name,
                secret_hash=secret_hash,
                scopes=sorted(set(scopes)),
                models=list(models) if models is not None else None,
                limits=dataclasses.asdict(limits or KeyLimits()),
                created_at=utcnow(),
                created_by=created_by,
                expires_at=_utc(expires_at),
                seq=state.seq,
            )
            s.add(row)
            s.flush()
            return to_key(row)

        return self.registry._write(work, "creating an API key")

    def get(self, key_id: str) -> ApiKey:
        """One key by id; ``KeyNotFound`` when none has it."""
        with self.registry._session() as s:
            row = s.get(ApiKeyRow, key_id)
            if row is None:
                raise KeyNotFound(f"no API key with id {key_id!r}")
            return to_key(row)

    def list_keys(self) -> list[ApiKey]:
        """Every key, oldest first (revoked and expired ones included)."""
        with self.registry._session() as s:
            return [to_key(r) for r in s.scalars(select(ApiKeyRow).order_by(ApiKeyRow.created_at, ApiKeyRow.id))]

    def changed_since(self, seq: int) -> list[ApiKey]:
        """Keys whose last change has a sequence number above ``seq``, in sequence order."""
        with self.registry._session() as s:
            q = select(ApiKeyRow).where(ApiKeyRow.seq > seq).order_by(ApiKeyRow.seq)
            return [to_key(r) for r in s.scalars(q)]

    def revoke(self, key_id: str, at: datetime | None = None, *, replaced_by: str | None = None) -> ApiKey:
        """Revoke a key from ``at`` (default now); of several revocations the earliest time holds.
        ``replaced_by`` names the key a rotation made in its place."""

        def work(s: Any, state: Any) -> ApiKey:
            row = s.get(ApiKeyRow, key_id)
            if row is None:
                raise KeyNotFound(f"no API key with id {key_id!r}")
            when = _utc(at) or utcnow()
            if replaced_by is not None:
                row.replaced_by = replaced_by
            # a revocation only ever comes sooner: revoking a key in a rotation's grace period
            # ends it now, and a second revoke never postpones the first
            if row.revoked_at is None or aware(row.revoked_at) > when or replaced_by is not None:
                state.seq += 1
                if row.revoked_at is None or aware(row.revoked_at) > when:
                    row.revoked_at = when
                row.seq = state.seq
            return to_key(row)

        return self.registry._write(work, "revoking an API key")

    def touch(self, last_used: dict[str, datetime]) -> None:
        """Record when keys were last used (batched off the request path; no sequence number)."""
        if not last_used:
            return
        with self.registry._session() as s:
            for key_id, at in last_used.items():
                s.execute(update(ApiKeyRow).where(ApiKeyRow.id == key_id).values(last_used_at=_utc(at)))
