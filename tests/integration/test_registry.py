"""The SQL registry on a real SQLite file and a real PostgreSQL database, migrated by Alembic."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import inspect, make_url, text

from imaas.domain import ModelRef
from imaas.errors import AliasNotFound, Conflict, InvalidField, InvalidManifest, ModelNotFound, VersionNotFound
from imaas.registry.engine import registry_url as parse_registry_url
from imaas.registry.migrate import head_revision
from imaas.registry.sql import SqlRegistry, open_registry
from imaas.schemas.manifest import Manifest


@pytest.fixture
def registry(registry_url: str) -> Iterator[SqlRegistry]:
    reg = open_registry(registry_url)
    yield reg
    reg.close()


M = Manifest(labels=["a", "b"])


def test_migrations_create_the_schema_in_wal_mode(tmp_path: Path) -> None:
    registry = open_registry(f"sqlite:///{tmp_path / 'registry.db'}")
    tables = set(inspect(registry.engine).get_table_names())
    assert {
        "models",
        "model_versions",
        "aliases",
        "model_events",
        "registry_state",
        "artifact_tombstones",
        "alembic_version",
    } <= tables
    assert "alias_events" not in tables
    with registry.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1  # the migration turned them back on
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == head_revision()
    registry.close()


def test_a_postgresql_url_without_a_driver_uses_psycopg(postgres_url: str) -> None:
    assert parse_registry_url("postgresql://u@h/db").drivername == "postgresql+psycopg"
    assert parse_registry_url("sqlite:////tmp/r.db").drivername == "sqlite"
    plain = make_url(postgres_url).set(drivername="postgresql").render_as_string(hide_password=False)
    registry = open_registry(plain)  # psycopg2 is not installed: this fails unless psycopg 3 is picked
    registry.add_version("m", "a" * 64, 10, M)
    assert registry.engine.dialect.driver == "psycopg"
    assert [m.name for m in registry.list_models()] == ["m"]
    registry.close()


def test_reopening_an_existing_database_keeps_data(registry_url: str) -> None:
    url = registry_url
    first = open_registry(url)
    first.add_version("m", "a" * 64, 10, M)
    first.close()
    again = open_registry(url)
    assert [m.name for m in again.list_models()] == ["m"]
    again.close()


def test_versions_count_up_and_same_bytes_are_idempotent(registry: SqlRegistry) -> None:
    v1, new1 = registry.add_version("m", "a" * 64, 10, M, source="test")
    v2, new2 = registry.add_version("m", "b" * 64, 11, M)
    again, new3 = registry.add_version("m", "a" * 64, 10, M)
    other_manifest, new4 = registry.add_version("m", "a" * 64, 10, Manifest(labels=["x", "y"]))
    assert (v1.version, v2.version, again.version, other_manifest.version) == (1, 2, 1, 3)
    assert (new1, new2, new3, new4) == (True, True, False, True)
    assert [v.version for v in registry.list_versions("m")] == [3, 2, 1]
    assert registry.list_versions("m")[-1].source == "test"


def test_resolution_rules(registry: SqlRegistry) -> None:
    registry.add_version("m", "a" * 64, 10, M)
    registry.add_version("m", "b" * 64, 10, M)
    assert registry.resolve(ModelRef("m")).version == 2  # no production alias: latest
    registry.set_alias("m", "production", 1)
    assert registry.resolve(ModelRef("m")).version == 1
    assert registry.resolve(ModelRef("m", version=2)).version == 2
    registry.set_alias("m", "staging", 2)
    assert registry.resolve(ModelRef("m", alias="staging")).version == 2
    with pytest.raises(AliasNotFound):
        registry.resolve(ModelRef("m", alias="canary"))
    with pytest.raises(VersionNotFound):
        registry.resolve(ModelRef("m", version=9))
    with pytest.raises(ModelNotFound):
        registry.resolve(ModelRef("nope"))


def test_alias_moves_are_recorded(registry: SqlRegistry) -> None:
    registry.add_version("m", "a" * 64, 10, M)
    registry.add_version("m", "b" * 64, 10, M)
    registry.set_alias("m", "production", 1, actor="alice")
    registry.set_alias("m", "production", 2, actor="bob")
    moves = [(e.actor, e.from_version, e.to_version) for e in registry.history("m") if e.action == "alias"]
    assert moves == [("bob", 1, 2), ("alice", None, 1)]
    assert registry.get_model("m").aliases == {"production": 2}
    assert [v.version for v in registry.aliased_versions("production")] == [2]


def test_list_models_and_task_conflict(registry: SqlRegistry) -> None:
    for name in ["b", "a", "c"]:
        registry.add_version(name, name * 64, 1, M)
    listed = registry.list_models()
    assert [m.name for m in listed] == ["a", "b", "c"]
    assert all(m.latest_version == 1 for m in listed)
    with pytest.raises(Conflict):
        registry.add_version("a", "d" * 64, 1, Manifest(task="embedding"))
    assert [m.name for m in registry.list_models(limit=2)] == ["a", "b"]
    assert [m.name for m in registry.list_models(limit=2, after="b")] == ["c"]
    assert registry.list_models(after="c") == []


def test_unknown_parent_version(registry: SqlRegistry) -> None:
    registry.add_version("m", "a" * 64, 10, M)
    child, _ = registry.add_version("m", "b" * 64, 10, M, parent_version=1)
    assert registry.list_versions("m")[0].parent_version == 1
    assert child.parent_version == 1
    with pytest.raises(VersionNotFound):
        registry.add_version("m", "c" * 64, 10, M, parent_version=7)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"description": "a\x00b"}, "description"),
        ({"labels": ["a", "b\x00"]}, "labels"),
        ({"input": {"name": "in\x00put"}}, "input.name"),
        ({"postprocess": {"output": "\x00"}}, "postprocess.output"),
    ],
)
def test_a_manifest_with_a_nul_character_is_refused_naming_the_field(raw: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Manifest.model_validate(raw)
    assert [(".".join(map(str, e["loc"])), "NUL characters" in e["msg"]) for e in caught.value.errors()] == [
        (field, True)
    ]


def test_nul_characters_never_reach_the_database(registry: SqlRegistry) -> None:
    # PostgreSQL cannot store NUL in text or JSON (a 500 before); SQLite stored it. Both refuse now,
    # also for manifests completed from an ONNX graph (model_copy skips validation) and metrics.
    from_graph = M.model_copy(update={"input": M.input.model_copy(update={"name": "in\x00put"})})
    with pytest.raises(InvalidManifest) as manifest:
        registry.add_version("m", "a" * 64, 10, from_graph)
    assert manifest.value.status == 422
    assert manifest.value.detail.startswith("input.name: must not contain NUL characters")
    assert manifest.value.extra["errors"][0]["field"] == "input.name"
    listed = Manifest(labels=["a", "b"]).model_copy(update={"labels": ["a", "b\x00"]})
    with pytest.raises(InvalidManifest, match=r"^labels\.1: "):
        registry.add_version("m", "a" * 64, 10, listed)
    with pytest.raises(InvalidField, match=r"^metrics\.note: "):
        registry.add_version("m", "a" * 64, 10, M, metrics={"note": "x\x00"})
    with pytest.raises(InvalidField, match=r"^source: "):
        registry.add_version("m", "a" * 64, 10, M, source="upload:\x00.onnx")
    assert registry.list_models() == []
