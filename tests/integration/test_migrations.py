"""The Alembic migrations build exactly the tables ``imaas.registry.tables`` declares.

A database upgraded by the project's migrations is compared with ``Base.metadata`` by
Alembic's autogenerate (types and server defaults included), on SQLite and PostgreSQL: a
column, index, constraint or default changed on one side only shows up as a difference.
"""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Column, Integer, MetaData

from imaas.registry.engine import make_engine
from imaas.registry.sql import upgrade_schema
from imaas.registry.tables import Base


def same_empty_default(
    _context: Any,
    _inspected_column: Any,
    _metadata_column: Any,
    inspected_default: str | None,
    _metadata_default: Any,
    rendered_metadata_default: str | None,
) -> bool | None:
    """Alembic's SQLite comparison unquotes only non-empty literals, so ``''`` read back as
    ``('')`` looks changed; everything else goes to Alembic's own comparison (``None``)."""
    if rendered_metadata_default == "" and inspected_default in ("''", "('')"):
        return False
    return None


def differences(url: str, metadata: MetaData) -> list[Any]:
    """What autogenerate would change to turn the migrated database at ``url`` into ``metadata``."""
    engine = make_engine(url)
    try:
        upgrade_schema(engine)
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "compare_server_default": same_empty_default}
            )
            found: list[Any] = compare_metadata(context, metadata)
            return found
    finally:
        engine.dispose()


def test_migrations_and_tables_agree(registry_url: str) -> None:
    assert differences(registry_url, Base.metadata) == []


def test_the_comparison_sees_a_column_the_migrations_lack(registry_url: str) -> None:
    metadata = MetaData()
    for table in Base.metadata.tables.values():
        table.to_metadata(metadata)
    metadata.tables["models"].append_column(Column("stars", Integer, nullable=False, server_default="0"))
    diff = differences(registry_url, metadata)
    assert [(d[0], d[2], d[3].name) for d in diff] == [("add_column", "models", "stars")]
