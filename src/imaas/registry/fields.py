"""Limits on what users write into the registry: model and version cards, prices, route weights.

Checked before the write transaction starts, so a bad value costs no lock. Every error is
an ``InvalidField`` (422) whose detail starts with the offending field, as in
``tags: at most 50 tags, got 51``, and whose ``errors`` list names it for clients, as the
services' validation errors do (``[{"field": "tags", "message": "at most 50 tags, got 51"}]``).

Text may not contain NUL characters: PostgreSQL cannot store them in ``text`` or ``json``
(SQLite would), so both backends refuse them here rather than one of them failing later.

Example::

    check_tags({"team": "vision"})  # {'team': 'vision'}
    check_weight(150)               # InvalidField("weight: must be between 0 and 100, got 150")
    check_price(Decimal("1.5"))     # Decimal('1.500000')
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

from imaas.errors import InvalidField

MAX_TAGS = 50
MAX_TAG_KEY = 64
MAX_TAG_VALUE = 256
MAX_DESCRIPTION = 10_000
MAX_KEEP_LATEST = 100  # the API's limit (schemas/lifecycle.py)
MAX_PRICE = Decimal(1_000_000_000)  # per 1,000 images; with PRICE_STEP it fits Numeric(18, 6) (tables.py)
PRICE_STEP = Decimal("0.000001")  # 6 decimal places


def invalid(field: str, message: str) -> InvalidField:
    """An ``InvalidField`` for ``field``: the detail ``"<field>: <message>"`` and one entry
    in ``errors``.

    >>> invalid("weight", "must be between 0 and 100").extra
    {'errors': [{'field': 'weight', 'message': 'must be between 0 and 100'}]}
    """
    return InvalidField(f"{field}: {message}", errors=[{"field": field, "message": message}])


def check_text(value: str, field: str) -> str:
    """``value``, or ``InvalidField`` naming ``field`` when it holds a NUL character.

    >>> check_text("ok", "source")
    'ok'
    """
    if "\x00" in value:
        raise invalid(field, "must not contain NUL characters (\\u0000)")
    return value


def find_nul(value: Any, path: str = "") -> str | None:
    """The dotted path of the first text inside ``value`` (nested dicts and lists, keys
    included) that holds a NUL character; None when there is none.

    >>> find_nul({"input": {"name": "x\\x00"}, "labels": ["a"]})
    'input.name'
    """
    if isinstance(value, str):
        return path or "(root)" if "\x00" in value else None
    items: list[tuple[Any, Any]] = []
    if isinstance(value, dict):
        items = list(value.items())
    elif isinstance(value, list | tuple):
        items = list(enumerate(value))
    for key, item in items:
        if isinstance(key, str) and "\x00" in key:
            return path or "(root)"
        found = find_nul(item, f"{path}.{key}" if path else str(key))
        if found is not None:
            return found
    return None


def check_weight(weight: float) -> float:
    """``weight`` as a float percentage, or ``InvalidField`` naming ``weight`` outside 0-100.

    >>> check_weight(25)
    25.0
    """
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight):
        raise invalid("weight", f"must be a number between 0 and 100, got {weight!r}")
    if not 0 <= weight <= 100:
        raise invalid("weight", f"must be between 0 and 100, got {weight:g}")
    return float(weight)


def check_description(description: str, field: str = "description") -> str:
    """``description``, or ``InvalidField`` when it is not text, is longer than 10,000
    characters or holds a NUL character."""
    if not isinstance(description, str):
        raise invalid(field, f"must be text, got {type(description).__name__}")
    if len(description) > MAX_DESCRIPTION:
        raise invalid(field, f"at most {MAX_DESCRIPTION} characters, got {len(description)}")
    return check_text(description, field)


def check_tags(tags: dict[str, Any], field: str = "tags") -> dict[str, str]:
    """A copy of ``tags``, or ``InvalidField`` naming the tag that breaks a limit.

    At most 50 tags; keys are 1-64 characters and values at most 256, both text without
    NUL characters.

    >>> check_tags({"": "v"})
    Traceback (most recent call last):
    imaas.errors.InvalidField: tags: key '' must be text of 1 to 64 characters
    """
    if not isinstance(tags, dict):
        raise invalid(field, f"must be an object of text values, got {type(tags).__name__}")
    if len(tags) > MAX_TAGS:
        raise invalid(field, f"at most {MAX_TAGS} tags, got {len(tags)}")
    out: dict[str, str] = {}
    for key, value in tags.items():
        if not isinstance(key, str) or not 1 <= len(key) <= MAX_TAG_KEY:
            shown = repr(key[:MAX_TAG_KEY]) + "..." if isinstance(key, str) and len(key) > MAX_TAG_KEY else repr(key)
            raise invalid(field, f"key {shown} must be text of 1 to {MAX_TAG_KEY} characters")
        if "\x00" in key:
            raise invalid(field, f"key {key!r} must not contain NUL characters (\\u0000)")
        if not isinstance(value, str):
            raise invalid(f"{field}.{key}", f"must be text, got {type(value).__name__}")
        if len(value) > MAX_TAG_VALUE:
            raise invalid(f"{field}.{key}", f"at most {MAX_TAG_VALUE} characters, got {len(value)}")
        out[key] = check_text(value, f"{field}.{key}")
    return out


def check_keep_latest(keep_latest: int) -> int:
    """``keep_latest``, or ``InvalidField`` unless it is a whole number from 0 to 100."""
    if isinstance(keep_latest, bool) or not isinstance(keep_latest, int) or not 0 <= keep_latest <= MAX_KEEP_LATEST:
        raise invalid("keep_latest", f"must be a whole number from 0 to {MAX_KEEP_LATEST}, got {keep_latest!r}")
    return keep_latest


def check_price(price: Decimal | int) -> Decimal:
    """``price`` (per 1,000 images) with exactly 6 decimal places, or ``InvalidField`` naming
    ``price_per_1000`` unless it is a finite decimal from 0 to 1,000,000,000 with at most 6
    decimal places.

    A float is refused rather than converted: ``0.1`` is not exactly a tenth, and a price
    must be exact. Trailing zeros do not count as places (``Decimal("1.5000000")`` is 1.5).

    >>> check_price(Decimal("0.000001"))
    Decimal('0.000001')
    >>> check_price(Decimal("0.0000001"))
    Traceback (most recent call last):
    imaas.errors.InvalidField: price_per_1000: at most 6 decimal places, got 0.0000001
    """
    if isinstance(price, bool) or not isinstance(price, Decimal | int):
        raise invalid("price_per_1000", f"must be a Decimal (a float is not exact), got {price!r}")
    price = Decimal(price)
    if not price.is_finite():
        raise invalid("price_per_1000", f"must be a finite number, got {price}")
    if not 0 <= price <= MAX_PRICE:
        raise invalid("price_per_1000", f"must be between 0 and {MAX_PRICE}, got {price}")
    if price != price.quantize(PRICE_STEP):
        shown = f"{price:f}" if price.adjusted() > -20 else str(price)  # 1E-999999 is not a megabyte of zeros
        raise invalid("price_per_1000", f"at most 6 decimal places, got {shown}")
    return price.copy_abs().quantize(PRICE_STEP)  # copy_abs: -0 is stored as 0
