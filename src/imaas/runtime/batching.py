"""BatchQueue: dynamic batching with backpressure and deadlines for one model version.

Requests wait in a bounded queue; ``workers`` batch loops each take what is waiting (up to
``max_batch``) and run it in a thread, so batches overlap across cores. A worker never
waits for a fuller batch while the engine is idle: only when every other worker is busy
does it linger up to ``max_wait`` for company. A full queue refuses at once (``Overloaded``,
HTTP 429 with Retry-After); a request whose deadline passed before its batch ran is failed
with ``DeadlineExceeded`` (504) and not computed; an exception in a batch fails that batch's
requests only.

Example::

    queue = BatchQueue(run_batch, max_batch=8, max_queue=256, workers=2)
    await queue.start()
    outputs = await queue.submit(tensor, deadline=clock.now() + 30)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from imaas.domain import Clock, SystemClock
from imaas.errors import DeadlineExceeded, ImaasError, InferenceFailed, Overloaded

RunBatch = Callable[[np.ndarray], list[np.ndarray]]


@dataclass
class _Item:
    tensor: np.ndarray
    deadline: float | None
    future: asyncio.Future[list[np.ndarray]] = field(repr=False)


@dataclass
class QueueStats:
    """Counters for monitoring and tests."""

    batches: int = 0
    items: int = 0
    expired: int = 0
    rejected: int = 0
    failed_batches: int = 0
    batch_sizes: list[int] = field(default_factory=list)


class BatchQueue:
    """Batches same-shaped tensors for ``run_batch`` (called in ``executor`` threads)."""

    def __init__(
        self,
        run_batch: RunBatch,
        *,
        max_batch: int = 8,
        max_wait_s: float = 0.0,
        max_queue: int = 256,
        workers: int = 1,
        clock: Clock | None = None,
        executor: Executor | None = None,
    ) -> None:
        self._run_batch = run_batch
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.workers = workers
        self.clock: Clock = clock or SystemClock()
        self._executor = executor
        self._items: deque[_Item] = deque()
        self._wakeup: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._busy = 0
        self.stats = QueueStats()

    @property
    def depth(self) -> int:
        """Requests waiting for a worker."""
        return len(self._items)

    async def start(self) -> None:
        """Start the batch loops on the running event loop."""
        if self._tasks:
            return
        self._wakeup = asyncio.Event()
        self._tasks = [asyncio.create_task(self._loop(), name=f"batch-worker-{i}") for i in range(self.workers)]

    async def stop(self) -> None:
        """Stop the loops; requests still queued fail with ``ModelNotReady``-like errors."""
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks = []
        while self._items:
            item = self._items.popleft()
            if not item.future.done():
                item.future.set_exception(InferenceFailed("the model was unloaded while the request waited"))

    async def submit(self, tensor: np.ndarray, deadline: float | None = None) -> list[np.ndarray]:
        """Queue one input (no batch axis) and wait for its outputs (no batch axis)."""
        if not self._tasks or self._wakeup is None:
            raise InferenceFailed("the batch queue is not running")
        if len(self._items) >= self.max_queue:
            self.stats.rejected += 1
            raise Overloaded(
                f"{len(self._items)} requests already queued for this model; retry shortly",
                retry_after=1,
            )
        future: asyncio.Future[list[np.ndarray]] = asyncio.get_running_loop().create_future()
        self._items.append(_Item(tensor, deadline, future))
        self._wakeup.set()
        if deadline is None:
            return await future
        timeout = max(0.0, deadline - self.clock.now())
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            future.cancel()  # the worker skips cancelled items
            raise DeadlineExceeded(f"no result within {timeout:.3f} s") from None

    async def _loop(self) -> None:
        assert self._wakeup is not None
        while True:
            if not self._items:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if self.max_wait_s > 0 and self._busy > 0 and len(self._items) < self.max_batch:
                await self._linger()
            batch = self._take()
            if batch:
                await self._run(batch)

    async def _linger(self) -> None:
        """Wait up to max_wait for a fuller batch, but only while other workers are busy."""
        assert self._wakeup is not None
        end = self.clock.now() + self.max_wait_s
        while len(self._items) < self.max_batch and self._busy > 0:
            left = end - self.clock.now()
            if left <= 0:
                return
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), left)

    def _take(self) -> list[_Item]:
        batch: list[_Item] = []
        now = self.clock.now()
        shape = None
        while self._items and len(batch) < self.max_batch:
            item = self._items[0]
            if item.future.done():
                self._items.popleft()
                continue
            if item.deadline is not None and item.deadline <= now:
                self._items.popleft()
                self.stats.expired += 1
                item.future.set_exception(DeadlineExceeded("the deadline passed while the request was queued"))
                continue
            if shape is not None and item.tensor.shape != shape:
                break  # a differently sized input starts the next batch
            shape = item.tensor.shape
            batch.append(self._items.popleft())
        return batch

    async def _run(self, batch: list[_Item]) -> None:
        self._busy += 1
        try:
            stacked = batch[0].tensor[None] if len(batch) == 1 else np.stack([i.tensor for i in batch])
            loop = asyncio.get_running_loop()
            outputs = await loop.run_in_executor(self._executor, self._run_batch, stacked)
        except Exception as exc:
            self.stats.failed_batches += 1
            err = exc if isinstance(exc, ImaasError) else InferenceFailed(f"{type(exc).__name__}: {exc}"[:500])
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(err)
            return
        finally:
            self._busy -= 1
        self.stats.batches += 1
        self.stats.items += len(batch)
        if len(self.stats.batch_sizes) < 10_000:
            self.stats.batch_sizes.append(len(batch))
        for i, item in enumerate(batch):
            if not item.future.done():
                item.future.set_result([o[i] for o in outputs])
