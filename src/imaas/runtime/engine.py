"""The engine: which model versions are loaded, each with its session and batch queue.

Loading happens in a worker thread, once per version however many requests ask at the
same time, so the event loop keeps serving while a model loads. The engine is handed a
file path and a manifest; it never sees the registry.

The first ``solo_models`` versions loaded also get a solo session (``solo_threads`` intra-op
threads) that their batch queue uses for a request that arrives at an idle server; the
number is capped because each one holds a second copy of the optimised weights.

Example::

    engine = Engine(EngineConfig())
    model = await engine.load(version, path)
    outputs = await model.queue.submit(tensor, deadline)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from imaas.domain import Clock, ModelVersion, SystemClock
from imaas.runtime.batching import BatchQueue
from imaas.runtime.labelsets import resolve_labels
from imaas.runtime.session import OnnxSession, SessionOptions
from imaas.runtime.tasks import Postprocess, postprocessor


@dataclass(frozen=True)
class EngineConfig:
    """Session and batching parameters applied to every loaded model."""

    session: SessionOptions = field(default_factory=SessionOptions)
    workers: int = 2
    max_batch: int = 8
    max_wait_s: float = 0.0
    max_queue: int = 256
    solo_threads: int = 1
    solo_models: int = 2


@dataclass
class LoadedModel:
    """A version ready to serve."""

    version: ModelVersion
    session: OnnxSession
    queue: BatchQueue
    labels: tuple[str, ...] | None
    postprocess: Postprocess
    load_seconds: float
    solo_session: OnnxSession | None = None


def batch_runner(session: OnnxSession, version: ModelVersion) -> Callable[[np.ndarray], list[np.ndarray]]:
    """The function a batch queue calls (in an executor thread) to run one stacked batch."""
    input_name = version.manifest.input.name
    assert input_name is not None
    outputs = [version.manifest.postprocess.output or session.output_names[0]]

    def run(batch: np.ndarray) -> list[np.ndarray]:
        return session.run({input_name: batch}, outputs)

    return run


class Engine:
    """Loaded model versions keyed by ``(name, version)``."""

    def __init__(self, config: EngineConfig, clock: Clock | None = None) -> None:
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self._models: dict[tuple[str, int], LoadedModel] = {}
        self._loading: dict[tuple[str, int], asyncio.Task[LoadedModel]] = {}
        self._solo: set[tuple[str, int]] = set()
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="load")

    def get(self, key: tuple[str, int]) -> LoadedModel | None:
        """The loaded model for ``key``, if it is loaded."""
        return self._models.get(key)

    @property
    def loaded(self) -> list[ModelVersion]:
        """Versions currently loaded."""
        return [m.version for m in self._models.values()]

    async def load(self, version: ModelVersion, path: Path) -> LoadedModel:
        """Load ``version`` from ``path`` unless it is loaded; concurrent callers share one load."""
        key = version.key
        if (model := self._models.get(key)) is not None:
            return model
        task = self._loading.get(key)
        if task is None:
            task = asyncio.create_task(self._load(version, path))
            self._loading[key] = task
            task.add_done_callback(lambda _t: self._loading.pop(key, None))
        return await asyncio.shield(task)

    async def _load(self, version: ModelVersion, path: Path) -> LoadedModel:
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        session = await loop.run_in_executor(self._executor, OnnxSession, path, self.config.session)
        solo = await self._solo_session(version, path)
        try:
            labels = await loop.run_in_executor(self._executor, resolve_labels, version.manifest.labels)
        except BaseException:
            self._solo.discard(version.key)
            raise
        queue = BatchQueue(
            batch_runner(session, version),
            max_batch=self.config.max_batch,
            max_wait_s=self.config.max_wait_s,
            max_queue=self.config.max_queue,
            workers=self.config.workers,
            clock=self.clock,
            name=f"{version.model}@{version.version}",
        )
        model = LoadedModel(
            version=version,
            session=session,
            queue=queue,
            labels=labels,
            postprocess=postprocessor(version.manifest.task),
            load_seconds=time.perf_counter() - start,
            solo_session=solo,
        )
        if solo is not None:
            queue.run_solo = batch_runner(solo, version)
        await model.queue.start()
        self._models[version.key] = model
        return model

    async def _solo_session(self, version: ModelVersion, path: Path) -> OnnxSession | None:
        """A many-threaded session for lone requests, while fewer than ``solo_models`` have one."""
        threads = self.config.solo_threads
        if threads <= max(1, self.config.session.intra_op_threads) or len(self._solo) >= self.config.solo_models:
            return None
        self._solo.add(version.key)  # reserve the slot before the executor hop
        options = replace(self.config.session, intra_op_threads=threads)
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, OnnxSession, path, options)
        except BaseException:
            self._solo.discard(version.key)
            raise

    async def unload(self, key: tuple[str, int]) -> bool:
        """Unload a version; requests already queued fail, new ones load it again on demand."""
        model = self._models.pop(key, None)
        if model is None:
            return False
        await model.queue.stop()
        self._solo.discard(key)
        return True

    async def close(self) -> None:
        """Unload everything and stop the worker threads."""
        for key in list(self._models):
            await self.unload(key)
        self._executor.shutdown(wait=False, cancel_futures=True)
