"""The Alembic migrations: they build exactly the tables ``imaas.registry.tables`` declares,
carry a 0001 database's data forward, and run once however many processes start together.

A database upgraded by the project's migrations is compared with ``Base.metadata`` by
Alembic's autogenerate (types and server defaults included), on SQLite and PostgreSQL: a
column, index, constraint or default changed on one side only shows up as a difference.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Column, Integer, MetaData, inspect, text

from imaas.domain import AliasRoute
from imaas.errors import Conflict
from imaas.registry.engine import make_engine
from imaas.registry.migrate import current_revision, downgrade_schema, head_revision
from imaas.registry.sql import open_registry, upgrade_schema
from imaas.registry.tables import Base
from imaas.schemas.manifest import Manifest


def same_empty_default(
    _context: Any,
    _inspected_column: Any,
    _metadata_column: Any,
    inspected_default: str | None,
    _metadata_default: Any,
    rendered_metadata_default: str | None,
) -> bool | None:
    """Alembic's SQLite comparison unquotes only non-empty literals, so ``''`` read back as
    ``('')`` looks changed; PostgreSQL's ``json`` has no ``=``, so Alembic's comparison query
    (``SELECT '{}'::json = '{}'``) fails there: a JSON default is compared as text. Everything
    else goes to Alembic's own comparison (``None``)."""
    if rendered_metadata_default == "" and inspected_default in ("''", "('')"):
        return False
    if inspected_default is not None and inspected_default.endswith("::json"):
        return inspected_default.removesuffix("::json") != f"'{rendered_metadata_default}'"
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


def revision_of(url: str) -> str | None:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return current_revision(conn)
    finally:
        engine.dispose()


def migrate(url: str, revision: str, *, down: bool = False) -> None:
    engine = make_engine(url)
    try:
        (downgrade_schema if down else upgrade_schema)(engine, revision)
    finally:
        engine.dispose()


AT = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def fill_0001(url: str) -> None:
    """Two models as revision 0001 stored them: lineage by row id, alias moves in ``alias_events``."""
    engine = make_engine(url)
    rows: dict[str, list[tuple[Any, ...]]] = {
        "models": [(1, "cnn", "classification", "digits", AT), (2, "vec", "embedding", "", AT)],
        # id, model_id, version, parent_version_id
        "model_versions": [(10, 1, 1, None), (11, 1, 2, 10), (12, 1, 3, 11), (20, 2, 1, None)],
        # id, model_id, name, version_id, canary_version_id, canary_weight
        "aliases": [(1, 1, "production", 11, 12, 10.0), (2, 2, "production", 20, None, 0.0)],
        # id, model_id, alias, version_id, previous_version_id, actor
        "alias_events": [
            (1, 1, "production", 10, None, "alice"),
            (2, 2, "production", 20, None, None),
            (3, 1, "production", 12, 10, "bob"),
            (4, 1, "production", 11, 12, "carol"),
        ],
    }
    with engine.begin() as conn:
        for m in rows["models"]:
            conn.execute(
                text("INSERT INTO models (id, name, task, description, created_at) VALUES (:i, :n, :t, :d, :at)"),
                dict(zip(["i", "n", "t", "d", "at"], m, strict=True)),
            )
        for v in rows["model_versions"]:
            conn.execute(
                text(
                    "INSERT INTO model_versions (id, model_id, version, sha256, size_bytes, manifest, metrics, "
                    "parent_version_id, created_at) VALUES (:i, :m, :v, :sha, 10, :manifest, '{}', :p, :at)"
                ),
                {"i": v[0], "m": v[1], "v": v[2], "p": v[3], "sha": f"{v[0]:064x}", "manifest": "{}", "at": AT},
            )
        for a in rows["aliases"]:
            conn.execute(
                text(
                    "INSERT INTO aliases (id, model_id, name, version_id, canary_version_id, canary_weight, "
                    "updated_at) VALUES (:i, :m, :n, :v, :c, :w, :at)"
                ),
                {**dict(zip(["i", "m", "n", "v", "c", "w"], a, strict=True)), "at": AT},
            )
        for e in rows["alias_events"]:
            conn.execute(
                text(
                    "INSERT INTO alias_events (id, model_id, alias, version_id, previous_version_id, actor, at) "
                    "VALUES (:i, :m, :a, :v, :p, :actor, :at)"
                ),
                {**dict(zip(["i", "m", "a", "v", "p", "actor"], e, strict=True)), "at": AT},
            )
    engine.dispose()


def test_a_0001_database_keeps_its_alias_history(registry_url: str) -> None:
    migrate(registry_url, "0001")
    fill_0001(registry_url)
    registry = open_registry(registry_url)  # upgrades to head
    try:
        assert revision_of(registry_url) == head_revision()
        events = registry.history("cnn")
        assert [(e.seq, e.action, e.alias, e.from_version, e.to_version, e.actor) for e in events] == [
            (4, "alias", "production", 3, 2, "carol"),
            (3, "alias", "production", 1, 3, "bob"),
            (1, "alias", "production", None, 1, "alice"),
        ]
        assert events[0].at == AT
        assert registry.changes_since(2) == (4, {"cnn"})
        assert [v.parent_version for v in registry.list_versions("cnn")] == [2, 1, None]
        record = registry.get_model("cnn")
        assert (record.tags, record.keep_latest, record.description) == ({}, 0, "digits")
        assert record.routes["production"] == AliasRoute("production", 2, canary_version=3, canary_weight=10.0)
        assert registry.get_version("cnn", 1).tags == {}
        # the migrated history drives rollbacks, and new numbers and seqs continue after the old ones
        assert registry.rollback_plan("cnn", "production").target == 3
        version, _ = registry.add_version("cnn", "f" * 64, 10, Manifest(labels=["a", "b"]))
        assert version.version == 4
        assert registry.history("cnn", limit=1)[0].seq == 5
    finally:
        registry.close()


def test_downgrade_to_0001_and_back(registry_url: str) -> None:
    registry = open_registry(registry_url)
    manifest = Manifest(labels=["a", "b"])
    registry.add_version("m", "a" * 64, 10, manifest)
    registry.add_version("m", "b" * 64, 10, manifest, parent_version=1)
    registry.set_alias("m", "production", 1)
    registry.set_alias("m", "production", 2)
    registry.close()
    migrate(registry_url, "0001", down=True)
    assert revision_of(registry_url) == "0001"
    engine = make_engine(registry_url)
    tables = set(inspect(engine).get_table_names())
    engine.dispose()
    assert "alias_events" in tables
    assert not {"model_events", "registry_state", "artifact_tombstones"} & tables
    registry = open_registry(registry_url)
    try:
        moves = [(e.from_version, e.to_version) for e in registry.history("m")]
        assert moves == [(1, 2), (None, 1)]  # pushes are lost on the way down, alias moves kept
        assert registry.list_versions("m")[0].parent_version == 1
    finally:
        registry.close()


def test_migrate_false_refuses_a_database_that_is_not_current(registry_url: str) -> None:
    with pytest.raises(Conflict, match="no schema yet"):
        open_registry(registry_url, migrate=False)
    migrate(registry_url, "0001")
    with pytest.raises(Conflict, match=r"at revision 0001; run `imaas db upgrade`"):
        open_registry(registry_url, migrate=False)
    open_registry(registry_url).close()
    registry = open_registry(registry_url, migrate=False)
    registry.add_version("m", "a" * 64, 10, Manifest(labels=["a", "b"]))
    registry.close()
    engine = make_engine(registry_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(Conflict, match="9999, newer than this imaas knows"):
        open_registry(registry_url, migrate=False)


def test_a_database_migrated_by_a_newer_imaas_is_refused_clearly(registry_url: str) -> None:
    open_registry(registry_url).close()
    engine = make_engine(registry_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    try:
        for attempt in (lambda: upgrade_schema(engine), lambda: open_registry(registry_url)):
            with pytest.raises(Conflict) as caught:
                attempt()
            assert caught.value.detail == (
                f"the registry database is at revision 0099, newer than this imaas knows (head {head_revision()}); "
                "upgrade imaas"
            )
        assert revision_of(registry_url) == "0099"  # left as it was
    finally:
        engine.dispose()


def test_concurrent_upgrades_of_a_fresh_database_all_succeed(registry_url: str) -> None:
    starters = 6
    barrier = threading.Barrier(starters)

    def start(_: int) -> None:
        engine = make_engine(registry_url)
        try:
            barrier.wait(timeout=30)
            upgrade_schema(engine)
        finally:
            engine.dispose()

    with ThreadPoolExecutor(starters) as pool:
        for future in [pool.submit(start, i) for i in range(starters)]:
            future.result(timeout=120)
    assert revision_of(registry_url) == head_revision()
    registry = open_registry(registry_url, migrate=False)
    try:
        assert registry.changes_since(0) == (0, set())
        with registry.engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM registry_state")).scalar() == 1
    finally:
        registry.close()


WIDENINGS = [
    ("0003", "0004", ["infer", "models:read", "models:write", "keys:admin", "usage:read"],
     ["jobs", "datasets:read", "datasets:write"]),
    ("0004", "0005", ["infer", "models:read", "models:write", "keys:admin", "usage:read", "jobs", "datasets:read",
                      "datasets:write"], ["collections:read", "collections:write"]),
]


@pytest.mark.parametrize(("before", "after", "old", "new"), WIDENINGS, ids=[w[1] for w in WIDENINGS])
def test_a_revision_gives_its_new_scopes_to_keys_that_held_every_scope_and_only_to_them(
    registry_url: str, before: str, after: str, old: list[str], new: list[str]
) -> None:
    migrate(registry_url, before)
    engine = make_engine(registry_url)
    with engine.begin() as conn:
        for key_id, scopes in (("admin", old), ("reader", ["models:read"]), ("most", old[:-1])):
            conn.execute(
                text(
                    "INSERT INTO api_keys (id, name, secret_hash, scopes, limits, created_at, seq) "
                    "VALUES (:id, :id, :h, :scopes, '{}', :at, 0)"
                ),
                {"id": key_id, "h": "0" * 64, "scopes": json.dumps(scopes), "at": AT},
            )
    engine.dispose()
    migrate(registry_url, after)

    def scopes() -> dict[str, list[str]]:
        engine = make_engine(registry_url)
        try:
            with engine.connect() as conn:
                rows = conn.execute(text("SELECT id, scopes FROM api_keys")).all()
        finally:
            engine.dispose()
        return {k: sorted(json.loads(s) if isinstance(s, str) else s) for k, s in rows}

    assert scopes() == {"admin": sorted([*old, *new]), "reader": ["models:read"], "most": sorted(old[:-1])}
    migrate(registry_url, before, down=True)  # and back: every key has exactly its earlier scopes again
    assert scopes() == {"admin": sorted(old), "reader": ["models:read"], "most": sorted(old[:-1])}
