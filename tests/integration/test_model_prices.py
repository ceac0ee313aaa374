"""Model prices (per 1,000 images) in the SQL registry, on SQLite and PostgreSQL: exact
decimals set, read back, kept, cleared and refused; the migration that adds the column."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest
from sqlalchemy import Numeric, inspect

from imaas.errors import InvalidField
from imaas.registry.engine import make_engine
from imaas.registry.migrate import downgrade_schema, upgrade_schema
from imaas.registry.sql import SqlRegistry, open_registry
from imaas.schemas.manifest import Manifest

M = Manifest(labels=["a", "b"])
A = "a" * 64
EXACT = [Decimal("0.000001"), Decimal("123456789.123456"), Decimal("1000000000"), Decimal("999999999.999999")]


@pytest.fixture
def registry(registry_url: str) -> Iterator[SqlRegistry]:
    reg = open_registry(registry_url)
    reg.add_version("m", A, 10, M)
    yield reg
    reg.close()


@pytest.mark.parametrize("price", EXACT)
def test_a_price_reads_back_exactly(registry: SqlRegistry, registry_url: str, price: Decimal) -> None:
    assert registry.update_model("m", price_per_1000=price).price_per_1000 == price
    assert registry.get_model("m").price_per_1000 == price
    assert registry.list_models()[0].price_per_1000 == price
    reopened = open_registry(registry_url)  # read from the database, not from a cached row
    try:
        stored = reopened.get_model("m").price_per_1000
        assert stored == price
        assert isinstance(stored, Decimal)
    finally:
        reopened.close()


def test_a_price_is_kept_unless_given_and_none_clears_it(registry: SqlRegistry) -> None:
    assert registry.get_model("m").price_per_1000 is None  # a new model has no price of its own
    registry.update_model("m", price_per_1000=Decimal("1.50"), actor="alice")
    kept = registry.update_model("m", description="digits", keep_latest=1)
    assert kept.price_per_1000 == Decimal("1.5")
    assert registry.update_model("m", price_per_1000=Decimal(0)).price_per_1000 == 0  # free, not "the task's price"
    assert registry.update_model("m", price_per_1000=None, actor="bob").price_per_1000 is None
    assert registry.get_model("m").price_per_1000 is None
    edits = [(e.actor, e.detail) for e in registry.history("m") if e.action == "edit"]
    assert edits == [
        ("bob", {"fields": ["price_per_1000"]}),
        (None, {"fields": ["price_per_1000"]}),
        (None, {"fields": ["description", "keep_latest"]}),
        ("alice", {"fields": ["price_per_1000"]}),
    ]


def test_an_unchanged_price_records_nothing(registry: SqlRegistry) -> None:
    registry.update_model("m", price_per_1000=Decimal("1.5"))
    before = registry.changes_since(0)[0]
    registry.update_model("m", price_per_1000=Decimal("1.500000"))  # the same value, other spelling
    registry.update_model("m", price_per_1000=...)
    assert registry.changes_since(0)[0] == before
    registry.update_model("m", price_per_1000=None)
    after = registry.changes_since(0)[0]
    assert after > before
    registry.update_model("m", price_per_1000=None)  # already none
    assert registry.changes_since(0)[0] == after


@pytest.mark.parametrize(
    "price",
    [
        Decimal(-1),
        Decimal("-0.000001"),
        Decimal("NaN"),
        Decimal("sNaN"),
        Decimal("Infinity"),
        Decimal("0.0000001"),  # 7 decimal places
        Decimal("1.0000001"),
        Decimal("1000000000.000001"),
        Decimal("1E+30"),
        Decimal("1E-999999"),
        0.5,  # a float is not exact
        "1.5",
        True,
        [],
    ],
    ids=repr,
)
def test_bad_prices_are_refused_naming_the_field(registry: SqlRegistry, price: object) -> None:
    registry.update_model("m", price_per_1000=Decimal("2"))
    with pytest.raises(InvalidField, match=r"^price_per_1000: ") as caught:
        registry.update_model("m", price_per_1000=price)  # type: ignore[arg-type]
    assert caught.value.status == 422
    message = caught.value.detail.removeprefix("price_per_1000: ")
    assert caught.value.extra["errors"] == [{"field": "price_per_1000", "message": message}]
    assert len(caught.value.detail) < 200  # 1E-999999 is not spelled out as a million zeros
    assert registry.get_model("m").price_per_1000 == 2  # nothing refused was stored


def test_the_price_column_goes_and_comes_back_with_its_migration(registry_url: str) -> None:
    registry = open_registry(registry_url)
    registry.add_version("m", A, 10, M)
    registry.update_model("m", price_per_1000=Decimal("123456789.123456"))
    registry.close()
    engine = make_engine(registry_url)
    try:
        downgrade_schema(engine, "0002")
        assert "price_per_1000" not in {c["name"] for c in inspect(engine).get_columns("models")}
        upgrade_schema(engine)
        column = next(c for c in inspect(engine).get_columns("models") if c["name"] == "price_per_1000")
        assert isinstance(column["type"], Numeric)
        assert (column["type"].precision, column["type"].scale) == (18, 6)
    finally:
        engine.dispose()
    registry = open_registry(registry_url, migrate=False)
    try:
        assert registry.get_model("m").price_per_1000 is None  # the old price went with its column
        assert registry.update_model("m", price_per_1000=Decimal("0.000001")).price_per_1000 == Decimal("0.000001")
    finally:
        registry.close()
