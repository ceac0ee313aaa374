"""Rate limits and image quotas: the token bucket, day and month windows, refunds, the RateLimit headers.

The behavioural tests take a ``counters`` fixture: here the in-memory backend (no network);
tests/integration/test_quotas_redis.py runs the same functions against a real Redis.
Time is injected as ``now``; expectations are computed independently with ``datetime``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from imaas.domain import KeyLimits
from imaas.errors import QuotaExceeded, RateLimited
from imaas.security.quotas import Decision, MemoryCounters, QuotaCounters, open_counters, ratelimit_headers


def ts(iso: str) -> float:
    """Unix seconds of an ISO-8601 UTC instant."""
    return datetime.fromisoformat(iso).replace(tzinfo=UTC).timestamp()


@pytest.fixture
async def counters() -> AsyncIterator[QuotaCounters]:
    c = MemoryCounters()
    yield c
    await c.close()


# --- behaviour (shared with the Redis integration tests) --------------------------------------


async def test_bucket_burst_then_refill(counters: QuotaCounters) -> None:
    limits = KeyLimits(rps=5, burst=10)
    for i in range(10):
        d = await counters.take_request("k", limits, 0.0)
        assert d is not None
        assert (d.policy, d.limit, d.window_s, d.remaining) == ("rps", 10, 1, 9 - i)
        assert d.reset_s == pytest.approx((i + 1) / 5)  # i+1 tokens missing, 5 per second come back
    with pytest.raises(RateLimited) as err:
        await counters.take_request("k", limits, 0.0)
    assert err.value.retry_after == pytest.approx(0.2)
    assert err.value.status == 429
    # the refusal took nothing: half a token later, half a token is still missing
    with pytest.raises(RateLimited) as err:
        await counters.take_request("k", limits, 0.1)
    assert err.value.retry_after == pytest.approx(0.1)
    d = await counters.take_request("k", limits, 0.2)
    assert d is not None
    assert d.remaining == 0
    assert d.reset_s == pytest.approx(2.0)
    with pytest.raises(RateLimited):
        await counters.take_request("k", limits, 0.2)


async def test_bucket_refills_only_up_to_its_burst(counters: QuotaCounters) -> None:
    limits = KeyLimits(rps=2, burst=3)
    for _ in range(3):
        await counters.take_request("k", limits, 100.0)
    d = await counters.take_request("k", limits, 10_000.0)  # idle for hours: full, not 19,800 tokens
    assert d is not None
    assert d.remaining == 2
    assert d.reset_s == pytest.approx(0.5)
    await counters.take_request("k", limits, 10_000.0)
    await counters.take_request("k", limits, 10_000.0)
    with pytest.raises(RateLimited) as err:
        await counters.take_request("k", limits, 10_000.0)
    assert err.value.retry_after == pytest.approx(0.5)


@pytest.mark.parametrize(("rps", "burst"), [(2.5, 3), (0.5, 1), (7.0, 7)])
async def test_bucket_default_burst_is_rps_rounded_up(counters: QuotaCounters, rps: float, burst: int) -> None:
    limits = KeyLimits(rps=rps)
    for _ in range(burst):
        d = await counters.take_request("k", limits, 50.0)
        assert d is not None
        assert d.limit == burst
    with pytest.raises(RateLimited) as err:
        await counters.take_request("k", limits, 50.0)
    assert err.value.retry_after == pytest.approx(1 / rps)


async def test_buckets_are_per_key_and_optional(counters: QuotaCounters) -> None:
    limits = KeyLimits(rps=1, burst=1)
    assert await counters.take_request("a", limits, 5.0) is not None
    assert await counters.take_request("b", limits, 5.0) is not None
    with pytest.raises(RateLimited):
        await counters.take_request("a", limits, 5.0)
    assert await counters.take_request("a", KeyLimits(images_per_day=3), 5.0) is None


async def test_day_quota_refuses_without_charging_and_refunds(counters: QuotaCounters) -> None:
    limits = KeyLimits(images_per_day=100)
    now = ts("2026-12-02T10:00:00")
    end_of_day = ts("2026-12-03T00:00:00")
    [d] = await counters.take_images("k", limits, 60, now)
    assert (d.policy, d.limit, d.window_s, d.remaining) == ("day", 100, 86400, 40)
    with pytest.raises(QuotaExceeded) as err:
        await counters.take_images("k", limits, 41, now)
    assert err.value.retry_after == pytest.approx(end_of_day - now)
    assert "daily" in err.value.detail
    assert "100" in err.value.detail
    assert "40 left" in err.value.detail
    [d] = await counters.take_images("k", limits, 40, now + 1)  # nothing was charged by the refusal
    assert d.remaining == 0
    with pytest.raises(QuotaExceeded):
        await counters.take_images("k", limits, 1, now + 2)
    await counters.refund_images("k", limits, 10, now + 3)
    [d] = await counters.take_images("k", limits, 10, now + 4)
    assert d.remaining == 0
    await counters.refund_images("k", limits, 500, now + 5)  # floored at 0, not -400
    [d] = await counters.take_images("k", limits, 100, now + 6)
    assert d.remaining == 0
    with pytest.raises(QuotaExceeded):
        await counters.take_images("k", limits, 1, now + 7)
    # the next UTC day starts from zero
    [d] = await counters.take_images("k", limits, 100, end_of_day)
    assert d.remaining == 0


async def test_day_window_reset_is_exact(counters: QuotaCounters) -> None:
    now = ts("2026-12-02T10:30:15.250000")
    midnight = datetime(2026, 12, 3, tzinfo=UTC)
    expected = (midnight - datetime(2026, 12, 2, 10, 30, 15, 250000, tzinfo=UTC)).total_seconds()
    assert expected == 13 * 3600 + 29 * 60 + 44.75
    [d] = await counters.take_images("k", KeyLimits(images_per_day=5), 2, now)
    assert (d.policy, d.limit, d.window_s, d.remaining) == ("day", 5, 86400, 3)
    assert d.reset_s == pytest.approx(expected, abs=1e-6)


async def test_month_quota_resets_at_the_month_boundary(counters: QuotaCounters) -> None:
    limits = KeyLimits(images_per_month=5)
    jan_last = ts("2026-01-31T23:59:59")
    [d] = await counters.take_images("k", limits, 5, jan_last)
    assert (d.policy, d.window_s, d.remaining) == ("month", 31 * 86400, 0)
    assert d.reset_s == pytest.approx(1.0)
    with pytest.raises(QuotaExceeded) as err:
        await counters.take_images("k", limits, 1, jan_last)
    assert err.value.retry_after == pytest.approx(1.0)
    assert "monthly" in err.value.detail
    [d] = await counters.take_images("k", limits, 5, ts("2026-02-01T00:00:00"))
    assert (d.window_s, d.remaining) == (28 * 86400, 0)
    assert d.reset_s == pytest.approx((datetime(2026, 3, 1) - datetime(2026, 2, 1)).total_seconds())
    # a late refund for January does not credit February
    await counters.refund_images("k", limits, 5, jan_last)
    with pytest.raises(QuotaExceeded):
        await counters.take_images("k", limits, 1, ts("2026-02-01T00:00:01"))


async def test_month_exhausted_refuses_though_the_day_has_room(counters: QuotaCounters) -> None:
    both = KeyLimits(images_per_day=100, images_per_month=10)
    now = ts("2026-06-15T12:00:00")
    day, month = await counters.take_images("k", both, 10, now)
    assert (day.policy, day.remaining, month.policy, month.remaining) == ("day", 90, "month", 0)
    assert month.window_s == 30 * 86400
    with pytest.raises(QuotaExceeded) as err:
        await counters.take_images("k", both, 1, now)
    assert "monthly image quota of 10" in err.value.detail
    assert err.value.retry_after == pytest.approx(ts("2026-07-01T00:00:00") - now)
    # the refused take charged neither counter: the day still has exactly 90
    [d] = await counters.take_images("k", KeyLimits(images_per_day=100), 90, now)
    assert d.remaining == 0
    with pytest.raises(QuotaExceeded) as err:
        await counters.take_images("k", KeyLimits(images_per_day=100), 1, now)
    assert "daily" in err.value.detail


async def test_day_exhausted_charges_the_month_nothing(counters: QuotaCounters) -> None:
    both = KeyLimits(images_per_day=3, images_per_month=10)
    now = ts("2026-06-15T12:00:00")
    await counters.take_images("k", both, 3, now)
    with pytest.raises(QuotaExceeded) as err:
        await counters.take_images("k", both, 2, now)
    assert "daily image quota of 3 exceeded: 0 left, 2 requested" in err.value.detail
    assert err.value.retry_after == pytest.approx(12 * 3600)
    day, month = await counters.take_images("k", both, 3, ts("2026-06-16T00:00:00"))
    assert (day.remaining, month.remaining) == (0, 4)


async def test_both_over_names_the_quota_that_resets_last(counters: QuotaCounters) -> None:
    both = KeyLimits(images_per_day=5, images_per_month=5)
    now = ts("2026-06-15T12:00:00")
    await counters.take_images("k", both, 5, now)
    with pytest.raises(QuotaExceeded) as err:
        await counters.take_images("k", both, 1, now)
    assert "monthly" in err.value.detail
    assert err.value.retry_after == pytest.approx(ts("2026-07-01T00:00:00") - now)


async def test_quotas_are_per_key_and_optional(counters: QuotaCounters) -> None:
    limits = KeyLimits(images_per_day=2)
    now = ts("2026-06-15T12:00:00")
    await counters.take_images("a", limits, 2, now)
    [d] = await counters.take_images("b", limits, 2, now)
    assert d.remaining == 0
    assert await counters.take_images("a", KeyLimits(rps=1), 1000, now) == []
    await counters.refund_images("a", KeyLimits(), 1, now)  # nothing set: nothing to refund
    [d] = await counters.take_images("a", limits, 0, now)  # a zero charge reports without charging
    assert d.remaining == 0


async def test_negative_counts_are_refused(counters: QuotaCounters) -> None:
    with pytest.raises(ValueError, match=">= 0"):
        await counters.take_images("k", KeyLimits(images_per_day=2), -1, 0.0)
    with pytest.raises(ValueError, match=">= 0"):
        await counters.refund_images("k", KeyLimits(images_per_day=2), -1, 0.0)


# --- memory backend only ----------------------------------------------------------------------


async def test_memory_forgets_past_windows_and_full_buckets() -> None:
    counters = MemoryCounters()
    limits = KeyLimits(rps=10, images_per_day=5, images_per_month=50)
    start = datetime(2026, 1, 1, 12, tzinfo=UTC)
    for day in range(90):
        now = (start + timedelta(days=day)).timestamp()
        await counters.take_request(f"key{day}", limits, now)
        await counters.take_images("k", limits, 1, now)
    # one live day and one live month (plus at most the grace hour's leftovers), one non-full bucket
    assert len(counters._used) <= 4
    assert len(counters._buckets) <= 2


def test_open_counters_picks_memory_without_redis() -> None:
    assert isinstance(open_counters(None), MemoryCounters)


# --- RateLimit headers ------------------------------------------------------------------------


def test_ratelimit_headers_exact() -> None:
    decisions = [Decision("rps", 10, 1, 9, 0.1), Decision("day", 1000, 86400, 0, 3599.2)]
    assert ratelimit_headers(decisions) == {
        "RateLimit-Policy": '"rps";q=10;w=1, "day";q=1000;w=86400',
        "RateLimit": '"day";r=0;t=3600',
    }


def test_ratelimit_headers_single_and_empty() -> None:
    assert ratelimit_headers([Decision("rps", 5, 1, 4, 0.2)]) == {
        "RateLimit-Policy": '"rps";q=5;w=1',
        "RateLimit": '"rps";r=4;t=1',
    }
    assert ratelimit_headers([]) == {}


def test_ratelimit_headers_most_constrained_then_longest_reset() -> None:
    rps = Decision("rps", 10, 1, 5, 0.5)  # 50 % left
    day = Decision("day", 100, 86400, 20, 7200.0)  # 20 % left
    month = Decision("month", 1000, 2592000, 200, 86400.0 * 3)  # 20 % left, resets later
    headers = ratelimit_headers([rps, day, month])
    assert headers["RateLimit"] == '"month";r=200;t=259200'
    assert headers["RateLimit-Policy"] == '"rps";q=10;w=1, "day";q=100;w=86400, "month";q=1000;w=2592000'
    assert ratelimit_headers([rps, day])["RateLimit"] == '"day";r=20;t=7200'
