"""Alias lifecycle on the SQL registry (SQLite and PostgreSQL): guarded moves, rollbacks as a
stack, canaries, shadows and one-read route resolution."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from imaas.domain import PRODUCTION, AliasRoute, ModelRef
from imaas.errors import (
    AliasNotFound,
    ConcurrentChange,
    InvalidField,
    ModelNotFound,
    NothingToRollBack,
    VersionNotFound,
)
from imaas.registry.sql import SqlRegistry, open_registry
from imaas.schemas.manifest import Manifest

M = Manifest(labels=["a", "b"])
EMBEDDING = Manifest(task="embedding")


@pytest.fixture
def registry(registry_url: str) -> Iterator[SqlRegistry]:
    reg = open_registry(registry_url)
    yield reg
    reg.close()


def push(registry: SqlRegistry, name: str, count: int, manifest: Manifest = M) -> None:
    """``count`` new versions of ``name`` with distinct bytes."""
    start = len(registry.list_versions(name)) if name in {m.name for m in registry.list_models()} else 0
    for i in range(count):
        registry.add_version(name, f"{name}{start + i}".encode().hex().ljust(64, "0"), 10, manifest)


def rollback(registry: SqlRegistry, name: str, alias: str = PRODUCTION) -> int:
    """A rollback as the lifecycle service runs it; returns where the alias went."""
    plan = registry.rollback_plan(name, alias)
    registry.set_alias(
        name, alias, plan.target, "ops", expect=plan.current, action="rollback", detail={"undoes": plan.undoes}
    )
    return plan.target


def test_get_version_and_its_errors(registry: SqlRegistry) -> None:
    push(registry, "m", 2)
    assert registry.get_version("m", 2).version == 2
    with pytest.raises(VersionNotFound):
        registry.get_version("m", 3)
    with pytest.raises(ModelNotFound):
        registry.get_version("nope", 1)


def test_expect_guards_a_move(registry: SqlRegistry) -> None:
    push(registry, "m", 3)
    assert registry.set_alias("m", PRODUCTION, 1, expect=None)
    with pytest.raises(ConcurrentChange, match="points at version 1"):
        registry.set_alias("m", PRODUCTION, 2, expect=None)
    with pytest.raises(ConcurrentChange):
        registry.set_alias("m", PRODUCTION, 2, expect=3)
    with pytest.raises(ConcurrentChange, match="does not exist"):
        registry.set_alias("m", "staging", 2, expect=1)
    assert registry.get_model("m").aliases == {PRODUCTION: 1}
    assert registry.set_alias("m", PRODUCTION, 2, "alice", expect=1, action="promote", detail={"why": "better"})
    assert not registry.set_alias("m", PRODUCTION, 2, expect=2)  # already there: nothing recorded
    event = registry.history("m", limit=1)[0]
    assert (event.action, event.alias, event.from_version, event.to_version, event.actor) == (
        "promote",
        PRODUCTION,
        1,
        2,
        "alice",
    )
    assert event.detail == {"why": "better"}
    with pytest.raises(ValueError, match="canary"):
        registry.set_alias("m", PRODUCTION, 3, action="canary")


def test_rollbacks_walk_back_as_a_stack(registry: SqlRegistry) -> None:
    push(registry, "m", 4)
    for version in (1, 2, 3):
        registry.set_alias("m", PRODUCTION, version, action="promote")
    plan = registry.rollback_plan("m", PRODUCTION)
    assert (plan.alias, plan.current, plan.target) == (PRODUCTION, 3, 2)
    assert plan.undoes == registry.history("m", limit=1)[0].seq
    assert rollback(registry, "m") == 2
    assert rollback(registry, "m") == 1
    with pytest.raises(NothingToRollBack):
        registry.rollback_plan("m", PRODUCTION)
    assert registry.get_model("m").aliases == {PRODUCTION: 1}


def test_a_promote_after_a_rollback_is_what_the_next_rollback_undoes(registry: SqlRegistry) -> None:
    push(registry, "m", 4)
    for version in (1, 2, 3):
        registry.set_alias("m", PRODUCTION, version)
    assert rollback(registry, "m") == 2
    registry.set_alias("m", PRODUCTION, 4, action="promote")
    assert rollback(registry, "m") == 2
    assert rollback(registry, "m") == 1


def test_a_rollback_without_undoes_pops_the_last_move(registry: SqlRegistry) -> None:
    push(registry, "m", 3)
    for version in (1, 2, 3):
        registry.set_alias("m", PRODUCTION, version)
    registry.set_alias("m", PRODUCTION, 2, action="rollback")
    assert registry.rollback_plan("m", PRODUCTION).target == 1


def test_rollback_refuses_a_deleted_target_and_unknown_aliases(registry: SqlRegistry) -> None:
    push(registry, "m", 3)
    registry.set_alias("m", PRODUCTION, 1)
    registry.set_alias("m", PRODUCTION, 2)
    registry.set_alias("m", "staging", 3)
    registry.set_alias("m", "staging", 2)
    registry.set_alias("m", PRODUCTION, 3)
    registry.delete_version("m", 1)
    registry.set_alias("m", PRODUCTION, 2)  # production 2 -> 3 -> 2: undo goes to 3, still there
    assert registry.rollback_plan("m", PRODUCTION).target == 3
    rollback(registry, "m")
    assert rollback(registry, "m") == 2
    with pytest.raises(NothingToRollBack, match="version 1, which was deleted"):
        registry.rollback_plan("m", PRODUCTION)
    with pytest.raises(AliasNotFound):
        registry.rollback_plan("m", "canary")
    with pytest.raises(ModelNotFound):
        registry.rollback_plan("nope", PRODUCTION)
    registry.add_version("solo", "e" * 64, 10, M)
    registry.set_alias("solo", PRODUCTION, 1)
    with pytest.raises(NothingToRollBack):
        registry.rollback_plan("solo", PRODUCTION)


def test_a_canary_runs_and_ends(registry: SqlRegistry) -> None:
    push(registry, "m", 3)
    registry.set_alias("m", PRODUCTION, 1)
    route = registry.set_canary("m", PRODUCTION, 2, 10, actor="alice")
    assert route == AliasRoute(PRODUCTION, 1, canary_version=2, canary_weight=10.0)
    assert registry.get_model("m").routes[PRODUCTION] == route
    assert registry.set_canary("m", PRODUCTION, 2, 25).canary_weight == 25.0
    ended = registry.set_canary("m", PRODUCTION, None, 50)
    assert ended == AliasRoute(PRODUCTION, 1)
    assert registry.set_canary("m", PRODUCTION, 3, 0) == AliasRoute(PRODUCTION, 1)  # nothing to end
    events = [(e.action, e.from_version, e.to_version, e.detail.get("weight")) for e in registry.history("m")]
    assert events[:3] == [("canary", 2, None, 0.0), ("canary", 2, 2, 25.0), ("canary", None, 2, 10.0)]
    assert registry.history("m")[2].actor == "alice"


def test_a_canary_at_100_promotes_and_a_move_ends_it(registry: SqlRegistry) -> None:
    push(registry, "m", 3)
    registry.set_alias("m", PRODUCTION, 1)
    registry.set_canary("m", PRODUCTION, 2, 30)
    assert registry.set_canary("m", PRODUCTION, 2, 100, actor="bob") == AliasRoute(PRODUCTION, 2)
    last = registry.history("m", limit=1)[0]
    assert (last.action, last.from_version, last.to_version, last.actor) == ("promote", 1, 2, "bob")
    assert registry.rollback_plan("m", PRODUCTION).target == 1  # a completed canary rolls back like a promote
    registry.set_canary("m", PRODUCTION, 3, 5)
    registry.set_alias("m", PRODUCTION, 1)
    assert registry.get_model("m").routes[PRODUCTION] == AliasRoute(PRODUCTION, 1)


def test_canary_refusals(registry: SqlRegistry) -> None:
    push(registry, "m", 2)
    registry.set_alias("m", PRODUCTION, 1)
    for weight in (-1, 100.5, float("nan")):
        with pytest.raises(InvalidField, match=r"^weight: "):
            registry.set_canary("m", PRODUCTION, 2, weight)
    with pytest.raises(InvalidField, match=r"^version: "):
        registry.set_canary("m", PRODUCTION, 1, 10)
    with pytest.raises(VersionNotFound):
        registry.set_canary("m", PRODUCTION, 9, 10)
    with pytest.raises(AliasNotFound):
        registry.set_canary("m", "staging", 2, 10)
    with pytest.raises(ModelNotFound):
        registry.set_canary("nope", PRODUCTION, 2, 10)
    assert registry.get_model("m").routes[PRODUCTION] == AliasRoute(PRODUCTION, 1)


def test_a_shadow_may_be_another_model_of_the_same_task(registry: SqlRegistry) -> None:
    push(registry, "m", 2)
    push(registry, "other", 1)
    push(registry, "vectors", 1, EMBEDDING)
    registry.set_alias("m", PRODUCTION, 1)
    route = registry.set_shadow("m", PRODUCTION, ("other", 1), 20, actor="carol")
    assert route == AliasRoute(PRODUCTION, 1, shadow_model="other", shadow_version=1, shadow_weight=20.0)
    last = registry.history("m", limit=1)[0]
    assert (last.action, last.to_version, last.detail, last.actor) == (
        "shadow",
        1,
        {"model": "other", "weight": 20.0},
        "carol",
    )
    assert registry.history("other")[0].action == "push"  # recorded on the alias's model
    with pytest.raises(InvalidField, match=r"^model: 'vectors' is a embedding model"):
        registry.set_shadow("m", PRODUCTION, ("vectors", 1), 20)
    with pytest.raises(InvalidField, match=r"^version: "):
        registry.set_shadow("m", PRODUCTION, ("m", 1), 20)
    with pytest.raises(InvalidField, match=r"^weight: "):
        registry.set_shadow("m", PRODUCTION, ("m", 2), 101)
    with pytest.raises(ModelNotFound):
        registry.set_shadow("m", PRODUCTION, ("nope", 1), 20)
    with pytest.raises(VersionNotFound):
        registry.set_shadow("m", PRODUCTION, ("other", 5), 20)
    assert registry.set_shadow("m", PRODUCTION, None, 20) == AliasRoute(PRODUCTION, 1)


def test_moving_to_the_shadowed_version_clears_the_shadow(registry: SqlRegistry) -> None:
    push(registry, "m", 3)
    registry.set_alias("m", PRODUCTION, 1)
    registry.set_shadow("m", PRODUCTION, ("m", 2), 50)
    registry.set_alias("m", PRODUCTION, 3)  # another version: the shadow stays
    assert registry.get_model("m").routes[PRODUCTION].shadow_version == 2
    registry.set_alias("m", PRODUCTION, 2)
    assert registry.get_model("m").routes[PRODUCTION] == AliasRoute(PRODUCTION, 2)
    assert registry.history("m", limit=1)[0].detail == {"ended_shadow": 2}


def test_resolve_route_reads_primary_canary_and_shadow(registry: SqlRegistry) -> None:
    push(registry, "m", 3)
    push(registry, "other", 1)
    registry.set_alias("m", PRODUCTION, 1)
    registry.set_canary("m", PRODUCTION, 2, 10)
    registry.set_shadow("m", PRODUCTION, ("other", 1), 5)
    route = registry.resolve_route(ModelRef("m"))
    assert (route.primary.key, route.alias, route.canary_weight, route.shadow_weight) == (("m", 1), PRODUCTION, 10, 5)
    assert route.canary is not None
    assert route.canary.key == ("m", 2)
    assert route.shadow is not None
    assert route.shadow.key == ("other", 1)
    assert [v.key for v in route.versions] == [("m", 1), ("m", 2), ("other", 1)]
    pinned = registry.resolve_route(ModelRef("m", version=3))
    assert (pinned.primary.version, pinned.alias, pinned.canary, pinned.shadow) == (3, None, None, None)
    assert registry.resolve_route(ModelRef("other")).primary.version == 1  # no production: latest
    assert registry.resolve(ModelRef("m")).version == 1
    with pytest.raises(AliasNotFound):
        registry.resolve_route(ModelRef("m", alias="staging"))
    with pytest.raises(VersionNotFound):
        registry.resolve_route(ModelRef("m", version=7))
    with pytest.raises(ModelNotFound):
        registry.resolve_route(ModelRef("nope", alias="staging"))
