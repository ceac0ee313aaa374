"""Prices: images x price per 1,000, after each key's monthly free tier, in exact decimals.

A model's price per 1,000 images is its own when set, else its task's, else nothing (free).
A key's first ``free_images_per_month`` images of a calendar month cost nothing; they are
used up in the order the usage happened (by day, then model, version and task), so the same
rows always give the same bill. Money is ``Decimal`` rounded half-up to 6 places: summing
floats drifts, and a bill must add up to its lines.

Price every row of the months a report touches (a filtered report still needs the whole
month to know what the free tier covered), then keep the rows asked for.

Example::

    priced = price_lines(lines, price_for=lambda model, task: Decimal("1.50"), free_for=lambda key: 1000)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Protocol

CENT_MILLIONTHS = Decimal("0.000001")


class Line(Protocol):
    """What a usage line needs for pricing."""

    @property
    def key_id(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def version(self) -> int: ...
    @property
    def task(self) -> str: ...
    @property
    def day(self) -> date: ...
    @property
    def images(self) -> int: ...


@dataclass(frozen=True)
class Priced:
    """A usage line with what it costs: ``free_images`` covered by the free tier, the rest billed."""

    line: Line
    free_images: int
    billable_images: int
    price_per_1000: Decimal | None
    cost: Decimal


def price_lines(
    lines: Iterable[Line],
    price_for: Callable[[str, str], Decimal | None],
    free_for: Callable[[str], int],
) -> list[Priced]:
    """Each line priced, in usage order (see the module docstring for the free tier's order)."""
    ordered: Sequence[Line] = sorted(lines, key=lambda ln: (ln.day, ln.model, ln.version, ln.task, ln.key_id))
    free_left: dict[tuple[str, int, int], int] = {}
    priced = []
    for ln in ordered:
        month = (ln.key_id, ln.day.year, ln.day.month)
        left = free_left.setdefault(month, max(0, free_for(ln.key_id)))
        free = min(left, ln.images)
        free_left[month] = left - free
        billable = ln.images - free
        price = price_for(ln.model, ln.task)
        cost = (Decimal(billable) * price / 1000).quantize(CENT_MILLIONTHS, ROUND_HALF_UP) if price else Decimal(0)
        priced.append(Priced(ln, free, billable, price, cost))
    return priced
