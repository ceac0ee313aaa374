"""BatchQueue: dynamic batching with backpressure and deadlines for one model version.

Requests wait in a bounded queue served by ``workers`` dedicated threads. A worker takes
what is waiting (up to ``max_batch``), prepares each item (``prepare``: decode +
pre-process, for items that carry raw bytes), runs same-shaped tensors as one batch, hands
the results back to the event loop and takes the next batch straight away: the threads
never wait for the event loop between batches, so the cores stay busy on model work while
the loop parses HTTP. Idle workers are woken last-in first-out, so under light load one
thread serves request after request with warm caches (alternating two threads costs
1.5 ms per MobileNetV2 request on this machine's CPUs). A worker never waits for a fuller
batch while the engine is idle: only when every other worker is busy does it linger up to
``max_wait`` for company.

A lone request (nothing else queued, no other worker busy) runs on ``run_solo`` when one is
set: a session with as many intra-op threads as cores, so an idle server answers one image
with every core (MobileNetV2 on 2 cores: 10 -> 6.5 ms) while a loaded one keeps one
single-threaded batch per core, which gives the most images per second. A lone request that
had no solo session calls ``on_lone`` (on the event loop), so the engine can give it one.

A full queue refuses at once (``Overloaded``, HTTP 429 with Retry-After); a request whose
deadline passes before its batch runs is failed with ``DeadlineExceeded`` (504) and never
computed; an exception fails only the request (``prepare``) or the batch (model) it came
from. Anything else that goes wrong in a worker fails the batch in hand and the worker
carries on; a worker that dies all the same is replaced, so no request waits for a thread
that is gone. ``stop(drain=True)`` (an unload) lets the workers finish what is queued.

Example::

    queue = BatchQueue(run_batch, max_batch=8, max_queue=256, workers=2)
    await queue.start()
    outputs = await queue.submit(jpeg_bytes, deadline=clock.now() + 30, prepare=decode)
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from imaas.domain import Clock, SystemClock
from imaas.errors import DeadlineExceeded, ImaasError, InferenceFailed, ModelNotReady, Overloaded

log = logging.getLogger(__name__)

RunBatch = Callable[[np.ndarray], list[np.ndarray]]
Prepare = Callable[[Any], np.ndarray]
Result = list[np.ndarray] | BaseException


@dataclass
class _Item:
    payload: Any
    prepare: Prepare | None
    deadline: float | None
    future: asyncio.Future[list[np.ndarray]] = field(repr=False)
    size: int = 0  # bytes the payload holds while queued


def payload_bytes(payload: Any) -> int:
    """Bytes a queued payload holds (encoded image bytes or a tensor)."""
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return len(payload)
    return int(getattr(payload, "nbytes", 0))


@dataclass
class QueueStats:
    """Counters for monitoring and tests (updated on the event loop)."""

    batches: int = 0
    items: int = 0
    expired: int = 0
    rejected: int = 0
    failed_batches: int = 0
    solo_batches: int = 0
    worker_errors: int = 0  # batches failed by an error outside the model and the items' preparation
    worker_restarts: int = 0  # workers that died and were replaced
    batch_sizes: list[int] = field(default_factory=list)


class BatchQueue:
    """Batches inputs for ``run_batch`` on ``workers`` threads of its own."""

    def __init__(
        self,
        run_batch: RunBatch,
        *,
        max_batch: int = 8,
        max_wait_s: float = 0.0,
        max_queue: int = 256,
        max_queue_bytes: int = 256 * 1024 * 1024,
        workers: int = 1,
        clock: Clock | None = None,
        name: str = "batch",
    ) -> None:
        self._run_batch = run_batch
        self.run_solo: RunBatch | None = None
        self.on_lone: Callable[[], None] | None = None
        self.last_solo_at = float("-inf")  # clock time of the last solo batch
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.max_queue_bytes = max_queue_bytes
        self._queued_bytes = 0
        self.workers = workers
        self.name = name
        self.clock: Clock = clock or SystemClock()
        self._items: deque[_Item] = deque()
        self._lock = threading.Lock()
        self._idle: list[threading.Condition] = []  # waiting workers, most recent last
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self._draining = False
        self._busy = 0
        self._serial = 0
        self.stats = QueueStats()

    @property
    def depth(self) -> int:
        """Requests waiting for a worker."""
        return len(self._items)

    async def start(self) -> None:
        """Start the worker threads; results are delivered to the running event loop."""
        if self._threads:
            return
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        self._draining = False
        with self._lock:
            self._threads = [self._new_thread() for _ in range(self.workers)]
        for t in self._threads:
            t.start()

    def _new_thread(self) -> threading.Thread:
        self._serial += 1
        return threading.Thread(target=self._work, name=f"{self.name}-{self._serial}", daemon=True)

    async def stop(self, drain: bool = False) -> None:
        """Stop the workers after their current batch.

        With ``drain`` they first run everything already queued (each request still bounded
        by its deadline); without, requests still queued fail with ``ModelNotReady`` (503).
        """
        with self._lock:
            self._stopping = True
            self._draining = drain
            left = [] if drain else list(self._items)
            if not drain:
                self._items.clear()
                self._queued_bytes = 0
            for cond in self._idle:
                cond.notify()
            threads, self._threads = self._threads, []
        for t in threads:
            await asyncio.to_thread(t.join, 30)
        with self._lock:  # a drain cut short by the join timeout
            left += list(self._items)
            self._items.clear()
            self._queued_bytes = 0
        for item in left:
            if not item.future.done():
                item.future.set_exception(
                    ModelNotReady("the model was unloaded while the request waited; retry", retry_after=1)
                )

    def enqueue(
        self, payload: Any, deadline: float | None = None, prepare: Prepare | None = None
    ) -> asyncio.Future[list[np.ndarray]]:
        """Queue one input now (without yielding to the event loop) and return the future of
        its outputs; ``DeadlineExceeded`` is set on it at ``deadline``. Cancel it to withdraw
        the input (a worker skips it).

        A caller that got this queue from the engine and enqueues before its next ``await``
        cannot lose a race with an unload: the queue drains what it holds.
        """
        loop = self._loop
        if not self._threads or loop is None or self._stopping:
            raise ModelNotReady("the model is being unloaded; retry", retry_after=1)
        future: asyncio.Future[list[np.ndarray]] = loop.create_future()
        size = payload_bytes(payload)
        with self._lock:
            full = len(self._items) >= self.max_queue
            heavy = bool(self._items) and self._queued_bytes + size > self.max_queue_bytes
            if full or heavy:
                self.stats.rejected += 1
                held = f"{len(self._items)} requests" if full else f"{self._queued_bytes} bytes of requests"
                raise Overloaded(f"{held} already queued for this model; retry shortly", retry_after=1)
            self._items.append(_Item(payload, prepare, deadline, future, size))
            self._queued_bytes += size
            if self._idle:
                self._idle.pop().notify()
        if deadline is not None:
            timeout = max(0.0, deadline - self.clock.now())
            timer = loop.call_later(timeout, _expire, future, timeout)
            future.add_done_callback(lambda _f: timer.cancel())
        return future

    async def submit(
        self, payload: Any, deadline: float | None = None, prepare: Prepare | None = None
    ) -> list[np.ndarray]:
        """Queue one input and wait for its outputs (neither has a batch axis).

        ``payload`` is the input tensor, or what ``prepare`` turns into it on a worker thread.
        """
        return await self.enqueue(payload, deadline, prepare)

    # -- worker threads ---------------------------------------------------------------------
    def _work(self) -> None:
        cond = threading.Condition(self._lock)
        try:
            while self._serve_one(cond):
                pass
        except BaseException:  # _serve_one contains its errors; this is the last line of defence
            log.exception(
                "batch worker %s of %s died; starting a replacement", threading.current_thread().name, self.name
            )
            self._replace(threading.current_thread())

    def _replace(self, dead: threading.Thread) -> None:
        with self._lock:  # started under the lock, so stop() never sees a thread it cannot join
            if self._stopping or dead not in self._threads:
                return
            thread = self._new_thread()
            self._threads[self._threads.index(dead)] = thread
            self.stats.worker_restarts += 1
            thread.start()

    def _serve_one(self, cond: threading.Condition) -> bool:
        """Wait for work, run one batch and hand its results to the event loop.

        Returns False when the worker should exit (the queue stopped, or the event loop is
        gone). Whatever fails outside the model and the items' preparation fails the batch
        in hand, never the worker, so every request taken gets an answer.
        """
        batch: list[_Item] = []
        expired: list[_Item] = []
        results: list[Result] = []
        runs = failed = 0
        lone: bool | None = None
        try:
            with self._lock:
                while not self._items and not self._stopping:
                    self._wait(cond)
                if self._stopping and not (self._draining and self._items):
                    return False
                if self.max_wait_s > 0 and self._busy > 0 and len(self._items) < self.max_batch:
                    self._linger(cond)
                self._take(batch, expired)
                alone = len(batch) == 1 and not self._items and self._busy == 0
                run = self.run_solo if alone and self.run_solo is not None else self._run_batch
                self._busy += 1
            try:
                results, runs, failed = self._execute(batch, run) if batch else ([], 0, 0)
            finally:
                with self._lock:
                    self._busy -= 1
            lone = None if not alone else run is not self._run_batch  # None: not alone; False: alone, no solo
        except BaseException as exc:
            log.exception("batch worker of %s failed outside the model; failing its batch of %d", self.name, len(batch))
            error = InferenceFailed(f"the batch worker failed ({type(exc).__name__}); retry")
            results, runs, failed, lone = [error] * len(batch), 0, 0, None
            with self._lock:
                self.stats.worker_errors += 1
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(self._deliver, batch, results, expired, runs, failed, lone)
        except RuntimeError:  # the loop closed under us: nobody is waiting any more
            return False
        return True

    def _wait(self, cond: threading.Condition, timeout: float | None = None) -> None:
        """Sleep (lock held) on the idle stack until an item arrives, the queue stops or ``timeout``."""
        self._idle.append(cond)
        try:
            cond.wait(timeout)
        finally:
            if cond in self._idle:  # woken by the timeout, not by a submit
                self._idle.remove(cond)

    def _linger(self, cond: threading.Condition) -> None:
        """Wait (lock held) up to max_wait for a fuller batch while other workers are busy."""
        end = self.clock.now() + self.max_wait_s
        while len(self._items) < self.max_batch and self._busy > 0 and not self._stopping:
            left = end - self.clock.now()
            if left <= 0:
                return
            self._wait(cond, left)

    def _take(self, batch: list[_Item], expired: list[_Item]) -> None:
        """Move up to max_batch live items into ``batch`` (lock held), and the expired ones met
        on the way into ``expired`` (the caller's lists, so nothing taken is lost if this fails)."""
        now = self.clock.now()
        while self._items and len(batch) < self.max_batch:
            item = self._items.popleft()
            self._queued_bytes -= item.size
            if item.future.done():  # timed out or cancelled while queued
                continue
            if item.deadline is not None and item.deadline <= now:
                expired.append(item)
                continue
            batch.append(item)

    def _execute(self, batch: list[_Item], run: RunBatch) -> tuple[list[Result], int, int]:
        """Prepare each item and run same-shaped tensors together with ``run``.

        Returns each item's outputs or exception, the number of model runs and of failed runs.
        """
        results: list[Result] = [InferenceFailed("not run")] * len(batch)
        groups: dict[tuple[int, ...], list[tuple[int, np.ndarray]]] = {}
        for i, item in enumerate(batch):
            try:
                tensor = item.payload if item.prepare is None else item.prepare(item.payload)
            except Exception as exc:
                results[i] = exc
                continue
            groups.setdefault(tensor.shape, []).append((i, tensor))
        runs = failed = 0
        for members in groups.values():
            stacked = members[0][1][None] if len(members) == 1 else np.stack([t for _, t in members])
            runs += 1
            try:
                outputs = run(stacked)
            except Exception as exc:
                if len(members) > 1:  # find out whether the stacking or an item was at fault
                    alone_runs, alone_failed = self._run_alone(members, run, results)
                    runs += alone_runs
                    failed += 1 + alone_failed
                    continue
                failed += 1
                results[members[0][0]] = exc if isinstance(exc, ImaasError) else self._failure(exc)
                continue
            for j, (i, _) in enumerate(members):
                results[i] = [o[j] for o in outputs]
        return results, runs, failed

    def _run_alone(
        self, members: list[tuple[int, np.ndarray]], run: RunBatch, results: list[Result]
    ) -> tuple[int, int]:
        """After a stacked batch failed: run its members one at a time, each with its own result.

        When every one succeeds, the model cannot take stacked batches (a graph that declares
        a dynamic batch axis but fixes it inside): the queue stops stacking for good. Returns
        the runs made and how many failed.
        """
        failed = 0
        for i, tensor in members:
            try:
                results[i] = [o[0] for o in run(tensor[None])]
            except Exception as exc:
                failed += 1
                results[i] = exc if isinstance(exc, ImaasError) else self._failure(exc)
        if failed == 0:
            with self._lock:
                if self.max_batch > 1:
                    log.warning("%s fails on stacked batches but runs images alone: it gets no more stacks", self.name)
                    self.max_batch = 1
        return len(members), failed

    def _failure(self, exc: Exception) -> InferenceFailed:
        """The answer for a batch the model failed on: its reason, without ONNX Runtime's internals."""
        log.warning("%s failed on a batch: %s", self.name, exc)
        text = str(exc)
        if "Status Message:" in text:  # ONNX Runtime prefixes source paths and function signatures
            text = text.split("Status Message:", 1)[1]
        reason = text.strip().splitlines()[0] if text.strip() else ""
        if "/" in reason or "\\" in reason:
            reason = ""  # a path of the server or of ONNX Runtime's sources
        return InferenceFailed(
            f"the model failed on this batch ({type(exc).__name__}{': ' + reason[:200] if reason else ''})"
        )

    # -- back on the event loop --------------------------------------------------------------
    def _deliver(
        self,
        batch: list[_Item],
        results: list[Result],
        expired: list[_Item],
        runs: int,
        failed: int,
        lone: bool | None,
    ) -> None:
        for item in expired:
            if not item.future.done():
                item.future.set_exception(DeadlineExceeded("the deadline passed while the request was queued"))
        for item, result in zip(batch, results, strict=True):
            if item.future.done():
                continue
            if isinstance(result, BaseException):
                item.future.set_exception(result)
            else:
                item.future.set_result(result)
        # bookkeeping after every future is resolved: a failure here must not strand a request
        self.stats.expired += len(expired)
        if not batch:
            return
        self.stats.batches += runs
        self.stats.failed_batches += failed
        self.stats.items += len(batch)
        if len(self.stats.batch_sizes) < 10_000:
            self.stats.batch_sizes.append(len(batch))
        if lone:
            self.stats.solo_batches += runs
            self.last_solo_at = self.clock.now()
        elif lone is False and self.on_lone is not None:
            try:
                self.on_lone()
            except Exception:
                log.exception("on_lone of %s failed", self.name)


def _expire(future: asyncio.Future[list[np.ndarray]], timeout: float) -> None:
    if not future.done():
        future.set_exception(DeadlineExceeded(f"no result within {timeout:.3f} s"))
