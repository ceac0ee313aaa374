"""Times and durations as people type them on the command line, and times as the CLI shows them.

A duration is ``90s``, ``15m``, ``1h30m``, ``30d``, ``2w`` or plain seconds (``3600``). An
instant is ISO-8601 (``2027-01-31``, ``2027-01-31T12:00``, ``...+02:00``, ``...Z``; without a
zone it is this machine's local time) or a duration with its unit counted from now: ahead for an expiry,
back for ``--since``. A day (usage reports) is ``YYYY-MM-DD``, ``today`` or a duration back
from today (UTC, as the server counts days).

Example::

    parse_duration("1h30m")                      # timedelta(seconds=5400)
    parse_instant("30d", now, ahead=True)        # now + 30 days
    parse_day("7d", today=date(2026, 12, 8))     # date(2026, 12, 1)
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?[smhdw])+")
DURATION_FORMS = "90s, 15m, 1h30m, 30d, 2w"


def parse_duration(text: str) -> timedelta:
    """``text`` as a duration; ``ValueError`` naming the accepted forms otherwise."""
    value = text.strip().lower()
    try:
        seconds = float(value)
    except ValueError:
        if not _DURATION.fullmatch(value):
            raise ValueError(f"{text!r} is not a duration ({DURATION_FORMS} or seconds)") from None
        seconds = sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _PART.findall(value))
    if seconds < 0 or seconds != seconds or seconds > 100 * 365 * 86400:  # negative, NaN or absurd
        raise ValueError(f"{text!r} is not a duration ({DURATION_FORMS} or seconds)")
    return timedelta(seconds=seconds)


def parse_instant(text: str, now: datetime, *, ahead: bool) -> datetime:
    """``text`` as an aware datetime: ISO-8601 (local time without a zone) or a duration from
    ``now``, forward when ``ahead`` else back."""
    value = text.strip()
    if _DURATION.fullmatch(value.lower()):  # with a unit: a bare number is no instant
        return now + parse_duration(value) if ahead else now - parse_duration(value)
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither an ISO-8601 time (2027-01-31, 2027-01-31T12:00+00:00) nor a duration "
            f"({DURATION_FORMS}, counted {'from' if ahead else 'back from'} now)"
        ) from None
    return at if at.tzinfo is not None else at.astimezone()  # naive: this machine's local time


def parse_day(text: str, today: date | None = None) -> date:
    """``text`` as a UTC day: ``YYYY-MM-DD``, ``today``, or a duration back from today."""
    value = text.strip().lower()
    today = today or datetime.now(UTC).date()
    if value == "today":
        return today
    if _DURATION.fullmatch(value):
        return today - timedelta(days=parse_duration(value).days)
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{text!r} is not a day (YYYY-MM-DD, today, or days back such as 7d)") from None


def shown(at: datetime | None) -> str:
    """A time as the CLI prints it: this machine's local time, to the second; ``-`` for None."""
    return at.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z") if at is not None else "-"
