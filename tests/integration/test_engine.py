"""Engine with real ONNX Runtime sessions: solo sessions for lone requests, capped per server."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from imaas.domain import ModelVersion
from imaas.runtime.engine import Engine, EngineConfig, LoadedModel
from imaas.runtime.graph import check_model_file
from imaas.runtime.tasks import complete_manifest
from imaas.schemas.manifest import Manifest
from tests.factories import tiny_classifier


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def now(self) -> float:
        return self.t


def version(path: Path, name: str) -> ModelVersion:
    manifest = complete_manifest(Manifest(), check_model_file(path))
    return ModelVersion(name, 1, "0" * 64, path.stat().st_size, manifest, datetime.now(UTC))


async def until_solo(model: LoadedModel) -> None:
    for _ in range(500):
        if model.queue.run_solo is not None:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("no solo session was built")


async def test_lone_requests_earn_a_solo_session_which_idle_holders_give_up(tmp_path: Path) -> None:
    clock = FakeClock()
    engine = Engine(EngineConfig(solo_threads=2, solo_models=1, solo_idle_s=30.0), clock=clock)
    a_path, b_path = tiny_classifier(tmp_path / "a.onnx"), tiny_classifier(tmp_path / "b.onnx", seed=1)
    a = await engine.load(version(a_path, "a"), a_path)
    b = await engine.load(version(b_path, "b"), b_path)
    x = np.random.default_rng(0).random((3, 32, 32), dtype=np.float32)
    try:
        assert a.queue.run_solo is None  # none is built before a lone request asks
        shared = await a.queue.submit(x)
        await until_solo(a)
        solo = await a.queue.submit(x)
        np.testing.assert_allclose(solo[0], shared[0], rtol=1e-5)
        assert a.queue.stats.solo_batches == 1
        await b.queue.submit(x)  # the holder ran solo just now: it keeps the slot
        assert engine.solo_holders == {a.version.key}  # decided when b's lone request was delivered
        assert b.queue.run_solo is None
        assert a.queue.run_solo is not None
        clock.t += 31  # the holder has been idle: the next lone request takes its slot
        await b.queue.submit(x)
        await until_solo(b)
        assert a.queue.run_solo is None
        assert a.solo_session is None
        await engine.unload(b.version.key)  # unloading frees the slot for the next asker
        await a.queue.submit(x)
        await until_solo(a)
    finally:
        await engine.close()


async def test_no_solo_session_when_it_would_add_no_threads(tmp_path: Path) -> None:
    engine = Engine(EngineConfig(solo_threads=1, solo_models=4))
    path = tiny_classifier(tmp_path / "a.onnx")
    try:
        model = await engine.load(version(path, "a"), path)
        await model.queue.submit(np.zeros((3, 32, 32), dtype=np.float32))
        assert model.queue.stats.batches == 1  # a lone request was delivered...
        assert engine.solo_holders == set()  # ...and no solo session was asked for
        assert model.queue.run_solo is None
    finally:
        await engine.close()


async def test_a_model_that_fails_stacked_batches_is_served_one_at_a_time(tmp_path: Path) -> None:
    """A version registered before push probed batching (manifest batch unknown) still answers."""
    from tests.factories import batch_of_one_inside, tiny_weights

    path = batch_of_one_inside(tmp_path / "one.onnx")
    engine = Engine(EngineConfig(workers=1, max_batch=8, solo_threads=1))
    model = await engine.load(version(path, "one"), path)
    assert model.version.manifest.input.batch is None
    run = model.queue._run_batch
    started, release = asyncio.Event(), threading.Event()
    loop = asyncio.get_running_loop()

    def held(batch: np.ndarray) -> list[np.ndarray]:
        loop.call_soon_threadsafe(started.set)
        release.wait(10)
        return run(batch)

    model.queue._run_batch = held
    rng = np.random.default_rng(1)
    inputs = [rng.random((3, 32, 32), dtype=np.float32) for _ in range(6)]
    try:
        tasks = [asyncio.create_task(model.queue.submit(x)) for x in inputs]
        await started.wait()  # every submit ran before this wakes: what the worker did not take is queued
        release.set()
        outputs = await asyncio.gather(*tasks)
    finally:
        await engine.close()
    for x, out in zip(inputs, outputs, strict=True):
        np.testing.assert_allclose(out[0], x.mean(axis=(1, 2)) @ tiny_weights(), atol=1e-5)
    assert model.queue.max_batch == 1  # it stopped stacking after the stacked run failed
    assert model.queue.stats.failed_batches == 1
