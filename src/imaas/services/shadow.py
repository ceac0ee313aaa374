"""Shadow traffic: copies of requests run on a candidate off the request path.

The caller's answer never waits for the shadow: ``offer`` puts a copy in a queue bounded
by count and by the bytes of the images it holds, and returns at once; when either bound
is reached the copy is dropped and counted. One task runs
the copies one at a time, so a shadow never holds more than one batch worker's share of
the CPU, whatever its weight. Each copy's result is compared with the answer the caller
got (the task's agreement measure) and both latencies are recorded in ``Comparisons``.

Example::

    runner = ShadowRunner(run_version, comparisons, capacity=64)
    runner.offer(ShadowCopy(primary, shadow, images, results, primary_s=0.012))
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from imaas.domain import Clock, ModelVersion, SystemClock
from imaas.runtime.tasks import task
from imaas.services.comparison import Comparisons

log = logging.getLogger(__name__)

RunVersion = Callable[[ModelVersion, list[Any]], Awaitable[list[dict[str, Any]]]]
"""Runs images (``ImageInput``) through a version and returns one result per image."""


@dataclass(frozen=True)
class ShadowCopy:
    """One request as the caller got it, to be run again on ``shadow``."""

    primary: ModelVersion
    shadow: ModelVersion
    images: list[Any]
    results: list[dict[str, Any]]
    primary_s: float

    @property
    def size(self) -> int:
        """Bytes of image data the copy holds."""
        return sum(len(getattr(im, "data", b"")) for im in self.images)


class ShadowRunner:
    """A bounded queue of shadow copies and the one task that runs them."""

    def __init__(
        self,
        run: RunVersion,
        comparisons: Comparisons,
        capacity: int = 64,
        clock: Clock | None = None,
        max_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self._run = run
        self.comparisons = comparisons
        self.capacity = capacity
        self.max_bytes = max_bytes
        self._bytes = 0
        self.clock: Clock = clock or SystemClock()
        self._queue: asyncio.Queue[ShadowCopy] | None = None
        self._task: asyncio.Task[None] | None = None

    def offer(self, copy: ShadowCopy) -> bool:
        """Queue ``copy`` (on the event loop) unless the queue is full; never waits."""
        if self._queue is None:
            self._queue = asyncio.Queue(self.capacity)
            self._task = asyncio.get_running_loop().create_task(self._work(self._queue), name="shadow")
        size = copy.size
        if self._bytes + size > self.max_bytes or self._queue.full():
            self.comparisons.dropped(copy.primary.key, copy.shadow.key, len(copy.images))
            return False
        self._queue.put_nowait(copy)
        self._bytes += size
        return True

    async def _work(self, queue: asyncio.Queue[ShadowCopy]) -> None:
        while True:
            copy = await queue.get()
            self._bytes -= copy.size
            try:
                await self._compare(copy)
            except asyncio.CancelledError:
                raise
            except Exception:  # a comparison must never end the runner
                log.exception("shadow comparison of %s@%s failed", copy.shadow.model, copy.shadow.version)
                self.comparisons.failed(copy.primary.key, copy.shadow.key, len(copy.images))
            finally:
                queue.task_done()

    async def _compare(self, copy: ShadowCopy) -> None:
        start = self.clock.now()
        try:
            results = await self._run(copy.shadow, copy.images)
        except Exception as exc:
            log.debug("shadow %s@%s failed: %s", copy.shadow.model, copy.shadow.version, exc)
            self.comparisons.failed(copy.primary.key, copy.shadow.key, len(copy.images))
            return
        shadow_s = self.clock.now() - start
        measure = task(copy.primary.manifest.task).agreement
        self.comparisons.record(
            copy.primary.key,
            copy.shadow.key,
            agreements=[measure(mine, theirs) for mine, theirs in zip(copy.results, results, strict=True)],
            primary_s=copy.primary_s,
            shadow_s=shadow_s,
        )

    async def drain(self) -> None:
        """Wait until every copy queued so far has run and been recorded."""
        if self._queue is not None:
            await self._queue.join()

    async def close(self) -> None:
        """Stop the runner; queued copies are dropped."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._task = None
        self._queue = None
        self._bytes = 0
