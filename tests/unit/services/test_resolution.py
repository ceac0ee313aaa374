"""The route cache never keeps a route read before an invalidation that ran during the read."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime

from imaas.domain import ModelRef, ModelVersion, Route
from imaas.schemas.manifest import Manifest
from imaas.services.resolution import RouteCache


def route_to(n: int) -> Route:
    manifest = Manifest.model_validate({"task": "classification", "input": {"size": [8, 8]}})
    return Route(ModelVersion("cnn", n, "0" * 64, 1, manifest, datetime.now(UTC)), alias="production")


class Registry:
    """A registry whose alias moves while a read is in progress (the read blocks on ``gate``)."""

    def __init__(self) -> None:
        self.target = 1
        self.reads = 0
        self.reading = threading.Event()
        self.gate = threading.Event()

    def resolve_route(self, ref: ModelRef) -> Route:
        self.reads += 1
        seen = self.target
        self.reading.set()
        assert self.gate.wait(5)
        return route_to(seen)


async def test_an_invalidation_during_a_read_keeps_the_old_route_out_of_the_cache() -> None:
    registry = Registry()
    cache = RouteCache(registry.resolve_route)
    ref = ModelRef("cnn")
    read = asyncio.create_task(cache.get(ref))
    assert await asyncio.to_thread(registry.reading.wait, 5)
    registry.target = 2  # a promote commits while the read is in flight...
    await asyncio.to_thread(cache.invalidate, "cnn")  # ...and invalidates from a worker thread
    registry.gate.set()
    assert (await read).primary.version == 1  # the caller that raced gets what it read
    assert cache.peek(ref) is None  # but it is not cached
    assert (await cache.get(ref)).primary.version == 2
    assert registry.reads == 2


async def test_hits_do_not_read_and_invalidation_is_per_model() -> None:
    registry = Registry()
    registry.gate.set()
    cache = RouteCache(registry.resolve_route)
    await cache.get(ModelRef("cnn"))
    await cache.get(ModelRef("cnn"))
    await cache.get(ModelRef("cnn", alias="staging"))
    assert registry.reads == 2
    cache.invalidate("other")
    assert cache.peek(ModelRef("cnn")) is not None
    cache.invalidate("cnn")
    assert cache.peek(ModelRef("cnn")) is None
    assert cache.peek(ModelRef("cnn", alias="staging")) is None
