"""Rate limits and quotas against a real Redis at 127.0.0.1:6379 (skipped when none answers).

The unit behaviour tests run again here on ``RedisCounters`` (this module's ``counters`` fixture
overrides theirs); the tests below check that instances in one process, and in two OS processes,
share one budget exactly, as N server replicas behind one Redis must. Each test uses its own key
prefix and deletes its keys afterwards.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any
from uuid import uuid4

import pytest
import redis

from imaas.domain import KeyLimits
from imaas.errors import CountersUnavailable, QuotaExceeded, RateLimited
from imaas.security.quotas import QuotaCounters, RedisCounters, open_counters
from tests.unit.security.test_quotas import (  # noqa: F401  (collected here, run on Redis)
    test_both_over_names_the_quota_that_resets_last,
    test_bucket_burst_then_refill,
    test_bucket_default_burst_is_rps_rounded_up,
    test_bucket_refills_only_up_to_its_burst,
    test_buckets_are_per_key_and_optional,
    test_day_exhausted_charges_the_month_nothing,
    test_day_quota_refuses_without_charging_and_refunds,
    test_day_window_reset_is_exact,
    test_month_exhausted_refuses_though_the_day_has_room,
    test_month_quota_resets_at_the_month_boundary,
    test_negative_counts_are_refused,
    test_quotas_are_per_key_and_optional,
    ts,
)

HOST, PORT = "127.0.0.1", 6379
URL = f"redis://{HOST}:{PORT}/0"


def _redis_answers() -> bool:
    try:
        with socket.create_connection((HOST, PORT), timeout=0.5):
            pass
        return bool(redis.Redis(host=HOST, port=PORT, socket_timeout=1).ping())
    except (OSError, redis.RedisError):
        return False


pytestmark = pytest.mark.skipif(not _redis_answers(), reason=f"no Redis answers at {HOST}:{PORT}")


@pytest.fixture
def prefix() -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    p = f"imaas-test:{uuid4().hex}:"
    yield p
    client = redis.Redis(host=HOST, port=PORT)
    keys = list(client.scan_iter(match=p + "*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
async def counters(prefix: str) -> AsyncIterator[QuotaCounters]:
    c = RedisCounters(URL, prefix=prefix)
    yield c
    await c.close()


@pytest.fixture
async def pair(prefix: str) -> AsyncIterator[tuple[RedisCounters, RedisCounters]]:
    """Two instances on one Redis, as two server processes would have."""
    a, b = RedisCounters(URL, prefix=prefix), RedisCounters(URL, prefix=prefix)
    yield a, b
    await a.close()
    await b.close()


async def _admitted(calls: list[Any], refused: type[Exception]) -> int:
    results = await asyncio.gather(*calls, return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert all(isinstance(e, refused) for e in errors), errors
    return len(results) - len(errors)


async def test_two_instances_share_one_image_quota(pair: tuple[RedisCounters, RedisCounters], prefix: str) -> None:
    limits = KeyLimits(images_per_day=60, images_per_month=1000)
    now = ts("2026-12-02T08:00:00")
    calls = [pair[i % 2].take_images("k", limits, 1, now) for i in range(100)]
    assert await _admitted(calls, QuotaExceeded) == 60
    client = redis.Redis(host=HOST, port=PORT)
    assert int(client.get(f"{prefix}k:day:2026-12-02") or 0) == 60
    assert int(client.get(f"{prefix}k:month:2026-12") or 0) == 60  # refused takes charged the month nothing
    client.close()


async def test_two_instances_share_one_token_bucket(pair: tuple[RedisCounters, RedisCounters]) -> None:
    limits = KeyLimits(rps=1, burst=30)
    calls = [pair[i % 2].take_request("k", limits, 1000.0) for i in range(100)]
    assert await _admitted(calls, RateLimited) == 30
    # one second later (by the injected clock) exactly one more token is back, for either instance
    assert await pair[1].take_request("k", limits, 1001.0) is not None
    with pytest.raises(RateLimited):
        await pair[0].take_request("k", limits, 1001.0)


async def test_keys_expire_after_their_window(counters: QuotaCounters, prefix: str) -> None:
    now = ts("2026-12-02T23:00:00")
    await counters.take_images("k", KeyLimits(images_per_day=5, images_per_month=9), 1, now)
    await counters.take_request("k", KeyLimits(rps=2, burst=4), now)
    client = redis.Redis(host=HOST, port=PORT)
    day_ttl = client.ttl(f"{prefix}k:day:2026-12-02")
    month_ttl = client.ttl(f"{prefix}k:month:2026-12")
    bucket_pttl = client.pttl(f"{prefix}k:rps")
    client.close()
    assert 3600 < day_ttl <= 2 * 3600  # the hour left in the day, plus the grace hour
    assert 29 * 86400 < month_ttl <= 29 * 86400 + 2 * 3600
    assert 500 < bucket_pttl <= 1500  # full again after 0.5 s, plus a second


async def test_refund_of_an_expired_window_creates_nothing(counters: QuotaCounters, prefix: str) -> None:
    await counters.refund_images("k", KeyLimits(images_per_day=5), 3, ts("2026-12-02T08:00:00"))
    client = redis.Redis(host=HOST, port=PORT)
    assert list(client.scan_iter(match=prefix + "*")) == []
    client.close()


def test_open_counters_picks_redis_with_a_url() -> None:
    c = open_counters(URL)
    assert isinstance(c, RedisCounters)
    asyncio.run(c.close())


# --- two OS processes -------------------------------------------------------------------------


async def _take_many(prefix: str, n: int, now: float) -> tuple[int, int]:
    counters = RedisCounters(URL, prefix=prefix)
    try:
        images = [counters.take_images("k", KeyLimits(images_per_month=60), 1, now) for _ in range(n)]
        requests = [counters.take_request("k", KeyLimits(rps=0.5, burst=30), now) for _ in range(n)]
        return await _admitted(images, QuotaExceeded), await _admitted(requests, RateLimited)
    finally:
        await counters.close()


def _worker(prefix: str, n: int, now: float, barrier: Any, results: Any) -> None:
    """One "server process": waits for the other, then takes n images and n requests concurrently."""
    barrier.wait(timeout=60)
    results.put(asyncio.run(_take_many(prefix, n, now)))


def test_two_processes_share_one_budget(prefix: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    now = ts("2026-12-02T08:00:00")
    procs = [ctx.Process(target=_worker, args=(prefix, 50, now, barrier, results)) for _ in range(2)]
    for p in procs:
        p.start()
    got = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    assert sum(images for images, _ in got) == 60
    assert sum(requests for _, requests in got) == 30


async def test_counters_that_do_not_answer_are_a_503_not_a_hang_or_a_500() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    counters = RedisCounters(f"redis://127.0.0.1:{port}/0")
    limits = KeyLimits(rps=5, images_per_day=10)
    try:
        with pytest.raises(CountersUnavailable) as info:
            await asyncio.wait_for(counters.take_request("k", limits, 0.0), timeout=10)
        assert info.value.status == 503
        assert info.value.retry_after is not None
        with pytest.raises(CountersUnavailable):
            await asyncio.wait_for(counters.take_images("k", limits, 1, 0.0), timeout=10)
    finally:
        await counters.close()
