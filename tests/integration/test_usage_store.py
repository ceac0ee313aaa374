"""Usage rows (registry/usage.py) and the batching recorder (metering/recorder.py), both databases."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import date

import pytest

from imaas.metering.recorder import Units, UsageKey, UsageRecorder
from imaas.registry.sql import open_registry
from imaas.registry.usage import SqlUsage, UsageLine

DAY = date(2026, 12, 2)


@pytest.fixture
def usage(registry_url: str) -> Iterator[SqlUsage]:
    registry = open_registry(registry_url)
    yield SqlUsage(registry)
    registry.close()


def line(key: str = "k1", model: str = "m", day: date = DAY, images: int = 2) -> UsageLine:
    return UsageLine(key, model, 1, "classification", day, 1, images, 10.5, 1000)


def test_batches_add_up_per_row(usage: SqlUsage) -> None:
    usage.add([line(), line(images=3)])  # the same row twice in one batch (PostgreSQL refuses that in one upsert)
    usage.add([line()])
    rows = usage.query(key_id="k1")
    assert len(rows) == 1
    assert (rows[0].requests, rows[0].images, rows[0].compute_ms, rows[0].bytes_in) == (3, 7, 31.5, 3000)


def test_filters(usage: SqlUsage) -> None:
    usage.add([line("k1", "a", date(2026, 11, 30)), line("k1", "b", DAY), line("k2", "a", DAY)])
    assert [(r.key_id, r.model) for r in usage.query(start=DAY)] == [("k1", "b"), ("k2", "a")]
    assert [r.day for r in usage.query(model="a")] == [date(2026, 11, 30), DAY]
    assert [r.model for r in usage.query(key_id="k1", end=date(2026, 12, 1))] == ["a"]
    assert usage.query(key_id="nobody") == []


def test_two_servers_flushing_the_same_row_concurrently_add_up(registry_url: str, usage: SqlUsage) -> None:
    other_registry = open_registry(registry_url)
    other = SqlUsage(other_registry)
    try:

        def flush(store: SqlUsage) -> None:
            for _ in range(20):
                store.add([line(images=1)])

        threads = [threading.Thread(target=flush, args=(s,)) for s in (usage, other)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        other_registry.close()
    (row,) = usage.query()
    assert (row.requests, row.images) == (40, 40)


async def test_the_recorder_keeps_a_failed_batch_and_writes_it_later(usage: SqlUsage) -> None:
    failures = [RuntimeError("database away")]

    def sink(batch: dict[UsageKey, Units]) -> None:
        if failures:
            raise failures.pop()
        usage.add(UsageLine(k.key_id, k.model, k.version, k.task, k.day, *vars(u).values()) for k, u in batch.items())

    recorder = UsageRecorder(sink)
    key = UsageKey("k1", "m", 1, "classification", DAY)
    for _ in range(5):
        recorder.add(key, images=2, compute_ms=1.0, bytes_in=100)
    assert not await recorder.flush()
    assert usage.query() == []
    recorder.add(key, images=1, compute_ms=1.0, bytes_in=100)  # arrives while the first batch waits
    assert recorder.pending == 1
    assert await recorder.flush()
    assert recorder.pending == 0
    (row,) = usage.query()
    assert (row.requests, row.images, row.compute_ms, row.bytes_in) == (6, 11, 6.0, 600)
    assert await recorder.flush()  # nothing pending: nothing written twice
    assert usage.query()[0].requests == 6


@pytest.mark.parametrize("write_fails", [False, True])
async def test_a_flush_cancelled_mid_write_loses_nothing_and_writes_nothing_twice(write_fails: bool) -> None:
    """Shutdown cancels the periodic flush; the batch it had taken is written or kept, never dropped."""
    started, release = threading.Event(), threading.Event()
    written: list[int] = []

    def sink(batch: dict[UsageKey, Units]) -> None:
        started.set()
        release.wait(10)
        if write_fails:
            raise RuntimeError("database away")
        written.append(sum(u.images for u in batch.values()))

    recorder = UsageRecorder(sink)
    for i in range(1000):
        recorder.add(UsageKey(f"k{i % 7}", "m", 1, "classification", DAY), images=1, compute_ms=1.0, bytes_in=1)
    flush = asyncio.create_task(recorder.flush())
    await asyncio.to_thread(started.wait, 10)
    flush.cancel()
    await asyncio.sleep(0)
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await flush
    kept = sum(u.images for u in recorder.take_pending().values())
    assert (sum(written), kept) == ((0, 1000) if write_fails else (1000, 0))
