"""Vector collections in the registry database: which exist, and what fills each.

The registry says which collections exist and how to read them (the embedding model, the
dimension, the vector store table); the vectors themselves live in the vector store
(``imaas.index``). In cluster mode every replica reads the same rows from PostgreSQL and
the same tables from the bucket, so a collection made through one replica is found
through the others.

Example::

    collections = SqlCollections(open_registry("sqlite:////tmp/imaas/registry.db"))
    c = collections.create(Collection("photos", "mobilenet-v2-embed", 1280, "photos-3f2a..."))
    collections.get("photos").dimension     # 1280
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from imaas.errors import CollectionExists, CollectionNotFound, InvalidField
from imaas.registry.fields import check_description
from imaas.registry.queries import aware
from imaas.registry.sql import SqlRegistry
from imaas.registry.tables import CollectionRow, utcnow


@dataclass(frozen=True)
class Collection:
    """A collection as the registry stores it."""

    name: str
    model: str
    dimension: int
    table_name: str
    description: str = ""
    created_at: datetime | None = None
    created_by: str | None = None


def _collection(row: CollectionRow) -> Collection:
    return Collection(
        name=row.name,
        model=row.model,
        dimension=row.dimension,
        table_name=row.table_name,
        description=row.description,
        created_at=aware(row.created_at),
        created_by=row.created_by,
    )


class SqlCollections:
    """The ``collections`` table of a ``SqlRegistry``."""

    def __init__(self, registry: SqlRegistry) -> None:
        self.registry = registry

    def create(self, collection: Collection, max_collections: int) -> Collection:
        """Register ``collection``; ``CollectionExists`` (409) when the name is taken,
        ``InvalidField`` when the registry holds ``max_collections`` already."""
        check_description(collection.description)

        def work(s: Any, _state: Any) -> Collection:
            if s.scalars(select(CollectionRow).where(CollectionRow.name == collection.name)).first() is not None:
                raise CollectionExists(f"a collection named {collection.name!r} exists already")
            if (s.scalar(select(func.count()).select_from(CollectionRow)) or 0) >= max_collections:
                raise InvalidField(f"name: this registry holds its most collections ({max_collections}); drop one")
            row = CollectionRow(
                name=collection.name,
                model=collection.model,
                dimension=collection.dimension,
                table_name=collection.table_name,
                description=collection.description,
                created_at=utcnow(),
                created_by=collection.created_by,
            )
            s.add(row)
            s.flush()
            return _collection(row)

        return self.registry._write(work, "registering a collection")

    def get(self, name: str) -> Collection:
        """The collection ``name``; ``CollectionNotFound`` when there is none."""
        with self.registry._session() as s:
            row = s.scalars(select(CollectionRow).where(CollectionRow.name == name)).first()
            if row is None:
                raise CollectionNotFound(f"no collection named {name!r}")
            return _collection(row)

    def list(self) -> list[Collection]:
        """Every collection, by name."""
        with self.registry._session() as s:
            return [_collection(r) for r in s.scalars(select(CollectionRow).order_by(CollectionRow.name))]

    def delete(self, name: str) -> Collection:
        """Remove ``name``'s row and return what it was (the caller drops its table);
        ``CollectionNotFound`` when there is none."""

        def work(s: Any, _state: Any) -> Collection:
            row = s.scalars(select(CollectionRow).where(CollectionRow.name == name)).first()
            if row is None:
                raise CollectionNotFound(f"no collection named {name!r}")
            gone = _collection(row)
            s.delete(row)
            return gone

        return self.registry._write(work, "dropping a collection")
