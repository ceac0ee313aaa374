"""Shadow copies never wait: a full queue drops (and counts), results are compared per image."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from imaas.domain import ModelVersion
from imaas.schemas.manifest import Manifest
from imaas.services.comparison import Comparisons
from imaas.services.shadow import ShadowCopy, ShadowRunner


def version(n: int) -> ModelVersion:
    manifest = Manifest.model_validate({"task": "classification", "input": {"size": [8, 8]}})
    return ModelVersion("cnn", n, "0" * 64, 1, manifest, datetime.now(UTC))


def answer(label: str) -> dict[str, Any]:
    return {"predictions": [{"index": 0, "label": label, "score": 1.0}]}


async def test_agreement_is_counted_per_image_and_a_full_queue_drops() -> None:
    gate = asyncio.Event()
    runs = 0

    async def run(v: ModelVersion, images: list[Any]) -> list[dict[str, Any]]:
        nonlocal runs
        runs += 1
        await gate.wait()
        return [answer("cat" if im == "cat" else "dog") for im in images]

    stats = Comparisons()
    runner = ShadowRunner(run, stats, capacity=2)
    primary, shadow = version(1), version(2)
    first = ShadowCopy(primary, shadow, ["cat", "cat", "x"], [answer("cat")] * 3, primary_s=0.01)
    assert runner.offer(first)
    await asyncio.sleep(0)  # the runner takes the first copy and waits on the gate
    assert runner.offer(ShadowCopy(primary, shadow, ["cat"], [answer("dog")], primary_s=0.02))
    assert runner.offer(ShadowCopy(primary, shadow, ["x"], [answer("dog")], primary_s=0.02))
    assert not runner.offer(ShadowCopy(primary, shadow, ["x"], [answer("dog")], primary_s=0.02))  # full
    gate.set()
    await asyncio.wait_for(runner.drain(), 5)
    [pair] = stats.snapshot("cnn")
    assert (pair.compared, pair.dropped, pair.failed, runs) == (5, 1, 0, 3)
    assert pair.agreed == 2 + 0 + 1  # cat/cat twice, x->dog vs cat no; cat vs dog no; dog/dog yes
    assert pair.primary_latency.p50_ms is not None
    await runner.close()


async def test_a_failing_shadow_is_counted_and_the_runner_goes_on() -> None:
    calls = 0

    async def run(v: ModelVersion, images: list[Any]) -> list[dict[str, Any]]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("the shadow's file is corrupt")
        return [answer("cat")]

    stats = Comparisons()
    runner = ShadowRunner(run, stats, capacity=4)
    for _ in range(2):
        runner.offer(ShadowCopy(version(1), version(2), ["cat"], [answer("cat")], primary_s=0.01))
    await asyncio.wait_for(runner.drain(), 5)
    [pair] = stats.snapshot("cnn")
    assert (pair.failed, pair.compared, pair.agreement) == (1, 1, 1.0)
    await runner.close()


async def test_copies_are_bounded_by_the_bytes_they_hold() -> None:
    from imaas.services.inference import ImageInput

    async def run(v: ModelVersion, images: list[Any]) -> list[dict[str, Any]]:
        return [answer("cat") for _ in images]

    stats = Comparisons()
    runner = ShadowRunner(run, stats, capacity=100, max_bytes=1000)
    big = [ImageInput(b"x" * 600)]
    assert runner.offer(ShadowCopy(version(1), version(2), big, [answer("cat")], primary_s=0.01))
    assert not runner.offer(ShadowCopy(version(1), version(2), big, [answer("cat")], primary_s=0.01))  # 1200 > 1000
    await asyncio.wait_for(runner.drain(), 5)
    assert runner.offer(ShadowCopy(version(1), version(2), big, [answer("cat")], primary_s=0.01))  # room again
    await asyncio.wait_for(runner.drain(), 5)
    [pair] = stats.snapshot("cnn")
    assert (pair.compared, pair.dropped) == (2, 1)
    await runner.close()
