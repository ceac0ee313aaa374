"""Limits on what users write into the registry: model and version cards, route weights.

Checked before the write transaction starts, so a bad value costs no lock. Every error is
an ``InvalidField`` (422) whose detail starts with the offending field, as in
``tags: at most 50 tags, got 51``.

Example::

    check_tags({"team": "vision"})  # {'team': 'vision'}
    check_weight(150)               # InvalidField("weight: must be between 0 and 100, got 150")
"""

from __future__ import annotations

import math
from typing import Any

from imaas.errors import InvalidField

MAX_TAGS = 50
MAX_TAG_KEY = 64
MAX_TAG_VALUE = 256
MAX_DESCRIPTION = 10_000
MAX_KEEP_LATEST = 1000


def check_weight(weight: float) -> float:
    """``weight`` as a float percentage, or ``InvalidField`` naming ``weight`` outside 0-100.

    >>> check_weight(25)
    25.0
    """
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight):
        raise InvalidField(f"weight: must be a number between 0 and 100, got {weight!r}")
    if not 0 <= weight <= 100:
        raise InvalidField(f"weight: must be between 0 and 100, got {weight:g}")
    return float(weight)


def check_description(description: str, field: str = "description") -> str:
    """``description``, or ``InvalidField`` when it is not text or longer than 10,000 characters."""
    if not isinstance(description, str):
        raise InvalidField(f"{field}: must be text, got {type(description).__name__}")
    if len(description) > MAX_DESCRIPTION:
        raise InvalidField(f"{field}: at most {MAX_DESCRIPTION} characters, got {len(description)}")
    return description


def check_tags(tags: dict[str, Any], field: str = "tags") -> dict[str, str]:
    """A copy of ``tags``, or ``InvalidField`` naming the tag that breaks a limit.

    At most 50 tags; keys are 1-64 characters and values at most 256, both text.
    """
    if not isinstance(tags, dict):
        raise InvalidField(f"{field}: must be an object of text values, got {type(tags).__name__}")
    if len(tags) > MAX_TAGS:
        raise InvalidField(f"{field}: at most {MAX_TAGS} tags, got {len(tags)}")
    out: dict[str, str] = {}
    for key, value in tags.items():
        if not isinstance(key, str) or not 1 <= len(key) <= MAX_TAG_KEY:
            shown = key[:MAX_TAG_KEY] + "..." if isinstance(key, str) else repr(key)
            raise InvalidField(f"{field}: key {shown!r} must be text of 1 to {MAX_TAG_KEY} characters")
        if not isinstance(value, str):
            raise InvalidField(f"{field}.{key}: must be text, got {type(value).__name__}")
        if len(value) > MAX_TAG_VALUE:
            raise InvalidField(f"{field}.{key}: at most {MAX_TAG_VALUE} characters, got {len(value)}")
        out[key] = value
    return out


def check_keep_latest(keep_latest: int) -> int:
    """``keep_latest``, or ``InvalidField`` unless it is a whole number from 0 to 1000."""
    if isinstance(keep_latest, bool) or not isinstance(keep_latest, int) or not 0 <= keep_latest <= MAX_KEEP_LATEST:
        raise InvalidField(f"keep_latest: must be a whole number from 0 to {MAX_KEEP_LATEST}, got {keep_latest!r}")
    return keep_latest
