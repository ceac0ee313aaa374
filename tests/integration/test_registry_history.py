"""History, the change feed, model and version cards, pinned versions and deletes on the SQL
registry (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from imaas.domain import PRODUCTION
from imaas.errors import InvalidField, ModelNotFound, VersionInUse, VersionNotFound
from imaas.registry.sql import SqlRegistry, open_registry
from imaas.schemas.manifest import Manifest

M = Manifest(labels=["a", "b"])
A, B, C = "a" * 64, "b" * 64, "c" * 64


@pytest.fixture
def registry(registry_url: str) -> Iterator[SqlRegistry]:
    reg = open_registry(registry_url)
    yield reg
    reg.close()


def test_every_write_is_an_event_with_its_actor(registry: SqlRegistry) -> None:
    registry.add_version("m", A, 10, M, actor="alice")
    registry.add_version("m", A, 10, M, actor="alice")  # the same version again: no event
    registry.add_version("m", B, 10, M, actor="bob", parent_version=1)
    registry.set_alias("m", PRODUCTION, 1, "carol")
    registry.update_model("m", description="digits", actor="dan")
    registry.update_version("m", 2, tags={"stage": "qa"}, actor="erin")
    registry.delete_version("m", 2, "frank")
    events = registry.history("m")
    assert [(e.action, e.actor, e.from_version, e.to_version) for e in events] == [
        ("delete", "frank", 2, None),
        ("edit", "erin", None, 2),
        ("edit", "dan", None, None),
        ("alias", "carol", None, 1),
        ("push", "bob", None, 2),
        ("push", "alice", None, 1),
    ]
    assert [e.seq for e in events] == sorted((e.seq for e in events), reverse=True)
    assert events[0].detail == {"sha256": B}
    assert events[1].detail == {"fields": ["tags"]}
    assert all(e.model == "m" and e.at.tzinfo is not None for e in events)


def test_history_pages_by_seq(registry: SqlRegistry) -> None:
    for i in range(5):
        registry.add_version("m", f"{i:064x}", 10, M)
    registry.add_version("other", A, 10, M)
    first = registry.history("m", limit=2)
    assert [e.to_version for e in first] == [5, 4]
    rest = registry.history("m", limit=10, before=first[-1].seq)
    assert [e.to_version for e in rest] == [3, 2, 1]
    assert registry.history("m", before=rest[-1].seq) == []
    with pytest.raises(ModelNotFound):
        registry.history("nope")


def test_changes_since_names_the_models_that_changed(registry: SqlRegistry) -> None:
    start, changed = registry.changes_since(0)
    assert (start, changed) == (0, set())
    registry.add_version("a", A, 10, M)
    registry.add_version("b", B, 10, M)
    after_push, changed = registry.changes_since(start)
    assert changed == {"a", "b"}
    assert registry.changes_since(after_push) == (after_push, set())
    registry.set_alias("b", PRODUCTION, 1)
    registry.set_alias("b", PRODUCTION, 1)  # no move, no change
    newest, changed = registry.changes_since(after_push)
    assert (newest, changed) == (after_push + 1, {"b"})
    assert registry.changes_since(newest + 10) == (newest, set())


def test_cards_are_edited_and_read_back(registry: SqlRegistry) -> None:
    registry.add_version("m", A, 10, M)
    record = registry.update_model("m", description="Digits.", tags={"team": "vision"}, keep_latest=2)
    assert (record.description, record.tags, record.keep_latest) == ("Digits.", {"team": "vision"}, 2)
    kept = registry.update_model("m", tags={})  # fields left None are kept
    assert (kept.description, kept.tags, kept.keep_latest) == ("Digits.", {}, 2)
    assert registry.get_model("m") == kept
    assert registry.list_models()[0] == kept
    version = registry.update_version("m", 1, description="first cut", tags={"data": "mnist"})
    assert (version.description, version.tags) == ("first cut", {"data": "mnist"})
    assert registry.get_version("m", 1) == version
    assert registry.list_versions("m") == [version]
    before = registry.changes_since(0)[0]
    registry.update_version("m", 1, description="first cut")  # unchanged: not recorded
    assert registry.changes_since(0)[0] == before
    with pytest.raises(VersionNotFound):
        registry.update_version("m", 9, description="x")
    with pytest.raises(ModelNotFound):
        registry.update_model("nope", description="x")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"description": "x" * 10_001}, "description"),
        ({"tags": {f"k{i}": "v" for i in range(51)}}, "tags"),
        ({"tags": {"k" * 65: "v"}}, "tags"),
        ({"tags": {"": "v"}}, "tags"),
        ({"tags": {"k": "v" * 257}}, "tags.k"),
        ({"tags": {"k": 3}}, "tags.k"),
        ({"keep_latest": -1}, "keep_latest"),
    ],
)
def test_card_limits_name_the_field(registry: SqlRegistry, change: dict[str, object], field: str) -> None:
    registry.add_version("m", A, 10, M)
    with pytest.raises(InvalidField, match=f"^{field}: ") as caught:
        registry.update_model("m", **change)  # type: ignore[arg-type]
    assert caught.value.status == 422
    assert caught.value.extra["errors"] == [{"field": field, "message": caught.value.detail.removeprefix(f"{field}: ")}]
    if "keep_latest" not in change:
        with pytest.raises(InvalidField, match=f"^{field}: "):
            registry.update_version("m", 1, **change)  # type: ignore[arg-type]
    assert registry.update_model("m", tags={f"k{i}": "v" * 256 for i in range(50)}).tags["k49"] == "v" * 256
    assert registry.update_model("m", keep_latest=100).keep_latest == 100
    assert registry.get_model("m").description == ""  # nothing refused was stored


def test_nul_characters_and_keep_latest_over_100_are_refused(registry: SqlRegistry) -> None:
    # PostgreSQL cannot store NUL in text or JSON (a 500 before) and SQLite stored it: both refuse now
    registry.add_version("m", A, 10, M)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"description": "nul \x00 inside"}, "description"),
        ({"tags": {"k\x00": "v"}}, "tags"),
        ({"tags": {"k": "v\x00"}}, "tags.k"),
        ({"keep_latest": 101}, "keep_latest"),  # the API's limit
    ]
    for change, field in cases:
        with pytest.raises(InvalidField, match=f"^{field}: ") as caught:
            registry.update_model("m", **change)
        assert caught.value.extra["errors"][0]["field"] == field
        if "keep_latest" not in change:
            with pytest.raises(InvalidField, match=f"^{field}: "):
                registry.update_version("m", 1, **change)
    record = registry.get_model("m")
    assert (record.description, record.tags, record.keep_latest) == ("", {}, 0)
    assert registry.update_model("m", keep_latest=100).keep_latest == 100


def test_tag_key_messages_show_the_key_as_given(registry: SqlRegistry) -> None:
    registry.add_version("m", A, 10, M)
    with pytest.raises(InvalidField) as empty:
        registry.update_model("m", tags={"": "v"})
    assert empty.value.detail == "tags: key '' must be text of 1 to 64 characters"
    with pytest.raises(InvalidField) as long:
        registry.update_model("m", tags={"k" * 70: "v"})
    assert long.value.detail == f"tags: key {'k' * 64!r}... must be text of 1 to 64 characters"


def test_pinned_versions(registry: SqlRegistry) -> None:
    for i in range(5):
        registry.add_version("m", f"{i:064x}", 10, M)
    registry.add_version("other", A, 10, M)
    registry.add_version("other", B, 10, M)
    assert registry.pinned_versions() == set()
    registry.set_alias("m", PRODUCTION, 1)
    registry.set_canary("m", PRODUCTION, 2, 10)
    registry.set_shadow("m", PRODUCTION, ("other", 1), 10)
    registry.set_alias("other", "staging", 2)
    assert registry.pinned_versions() == {("m", 1), ("m", 2), ("other", 1), ("other", 2)}
    registry.update_model("m", keep_latest=2)
    assert registry.pinned_versions() == {("m", 1), ("m", 2), ("m", 4), ("m", 5), ("other", 1), ("other", 2)}


def test_delete_version_refuses_while_anything_points_at_it(registry: SqlRegistry) -> None:
    for i in range(4):
        registry.add_version("m", f"{i:064x}", 10, M)
    registry.add_version("other", A, 10, M)
    registry.set_alias("m", PRODUCTION, 1)
    registry.set_canary("m", PRODUCTION, 2, 10)
    registry.set_alias("other", PRODUCTION, 1)
    registry.set_shadow("other", PRODUCTION, ("m", 3), 10)
    removed: list[str] = []
    for version, user in [(1, "alias 'production' of 'm'"), (2, "the canary of m:production"), (3, "the shadow")]:
        with pytest.raises(VersionInUse, match=user):
            registry.delete_version("m", version)
    assert registry.sweep_artifacts(removed.append) == []
    assert removed == []
    assert [v.version for v in registry.list_versions("m")] == [4, 3, 2, 1]
    registry.set_shadow("other", PRODUCTION, None, 0)
    assert registry.delete_version("m", 3).version == 3
    assert registry.sweep_artifacts(removed.append) == [f"{2:064x}"]
    assert removed == [f"{2:064x}"]
    with pytest.raises(VersionNotFound):
        registry.delete_version("m", 3)


def test_a_deleted_number_is_never_given_again_and_lineage_keeps_it(registry: SqlRegistry) -> None:
    registry.add_version("m", A, 10, M)
    registry.add_version("m", B, 10, M, parent_version=1)
    registry.delete_version("m", 2)
    again, created = registry.add_version("m", B, 10, M, parent_version=1)
    assert (again.version, created) == (3, True)
    registry.set_alias("m", PRODUCTION, 3)
    registry.delete_version("m", 1)
    assert registry.get_version("m", 3).parent_version == 1  # the parent's number outlives it
    assert registry.get_model("m").latest_version == 3


def test_the_artifact_goes_with_its_last_user(registry: SqlRegistry) -> None:
    registry.add_version("m", A, 10, M)
    registry.add_version("m", A, 10, Manifest(labels=["x", "y"]))  # same bytes, other manifest
    registry.add_version("other", A, 10, M)  # same bytes, other model
    registry.add_version("m", B, 10, M)
    removed: list[str] = []
    registry.delete_version("m", 1)
    registry.delete_version("m", 2)
    assert registry.sweep_artifacts(removed.append) == []
    registry.delete_version("other", 1)
    assert registry.sweep_artifacts(removed.append) == [A]
    registry.delete_version("m", 3)
    assert registry.sweep_artifacts(removed.append) == [B]
    assert removed == [A, B]
    assert registry.sweep_artifacts(removed.append) == []  # each file goes once
    assert registry.get_model("m").latest_version is None
    # a push of removed bytes stores them again (ensure_artifact), then they are ordinary bytes
    ensured: list[str] = []
    registry.add_version("m", A, 10, M, ensure_artifact=lambda: ensured.append("new"))
    registry.add_version("m", A, 10, M, ensure_artifact=lambda: ensured.append("same"))
    registry.add_version("m", C, 10, M, ensure_artifact=lambda: ensured.append("never deleted"))
    assert ensured == ["new"]
