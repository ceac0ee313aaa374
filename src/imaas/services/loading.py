"""Loading model versions into the engine: one load at a time per version, failures remembered.

A load runs as a task of its own, so its outcome is recorded whoever is still waiting for
it: a request whose deadline passed gives up waiting (503 "still loading"), and the load
goes on and records success or failure. A failure is remembered with its reason: requests
get 503 at once with the reason and a Retry-After instead of each starting a load, and the
load is tried again after a backoff that doubles per failure (1 s up to 5 min), at once
for another version, or when an operator asks for it (``force``).

Example::

    loader = ModelLoader(engine, artifacts)
    model = await loader.get(version, deadline=clock.now() + 30)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from imaas.domain import Clock, ModelVersion, SystemClock
from imaas.errors import ImaasError, ModelNotReady
from imaas.registry.artifacts.store import ArtifactStore
from imaas.runtime.engine import Engine, LoadedModel
from imaas.schemas.rest import LoadState

log = logging.getLogger(__name__)
Key = tuple[str, int]


@dataclass(frozen=True)
class LoadFailure:
    """Why a version could not be loaded, and when the next attempt may be made."""

    reason: str
    attempts: int
    failed_at: float
    retry_at: float


class ModelLoader:
    """Loads versions on demand and remembers the ones that failed."""

    def __init__(
        self,
        engine: Engine,
        artifacts: ArtifactStore,
        *,
        clock: Clock | None = None,
        retry_base_s: float = 1.0,
        retry_max_s: float = 300.0,
    ) -> None:
        self.engine = engine
        self.artifacts = artifacts
        self.clock: Clock = clock or SystemClock()
        self.retry_base_s = retry_base_s
        self.retry_max_s = retry_max_s
        self._tasks: dict[Key, asyncio.Task[LoadedModel | None]] = {}
        self._failures: dict[Key, LoadFailure] = {}

    @property
    def failures(self) -> dict[Key, LoadFailure]:
        """The versions whose last load failed (and have not loaded since)."""
        return dict(self._failures)

    async def get(self, version: ModelVersion, deadline: float | None = None, force: bool = False) -> LoadedModel:
        """The loaded model of ``version``, loading it if needed.

        Raises ``ModelNotReady`` (503, with ``retry_after``) when the version failed and its
        backoff has not passed (unless ``force``), when this load fails, or when it is still
        running at ``deadline``.
        """
        key = version.key
        loaded = self.engine.get(key)
        if loaded is not None:
            return loaded
        now = self.clock.now()
        task = self._tasks.get(key)
        if task is None:
            failure = self._failures.get(key)
            if failure is not None and now < failure.retry_at and not force:
                raise self.not_ready(version, failure)
            task = asyncio.get_running_loop().create_task(self._load(version), name=f"load {version.model}")
            self._tasks[key] = task
        try:
            if deadline is None:
                model = await asyncio.shield(task)
            else:
                model = await asyncio.wait_for(asyncio.shield(task), max(0.0, deadline - now))
        except TimeoutError:
            raise ModelNotReady(
                f"{version.model}@{version.version} is still loading; retry shortly", retry_after=1
            ) from None
        if model is None:
            raise self.not_ready(version, self._failures[key])
        return model

    async def _load(self, version: ModelVersion) -> LoadedModel | None:
        """Load and record the outcome; None when it failed (the failure is in ``failures``)."""
        key = version.key
        try:
            # a download (S3) and the sha256 check read the whole file: off the event loop
            path = await asyncio.to_thread(self.artifacts.open_path, version.sha256)
            model = await self.engine.load(version, path)
        except Exception as exc:
            self._record_failure(version, exc)
            return None
        finally:
            self._tasks.pop(key, None)
        self._failures.pop(key, None)
        return model

    def _record_failure(self, version: ModelVersion, exc: Exception) -> None:
        previous = self._failures.get(version.key)
        reason = exc.detail if isinstance(exc, ImaasError) else f"{type(exc).__name__}: {exc}"
        attempts = previous.attempts + 1 if previous is not None else 1
        now = self.clock.now()
        backoff = min(self.retry_max_s, self.retry_base_s * 2 ** (attempts - 1))
        self._failures[version.key] = LoadFailure(reason[:500], attempts, failed_at=now, retry_at=now + backoff)
        if isinstance(exc, ImaasError):
            log.error("loading %s@%s failed (attempt %d): %s", version.model, version.version, attempts, reason)
        else:
            log.error("loading %s@%s failed (attempt %d)", version.model, version.version, attempts, exc_info=exc)

    def not_ready(self, version: ModelVersion, failure: LoadFailure) -> ModelNotReady:
        """The 503 a request for a failed version gets."""
        wait = max(0.0, failure.retry_at - self.clock.now())
        return ModelNotReady(
            f"{version.model}@{version.version} could not be loaded: {failure.reason} "
            f"(attempt {failure.attempts}; next attempt in {wait:.0f} s)",
            retry_after=max(1.0, wait),
        )

    def state(self, key: Key) -> tuple[LoadState, LoadFailure | None]:
        """``ready``, ``loading`` (a retry keeps its last failure), ``failed`` or ``unloaded``."""
        if self.engine.get(key) is not None:
            return "ready", None
        failure = self._failures.get(key)
        if key in self._tasks:  # every load goes through here
            return "loading", failure
        return ("failed", failure) if failure is not None else ("unloaded", None)

    async def close(self) -> None:
        """Cancel loads still running (the engine is closed after this)."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
