"""Inference use case: resolve a model reference, decode images, batch, post-process.

Images are decoded and pre-processed on the batch queue's worker threads right before
their batch runs (Pillow and ONNX Runtime release the GIL), and the event loop only moves
bytes. Resolved references are cached until the model service reports a change, so a
predict does not touch the database.

Loads, and the versions that failed to load, are the ``ModelLoader``'s (services/loading.py).
Readiness means the server can serve: warm-up has finished and nothing is still loading;
versions that failed are listed, not waited for, also while they are being retried.

Example::

    result = await inference.predict(ModelRef.parse("mobilenet-v2"), [(jpeg, "cat.jpg")])
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from imaas.domain import PRODUCTION, Clock, ModelRef, ModelVersion, SystemClock
from imaas.errors import ImaasError, InvalidRequest, ModelNotReady, TooManyImages
from imaas.imaging.decode import DecodeLimits, PixelBudget
from imaas.imaging.pipeline import image_to_tensor
from imaas.registry.artifacts.local import LocalArtifactStore
from imaas.registry.store import RegistryStore
from imaas.runtime.engine import Engine, LoadedModel
from imaas.schemas.rest import LoadState
from imaas.services.loading import LoadFailure, ModelLoader

log = logging.getLogger(__name__)
T = TypeVar("T")


def too_many_images(limit: int) -> TooManyImages:
    """The one answer to a request over the image limit, in every body format and protocol."""
    return TooManyImages(f"the request has more than {limit} images; the limit is {limit} per request")


async def all_or_none(calls: Iterable[Awaitable[T]]) -> list[T]:
    """Await every call; when one fails, withdraw the others (a queued item whose future is
    cancelled is skipped by the batch workers) and raise its error."""
    tasks = [asyncio.ensure_future(c) for c in calls]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        raise


@dataclass(frozen=True)
class Readiness:
    """What ``/readyz`` reports: whether the server can serve, and each production version's state."""

    ready: bool
    loaded: list[str]
    missing: list[str]
    failed: dict[str, LoadFailure]


@dataclass(frozen=True)
class ImageInput:
    """One encoded image of a request."""

    data: bytes
    filename: str | None = None


class InferenceService:
    """Runs predictions on registered models, loading them on first use."""

    def __init__(
        self,
        registry: RegistryStore,
        artifacts: LocalArtifactStore,
        engine: Engine,
        limits: DecodeLimits,
        *,
        request_timeout_s: float = 30.0,
        max_images: int = 64,
        clock: Clock | None = None,
        retry_base_s: float = 1.0,
        retry_max_s: float = 300.0,
    ) -> None:
        self.registry = registry
        self.artifacts = artifacts
        self.engine = engine
        self.limits = limits
        self.request_timeout_s = request_timeout_s
        self.max_images = max_images
        self.clock: Clock = clock or SystemClock()
        self._resolved: dict[ModelRef, ModelVersion] = {}
        self.loader = ModelLoader(
            engine, artifacts, clock=self.clock, retry_base_s=retry_base_s, retry_max_s=retry_max_s
        )
        self._warm: set[tuple[str, int]] | None = None
        self._unloaded: set[tuple[str, int]] = set()

    def invalidate(self, name: str) -> None:
        """Forget cached resolutions of ``name`` (after a push or an alias move)."""
        for ref in [r for r in list(self._resolved) if r.name == name]:
            self._resolved.pop(ref, None)

    async def resolve(self, ref: ModelRef) -> ModelVersion:
        """The version ``ref`` designates (cached)."""
        version = self._resolved.get(ref)
        if version is None:
            version = await asyncio.to_thread(self.registry.resolve, ref)
            self._resolved[ref] = version
        return version

    async def model(self, version: ModelVersion, deadline: float | None = None, force: bool = False) -> LoadedModel:
        """The loaded model of ``version``, loading it now if needed (see ``ModelLoader.get``)."""
        loaded = self.engine.get(version.key)
        if loaded is not None:
            return loaded
        self._unloaded.discard(version.key)
        return await self.loader.get(version, deadline, force)

    def load_state(self, key: tuple[str, int]) -> tuple[LoadState, LoadFailure | None]:
        """``loaded``, ``loading``, ``failed`` (with the failure) or ``not_loaded`` on this server."""
        return self.loader.state(key)

    def deadline(self) -> float:
        """The deadline of a request that starts now."""
        return self.clock.now() + self.request_timeout_s

    def check_count(self, n: int) -> None:
        """Refuse requests with no image or more than the per-request limit."""
        if n < 1:
            raise InvalidRequest("no image in the request")
        if n > self.max_images:
            raise too_many_images(self.max_images)

    def preparer(
        self,
        version: ModelVersion,
        budget: PixelBudget,
        index: int | None = None,
        filename: str | None = None,
    ) -> Callable[[bytes], np.ndarray]:
        """The decode + pre-process function for one image of ``version``'s model.

        It runs on a batch worker thread and charges the pixels it decodes to ``budget``, the
        request's; ``index`` and ``filename`` (the image's place in a multi-image request)
        are added to its error details.
        """
        manifest = version.manifest
        limits = self.limits

        def prepare(data: bytes) -> np.ndarray:
            try:
                return image_to_tensor(data, manifest.input, manifest.preprocess, limits, budget)
            except ImaasError as exc:
                if index is not None:
                    exc.detail = f"image {index} ({filename or 'unnamed'}): {exc.detail}"
                raise

        return prepare

    async def run_images(
        self, version: ModelVersion, model: LoadedModel, images: list[ImageInput], deadline: float | None = None
    ) -> list[list[np.ndarray]]:
        """Each image through the model's batch queue (decoded on the worker); outputs in order.

        The request's images share one ``PixelBudget``; when one image fails, the others that
        have not run yet are withdrawn from the queue.
        """
        self.check_count(len(images))
        deadline = deadline if deadline is not None else self.deadline()
        budget = PixelBudget(self.limits.max_request_pixels)
        if len(images) == 1:
            return [await model.queue.submit(images[0].data, deadline, self.preparer(version, budget))]
        return await all_or_none(
            model.queue.submit(im.data, deadline, self.preparer(version, budget, i, im.filename))
            for i, im in enumerate(images)
        )

    async def run_tensors(
        self, model: LoadedModel, rows: list[np.ndarray], deadline: float | None = None
    ) -> list[list[np.ndarray]]:
        """Each pre-processed input row through the model's batch queue; outputs in order."""
        self.check_count(len(rows))
        deadline = deadline if deadline is not None else self.deadline()
        return await all_or_none(model.queue.submit(row, deadline) for row in rows)

    async def predict(self, ref: ModelRef, images: list[ImageInput], top_k: int | None = None) -> dict[str, Any]:
        """Predict every image with the model ``ref`` names; results keep the request's order."""
        if top_k is not None and not 1 <= top_k <= 1000:
            raise InvalidRequest("top_k must be between 1 and 1000")
        deadline = self.deadline()
        version = await self.resolve(ref)
        model = await self.model(version, deadline)
        manifest = version.manifest
        outputs = await self.run_images(version, model, images, deadline)
        results = [
            {"filename": im.filename, **model.postprocess(out, manifest, model.labels, top_k)}
            for im, out in zip(images, outputs, strict=True)
        ]
        return {"model": version.model, "version": version.version, "task": manifest.task, "results": results}

    async def warm(self, alias: str = PRODUCTION) -> None:
        """Load every version ``alias`` points at; the server is ready once this returns.

        A version that fails is remembered (``load_state``) and does not stop the others; a
        registry that cannot be read leaves the models to load on their first request.
        """
        try:
            versions = await asyncio.to_thread(self.registry.aliased_versions, alias)
        except Exception:
            log.exception("warm-up could not read the registry; models will load on their first request")
            self._warm = set()
            return
        for version in versions:
            with contextlib.suppress(ModelNotReady):  # remembered with its reason, and logged
                await self.model(version)
        self._warm = {v.key for v in versions}

    def assume_warm(self) -> None:
        """Skip warm-up: models load on their first request, and the server is ready at once."""
        self._warm = set()

    def readiness(self) -> Readiness:
        """Ready once warm-up finished and every production version is loaded or has failed.

        A failed version does not hold readiness back (the server serves every other model,
        and that one answers 503 with its reason); it is listed in ``failed``.
        """
        loaded = sorted(f"{v.model}@{v.version}" for v in self.engine.loaded)
        failures = self.loader.failures  # a failed version being retried still counts as failed
        failed = {f"{n}@{v}": f for (n, v), f in sorted(failures.items()) if self.engine.get((n, v)) is None}
        if self._warm is None:
            return Readiness(False, loaded, ["warm-up still running"], failed)
        wanted = sorted(self._warm - self._unloaded)
        missing = [f"{n}@{v}" for n, v in wanted if self.engine.get((n, v)) is None and (n, v) not in failures]
        return Readiness(not missing, loaded, missing, failed)

    async def unload(self, key: tuple[str, int]) -> bool:
        """Unload a version on an operator's request; readiness no longer waits for it."""
        self._unloaded.add(key)
        return await self.engine.unload(key)

    async def close(self) -> None:
        """Cancel loads in flight, then stop the engine and its threads."""
        await self.loader.close()
        await self.engine.close()
