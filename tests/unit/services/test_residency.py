"""The load policy on a real engine: pinned versions stay, idle ones go, the budget evicts LRU."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from imaas.domain import ModelVersion
from imaas.runtime.engine import Engine, EngineConfig
from imaas.schemas.manifest import Manifest
from imaas.services.residency import Residency
from tests.factories import tiny_classifier


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def now(self) -> float:
        return self.t


def version(n: int) -> ModelVersion:
    manifest = Manifest.model_validate(
        {"task": "classification", "input": {"name": "input", "size": [32, 32]}, "labels": ["a", "b", "c", "d"]}
    )
    return ModelVersion("cnn", n, "0" * 64, 1, manifest, datetime.now(UTC))


@pytest.fixture
async def engine(tmp_path: Path) -> Engine:
    clock = Clock()
    engine = Engine(EngineConfig(workers=1, solo_models=0), clock=clock)
    for n in (1, 2, 3):
        model = await engine.load(version(n), tiny_classifier(tmp_path / f"m{n}.onnx", seed=n))
        model.last_used = clock.t - 10 * n  # 1 used most recently, 3 least
    yield engine
    await engine.close()


async def test_idle_unpinned_versions_are_unloaded_and_pinned_ones_stay(engine: Engine) -> None:
    pinned = {("cnn", 3)}
    residency = Residency(engine, lambda: pinned, idle_unload_s=15, clock=engine.clock)
    await residency.refresh()
    assert await residency.check() == [("cnn", 2)]  # 1 is idle 10 s < 15; 2 idle 20 s; 3 idle 30 s but pinned
    assert sorted(v.version for v in engine.loaded) == [1, 3]


async def test_losing_a_pin_unloads_at_once(engine: Engine) -> None:
    pinned = {("cnn", 1), ("cnn", 2), ("cnn", 3)}
    residency = Residency(engine, lambda: set(pinned), idle_unload_s=1e9, clock=engine.clock)
    await residency.refresh()
    pinned.discard(("cnn", 2))  # an alias moved away from version 2
    assert await residency.refresh() == [("cnn", 2)]
    assert engine.get(("cnn", 2)) is None


async def test_over_the_budget_the_least_recently_used_unpinned_go_first(engine: Engine) -> None:
    for m in engine.models:
        m.memory_bytes = 100
    residency = Residency(engine, lambda: {("cnn", 3)}, idle_unload_s=1e9, memory_budget_bytes=200, clock=engine.clock)
    await residency.refresh()
    assert await residency.check() == [("cnn", 2)]  # 300 > 200: 2 is the LRU unpinned one (3 is pinned)
    assert await residency.check() == []


async def test_a_slow_refresh_never_overwrites_a_newer_one(engine: Engine) -> None:
    import asyncio
    import threading

    first_reading, release_first = threading.Event(), threading.Event()
    calls = 0

    def read() -> set[tuple[str, int]]:
        nonlocal calls
        calls += 1
        if calls == 1:  # the first read saw the registry before the promote, and is slow
            first_reading.set()
            assert release_first.wait(5)
            return {("cnn", 1)}
        return {("cnn", 2)}

    residency = Residency(engine, read, idle_unload_s=1e9, clock=engine.clock)
    slow = asyncio.create_task(residency.refresh())
    assert await asyncio.to_thread(first_reading.wait, 5)
    newer = asyncio.create_task(residency.refresh())  # a promote's refresh, started while the first reads
    await asyncio.sleep(0)
    release_first.set()
    await asyncio.gather(slow, newer)
    assert residency.pinned == {("cnn", 2)}
    assert engine.get(("cnn", 2)) is not None  # the new production version was never unloaded
