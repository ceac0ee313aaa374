"""Prices after the monthly free tier (metering/pricing.py), against bills worked out by hand."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from imaas.metering.pricing import price_lines
from imaas.registry.usage import UsageLine


def ln(key: str, model: str, day: date, images: int, task: str = "classification") -> UsageLine:
    return UsageLine(key, model, 1, task, day, images, images, 0.0, 0)


PRICES = {"a": Decimal("1.50"), "b": Decimal("0.40")}


def price_for(model: str, task: str) -> Decimal | None:
    return PRICES.get(model, Decimal("2") if task == "detection" else None)


def test_the_free_tier_is_used_in_usage_order_then_billed() -> None:
    lines = [
        ln("k1", "b", date(2026, 12, 2), 700),  # later day: priced second whatever the input order
        ln("k1", "a", date(2026, 12, 1), 800),
    ]
    priced = price_lines(lines, price_for, lambda key: 1000)
    assert [(p.line.model, p.free_images, p.billable_images, p.cost) for p in priced] == [
        ("a", 800, 0, Decimal("0.000000")),
        ("b", 200, 500, Decimal("0.200000")),  # 500 x 0.40 / 1000
    ]


def test_each_month_and_each_key_has_its_own_free_tier() -> None:
    lines = [
        ln("k1", "a", date(2026, 11, 30), 1500),
        ln("k1", "a", date(2026, 12, 1), 1500),
        ln("k2", "a", date(2026, 12, 1), 1500),
    ]
    free = {"k1": 1000, "k2": 0}
    priced = price_lines(lines, price_for, free.__getitem__)
    assert [(p.line.key_id, p.line.day.month, p.billable_images, p.cost) for p in priced] == [
        ("k1", 11, 500, Decimal("0.750000")),
        ("k1", 12, 500, Decimal("0.750000")),
        ("k2", 12, 1500, Decimal("2.250000")),
    ]


def test_the_task_price_applies_when_the_model_has_none_and_otherwise_it_is_free() -> None:
    lines = [ln("k", "faces", date(2026, 12, 1), 3, task="detection"), ln("k", "c", date(2026, 12, 1), 10**6)]
    priced = price_lines(lines, price_for, lambda key: 0)
    assert [(p.line.model, p.price_per_1000, p.cost) for p in priced] == [
        ("c", None, Decimal(0)),
        ("faces", Decimal(2), Decimal("0.006000")),
    ]


def test_costs_are_exact_decimals_that_add_up() -> None:
    lines = [ln("k", "b", date(2026, 12, d), 1) for d in range(1, 31)]
    priced = price_lines(lines, price_for, lambda key: 0)
    assert sum(p.cost for p in priced) == Decimal("0.012000")  # 30 x 0.0004, no float drift
