"""The engine: which model versions are loaded, each with its session and batch queue.

Loading happens in a worker thread, once per version however many requests ask at the
same time, so the event loop keeps serving while a model loads. The engine is handed a
file path and a manifest; it never sees the registry.

Solo sessions (``solo_threads`` intra-op threads) serve requests that arrive at an idle
server with every core. At most ``solo_models`` versions hold one, since each is a second
copy of the optimised weights: a version whose lone request found none gets one, built in
the background, when a slot is free or its holder has not run solo for ``solo_idle_s``.

Example::

    engine = Engine(EngineConfig())
    model = await engine.load(version, path)
    outputs = await model.queue.submit(tensor, deadline)
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from imaas.domain import Clock, ModelVersion, SystemClock
from imaas.runtime.batching import BatchQueue
from imaas.runtime.labelsets import resolve_labels
from imaas.runtime.memory import release_freed_memory, resident_bytes
from imaas.runtime.session import OnnxSession, SessionOptions
from imaas.runtime.tasks import Labelled, Task, task

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineConfig:
    """Session and batching parameters applied to every loaded model."""

    session: SessionOptions = field(default_factory=SessionOptions)
    workers: int = 2
    max_batch: int = 8
    max_wait_s: float = 0.0
    max_queue: int = 256
    max_queue_bytes: int = 256 * 1024 * 1024
    solo_threads: int = 1
    solo_models: int = 1
    solo_idle_s: float = 30.0

    def solo_session(self) -> SessionOptions | None:
        """Options of a solo session, or None when solo sessions are off (none allowed, or no
        more threads than the shared session already has)."""
        if self.solo_models < 1 or self.solo_threads <= max(1, self.session.intra_op_threads):
            return None
        return replace(self.session, intra_op_threads=self.solo_threads)


@dataclass
class LoadedModel:
    """A version ready to serve."""

    version: ModelVersion
    path: Path
    session: OnnxSession
    queue: BatchQueue
    labels: tuple[str, ...] | None
    task: Task
    labelled: Labelled  # what the task's post-processing reads: the manifest and the labels
    load_seconds: float
    solo_session: OnnxSession | None = None
    memory_bytes: int = 0  # resident memory its sessions took (at least their file's size)
    loaded_at: float = 0.0  # clock time
    last_used: float = 0.0  # clock time of the last request routed to it (set by the services)


def fixed_batch(session: OnnxSession, version: ModelVersion) -> int | None:
    """The batch size ``version`` must run at: the graph's declared one, else what push found by
    running it (``input.batch``, e.g. 1 for a graph that reshapes to ``[1, -1]``); None when free."""
    return session.fixed_batch(version.manifest.input.name or "") or version.manifest.input.batch


def batch_runner(session: OnnxSession, version: ModelVersion) -> Callable[[np.ndarray], list[np.ndarray]]:
    """The function a batch queue calls (on a worker thread) to run one stacked batch.

    A graph with a fixed batch size gets exactly that many rows: a smaller batch is padded
    with zeros and the padding's outputs are dropped (the queue never stacks more).
    """
    input_name = version.manifest.input.name
    assert input_name is not None
    outputs = task(version.manifest.task).fetch(version.manifest) or session.output_names[:1]
    fixed = fixed_batch(session, version)

    def run(batch: np.ndarray) -> list[np.ndarray]:
        return session.run({input_name: batch}, outputs)

    def run_padded(batch: np.ndarray) -> list[np.ndarray]:
        assert fixed is not None
        n = len(batch)
        if n == fixed:
            return session.run({input_name: batch}, outputs)
        padded = np.zeros((fixed, *batch.shape[1:]), dtype=batch.dtype)
        padded[:n] = batch
        return [o[:n] for o in session.run({input_name: padded}, outputs)]

    return run if fixed is None else run_padded


class Engine:
    """Loaded model versions keyed by ``(name, version)``."""

    def __init__(self, config: EngineConfig, clock: Clock | None = None) -> None:
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self._models: dict[tuple[str, int], LoadedModel] = {}
        self._loading: dict[tuple[str, int], asyncio.Task[LoadedModel]] = {}
        self._solo: dict[tuple[str, int], LoadedModel] = {}
        self._draining: dict[tuple[str, int], LoadedModel] = {}
        self._measure = threading.Lock()  # one session build at a time, so its memory is its own
        self._solo_task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="load")

    def get(self, key: tuple[str, int]) -> LoadedModel | None:
        """The loaded model for ``key``, if it is loaded."""
        return self._models.get(key)

    @property
    def solo_holders(self) -> set[tuple[str, int]]:
        """Versions that hold a solo session or are having one built (decided on the event loop
        when a lone request is delivered, so it is current as soon as that request returns)."""
        return set(self._solo)

    @property
    def loaded(self) -> list[ModelVersion]:
        """Versions currently loaded."""
        return [m.version for m in self._models.values()]

    @property
    def models(self) -> list[LoadedModel]:
        """The loaded models."""
        return list(self._models.values())

    def draining(self, key: tuple[str, int]) -> LoadedModel | None:
        """The model of ``key`` while it is being unloaded (finishing the requests it holds)."""
        return self._draining.get(key)

    def _build_session(self, path: Path, options: SessionOptions) -> tuple[OnnxSession, int]:
        """A session and its memory: what the process grew by while building it, and at least
        the size of its file (a small model may fit in memory the process had already)."""
        with self._measure:
            before = resident_bytes()
            session = OnnxSession(path, options)
            return session, max(resident_bytes() - before, path.stat().st_size)

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
        session, memory = await loop.run_in_executor(self._executor, self._build_session, path, self.config.session)
        labels = await loop.run_in_executor(self._executor, resolve_labels, version.manifest.labels)
        fixed = fixed_batch(session, version)
        queue = BatchQueue(
            batch_runner(session, version),
            max_batch=min(self.config.max_batch, fixed or self.config.max_batch),
            max_wait_s=self.config.max_wait_s,
            max_queue=self.config.max_queue,
            max_queue_bytes=self.config.max_queue_bytes,
            workers=self.config.workers,
            clock=self.clock,
            name=f"{version.model}@{version.version}",
        )
        model = LoadedModel(
            version=version,
            path=path,
            session=session,
            queue=queue,
            labels=labels,
            task=task(version.manifest.task),
            labelled=Labelled(version.manifest, labels),
            load_seconds=time.perf_counter() - start,
            memory_bytes=memory,
            loaded_at=self.clock.now(),
            last_used=self.clock.now(),
        )
        queue.on_lone = lambda: self._offer_solo(model)
        await model.queue.start()
        self._models[version.key] = model
        return model

    def _offer_solo(self, model: LoadedModel) -> None:
        """On the event loop: ``model`` served a lone request without a solo session."""
        cfg = self.config
        if cfg.solo_session() is None:
            return
        if self._solo_task is not None or model.version.key in self._solo or self.get(model.version.key) is not model:
            return
        if len(self._solo) >= cfg.solo_models:
            holder = min(self._solo.values(), key=lambda m: m.queue.last_solo_at)
            if self.clock.now() - holder.queue.last_solo_at < cfg.solo_idle_s:
                return  # the holders are in use: no churn
            self._drop_solo(holder)
        self._solo[model.version.key] = model  # the slot is taken while the session builds
        self._solo_task = asyncio.get_running_loop().create_task(self._give_solo(model))

    async def _give_solo(self, model: LoadedModel) -> None:
        options = self.config.solo_session()
        assert options is not None  # _offer_solo checked
        loop = asyncio.get_running_loop()
        try:
            session, memory = await loop.run_in_executor(self._executor, self._build_session, model.path, options)
        except Exception as exc:  # the shared session still serves; keep the slot so it is not retried
            log.warning("no solo session for %s@%s: %s", model.version.model, model.version.version, exc)
            return
        finally:
            self._solo_task = None
        if self._solo.get(model.version.key) is model:
            model.solo_session = session
            model.memory_bytes += memory
            model.queue.last_solo_at = self.clock.now()
            model.queue.run_solo = batch_runner(session, model.version)

    def _drop_solo(self, model: LoadedModel) -> None:
        self._solo.pop(model.version.key, None)
        model.queue.run_solo = None  # a batch running on it keeps its own reference
        model.solo_session = None

    async def unload(self, key: tuple[str, int]) -> bool:
        """Unload a version: requests already queued still run (each within its deadline),
        new ones load it again on demand; then its memory is handed back to the system."""
        model = self._models.pop(key, None)
        if model is None:
            return False
        self._draining[key] = model
        try:
            await model.queue.stop(drain=True)
            self._drop_solo(model)
        finally:
            self._draining.pop(key, None)
        del model
        await asyncio.get_running_loop().run_in_executor(self._executor, release_freed_memory)
        return True

    async def close(self) -> None:
        """Unload everything and stop the worker threads."""
        if self._solo_task is not None:
            self._solo_task.cancel()
        for key in list(self._models):
            await self.unload(key)
        self._executor.shutdown(wait=False, cancel_futures=True)
