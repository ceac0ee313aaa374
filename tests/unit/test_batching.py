"""BatchQueue with a fake clock: batching, backpressure, deadlines, failure isolation."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from imaas.errors import DeadlineExceeded, InferenceFailed, InvalidImage, ModelNotReady, Overloaded
from imaas.runtime.batching import BatchQueue


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def now(self) -> float:
        return self.t


class GatedModel:
    """Doubles its input; blocks each batch until released, and records batch sizes."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.sizes: list[int] = []
        self.fail_when: float | None = None
        self.entered = 0

    def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
        self.entered += 1
        self.gate.wait(5)
        self.sizes.append(len(batch))
        if self.fail_when is not None and np.any(batch == self.fail_when):
            raise RuntimeError("poisoned input")
        return [batch * 2]


async def _until(cond: object, limit_s: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + limit_s
    while not cond():  # type: ignore[operator]
        if loop.time() > end:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.001)


async def _held_queue(model: GatedModel, max_batch: int) -> tuple[BatchQueue, asyncio.Task[list[np.ndarray]]]:
    """A one-worker queue whose worker has taken a first item and is blocked on the model's gate."""
    model.gate.clear()
    q = BatchQueue(model, max_batch=max_batch, workers=1, clock=FakeClock())
    await q.start()
    first = asyncio.create_task(q.submit(np.zeros(1)))
    await _until(lambda: model.entered == 1)
    return q, first


async def test_results_map_back_to_their_requests() -> None:
    model = GatedModel()
    q = BatchQueue(model, max_batch=4, workers=1, clock=FakeClock())
    await q.start()
    outs = await asyncio.gather(*(q.submit(np.full((2,), i, dtype=np.float32)) for i in range(10)))
    await q.stop()
    for i, out in enumerate(outs):
        np.testing.assert_array_equal(out[0], np.full((2,), 2 * i))
    assert sum(model.sizes) == 10


async def test_waiting_requests_are_batched_up_to_max_batch() -> None:
    model = GatedModel()
    q, first = await _held_queue(model, max_batch=4)
    rest = [asyncio.create_task(q.submit(np.ones(1))) for _ in range(6)]
    await _until(lambda: q.depth == 6)
    model.gate.set()
    await asyncio.gather(first, *rest)
    await q.stop()
    assert model.sizes == [1, 4, 2]


async def test_idle_engine_does_not_wait_for_a_fuller_batch() -> None:
    model = GatedModel()
    q = BatchQueue(model, max_batch=8, max_wait_s=60.0, workers=2, clock=FakeClock())
    await q.start()
    await asyncio.wait_for(q.submit(np.zeros(1)), timeout=2)  # would hang 60 s if it lingered
    await q.stop()
    assert model.sizes == [1]


async def test_full_queue_refuses_with_overloaded() -> None:
    model = GatedModel()
    model.gate.clear()
    q = BatchQueue(model, max_batch=1, max_queue=2, workers=1, clock=FakeClock())
    await q.start()
    running = asyncio.create_task(q.submit(np.zeros(1)))
    await _until(lambda: model.entered == 1)
    queued = [asyncio.create_task(q.submit(np.zeros(1))) for _ in range(2)]
    await _until(lambda: q.depth == 2)
    with pytest.raises(Overloaded) as info:
        await q.submit(np.zeros(1))
    assert info.value.retry_after >= 1
    model.gate.set()
    await asyncio.gather(running, *queued)
    await q.stop()
    assert q.stats.rejected == 1


async def test_expired_requests_are_not_computed() -> None:
    clock = FakeClock()
    model = GatedModel()
    model.gate.clear()
    q = BatchQueue(model, max_batch=4, workers=1, clock=clock)
    await q.start()
    running = asyncio.create_task(q.submit(np.zeros(1)))
    await _until(lambda: model.entered == 1)
    late = asyncio.create_task(q.submit(np.ones(1), deadline=clock.t + 10))
    await _until(lambda: q.depth == 1)
    clock.t += 11  # the deadline passes while it waits in the queue
    model.gate.set()
    await running
    with pytest.raises(DeadlineExceeded):
        await late
    await q.stop()
    assert model.sizes == [1]
    assert q.stats.expired == 1


async def test_deadline_while_waiting_for_the_result() -> None:
    model = GatedModel()
    model.gate.clear()
    clock = FakeClock()
    q = BatchQueue(model, max_batch=1, workers=1, clock=clock)
    await q.start()
    with pytest.raises(DeadlineExceeded):
        await q.submit(np.zeros(1), deadline=clock.t + 0.05)
    model.gate.set()
    await q.stop()


async def test_a_failing_batch_fails_only_the_input_at_fault() -> None:
    model = GatedModel()
    model.gate.clear()
    model.fail_when = 7.0
    q = BatchQueue(model, max_batch=2, workers=1, clock=FakeClock())
    await q.start()
    first = asyncio.create_task(q.submit(np.zeros(1)))
    await _until(lambda: model.entered == 1)
    bad_batch = [asyncio.create_task(q.submit(np.full(1, v))) for v in (7.0, 1.0)]
    good_batch = [asyncio.create_task(q.submit(np.full(1, v))) for v in (2.0, 3.0)]
    await _until(lambda: q.depth == 4)
    model.gate.set()
    results = await asyncio.gather(first, *bad_batch, *good_batch, return_exceptions=True)
    await q.stop()
    assert not isinstance(results[0], Exception)
    assert isinstance(results[1], InferenceFailed)  # the poisoned input fails...
    assert "poisoned input" in str(results[1])
    assert float(results[2][0][0]) == 2.0  # type: ignore[index]  # ...its batch-mate, run alone, does not
    assert [float(r[0][0]) for r in results[3:]] == [4.0, 6.0]  # type: ignore[index]
    assert model.sizes == [1, 2, 1, 1, 2]  # the failed pair was retried one by one
    assert q.stats.failed_batches == 2  # the stacked run and the poisoned one alone
    assert q.max_batch == 2  # one input failing alone is not the stacking's fault


async def test_inputs_of_different_shapes_are_not_stacked() -> None:
    model = GatedModel()
    q, first = await _held_queue(model, max_batch=8)
    mixed = [asyncio.create_task(q.submit(np.zeros(n))) for n in (2, 2, 3)]
    await _until(lambda: q.depth == 3)
    model.gate.set()
    await asyncio.gather(first, *mixed)
    await q.stop()
    assert model.sizes == [1, 2, 1]


async def test_prepare_runs_on_the_worker_and_fails_only_its_item() -> None:
    model = GatedModel()
    q, first = await _held_queue(model, max_batch=4)

    def prepare(value: float) -> np.ndarray:
        if value < 0:
            raise InvalidImage("negative pixels")
        return np.full(1, value, dtype=np.float32)

    items = [asyncio.create_task(q.submit(v, prepare=prepare)) for v in (1.0, -1.0, 3.0)]
    await _until(lambda: q.depth == 3)
    model.gate.set()
    results = await asyncio.gather(first, *items, return_exceptions=True)
    await q.stop()
    assert isinstance(results[2], InvalidImage)
    assert [float(r[0][0]) for r in (results[1], results[3])] == [2.0, 6.0]  # type: ignore[index]
    assert model.sizes == [1, 2]  # the bad item did not break its batch
    assert q.stats.failed_batches == 0


async def test_a_lone_request_runs_solo_and_a_busy_queue_does_not() -> None:
    shared, solo = GatedModel(), GatedModel()
    q = BatchQueue(shared, max_batch=1, workers=2, clock=FakeClock())
    q.run_solo = solo
    await q.start()
    out = await q.submit(np.ones(2))  # idle server: the solo session takes it
    np.testing.assert_array_equal(out[0], [2, 2])
    assert (solo.sizes, shared.sizes) == ([1], [])
    solo.gate.clear()
    first = asyncio.create_task(q.submit(np.zeros(1)))
    await _until(lambda: solo.entered == 2)  # the lone request holds every core...
    second = asyncio.create_task(q.submit(np.zeros(1)))
    await _until(lambda: shared.entered == 1)  # ...so company goes to the single-threaded session
    solo.gate.set()
    await asyncio.gather(first, second)
    await q.stop()
    assert (solo.sizes, shared.sizes) == ([1, 1], [1])
    assert q.stats.solo_batches == 2
    assert q.stats.batches == 3


class Injected(BaseException):
    """Not an ``Exception``: it escapes the per-item and per-batch handlers, as a bug would."""


async def test_an_error_outside_the_model_fails_the_batch_and_the_worker_carries_on() -> None:
    model = GatedModel()
    q, first = await _held_queue(model, max_batch=4)

    def prepare(value: float) -> np.ndarray:
        if value < 0:
            raise Injected
        return np.full(1, value, dtype=np.float32)

    items = [asyncio.create_task(q.submit(v, prepare=prepare)) for v in (1.0, -1.0)]
    await _until(lambda: q.depth == 2)
    model.gate.set()
    results = await asyncio.gather(first, *items, return_exceptions=True)
    assert all(isinstance(r, InferenceFailed) for r in results[1:])  # its whole batch, resolved
    after = await asyncio.wait_for(q.submit(np.full(1, 5.0)), timeout=5)  # the only worker still serves
    await q.stop()
    assert float(after[0][0]) == 10.0
    assert (q.stats.worker_errors, q.stats.worker_restarts) == (1, 0)


async def test_a_worker_that_dies_is_replaced() -> None:
    model = GatedModel()
    q = BatchQueue(model, max_batch=1, workers=1, clock=FakeClock())
    serve_one = q._serve_one
    died = threading.Event()

    def die_once(cond: threading.Condition) -> bool:
        if not died.is_set():
            died.set()
            raise Injected
        return serve_one(cond)

    q._serve_one = die_once  # type: ignore[method-assign]
    await q.start()
    out = await asyncio.wait_for(q.submit(np.ones(1)), timeout=5)  # served by the replacement
    await q.stop()
    np.testing.assert_array_equal(out[0], [2.0])
    assert died.is_set()
    assert q.stats.worker_restarts == 1


async def test_a_failing_callback_does_not_strand_the_batch() -> None:
    model = GatedModel()
    q = BatchQueue(model, max_batch=1, workers=1, clock=FakeClock())

    def broken() -> None:
        raise RuntimeError("listener bug")

    q.on_lone = broken
    await q.start()
    out = await asyncio.wait_for(q.submit(np.ones(1)), timeout=5)
    await q.stop()
    np.testing.assert_array_equal(out[0], [2.0])


async def test_stop_with_drain_runs_what_is_queued_and_without_fails_it_retryably() -> None:
    for drain in (True, False):
        model = GatedModel()
        q, first = await _held_queue(model, max_batch=1)
        queued = [asyncio.create_task(q.submit(np.full(1, v))) for v in (1.0, 2.0)]
        await _until(lambda q=q: q.depth == 2)  # type: ignore[misc]
        stopping = asyncio.create_task(q.stop(drain=drain))
        await _until(lambda q=q: q._stopping)  # type: ignore[misc]
        with pytest.raises(ModelNotReady):  # nothing new is taken once stopping
            await q.submit(np.zeros(1))
        model.gate.set()
        await stopping
        results = await asyncio.gather(first, *queued, return_exceptions=True)
        if drain:
            assert [float(r[0][0]) for r in results] == [0.0, 2.0, 4.0]  # type: ignore[index]
        else:
            assert all(isinstance(r, ModelNotReady) for r in results[1:])
            assert results[1].retry_after == 1  # type: ignore[union-attr]


async def test_the_queue_is_bounded_in_bytes_too() -> None:
    model = GatedModel()
    model.gate.clear()
    q = BatchQueue(model, max_batch=1, max_queue=100, max_queue_bytes=1000, workers=1, clock=FakeClock())
    await q.start()
    running = asyncio.create_task(q.submit(np.zeros(1)))
    await _until(lambda: model.entered == 1)
    big = asyncio.create_task(q.submit(np.zeros(200)))  # 1600 bytes: alone in the queue, it is taken
    await _until(lambda: q.depth == 1)
    with pytest.raises(Overloaded, match="1600 bytes of requests already queued"):
        await q.submit(b"x" * 10)
    model.gate.set()
    await asyncio.gather(running, big)
    assert await q.submit(b"\0" * 8, prepare=lambda b: np.frombuffer(b, dtype=np.float64)) is not None
    await q.stop()
    assert q.stats.rejected == 1
