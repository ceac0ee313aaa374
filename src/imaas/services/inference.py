"""Inference use case: resolve a model reference, decode images, batch, post-process.

Images are decoded and pre-processed on the batch queue's worker threads right before
their batch runs (Pillow and ONNX Runtime release the GIL), and the event loop only moves
bytes. Resolved references (with an alias's canary and shadow) are cached per process
(``services/resolution.py``) until this process writes or the change feed reports another
process's write, so a predict does not touch the database. Which version answers is
drawn per request (``services/routing.py``); a shadow copy goes to ``services/shadow.py``.
Which versions stay loaded is ``services/residency.py``'s.

Loads, and the versions that failed to load, are the ``ModelLoader``'s (services/loading.py).
Readiness means the server can serve: warm-up has finished and nothing is still loading;
versions that failed are listed, not waited for, also while they are being retried.

Example::

    result = await inference.predict(ModelRef.parse("mobilenet-v2"), [(jpeg, "cat.jpg")])
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from imaas.domain import Clock, ModelRef, ModelVersion, Route, SystemClock
from imaas.errors import ImaasError, InvalidRequest, ModelNotFound, ModelNotReady, TooManyImages, VersionNotLoadable
from imaas.imaging.decode import DecodeLimits, PixelBudget, decode_image
from imaas.imaging.draw import MEDIA_TYPES, ImageFormat, encode
from imaas.imaging.pipeline import Geometry, prepare_image
from imaas.imaging.samples import warmup_image
from imaas.registry.artifacts.store import ArtifactStore
from imaas.registry.store import RegistryStore
from imaas.runtime.background import background_executor
from imaas.runtime.engine import Engine, LoadedModel, batch_runner
from imaas.runtime.tasks import Task, task
from imaas.schemas.rest import LoadState
from imaas.services.comparison import Comparisons
from imaas.services.loading import LoadFailure, ModelLoader
from imaas.services.residency import Residency
from imaas.services.resolution import RouteCache
from imaas.services.routing import Choice, choose
from imaas.services.shadow import ShadowCopy, ShadowRunner

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


@dataclass
class GeometrySlot:
    """Where a batch worker leaves one image's geometry for the post-processing."""

    geometry: Geometry | None = None

    def result(self) -> Geometry:
        """The geometry the worker left (every image that has outputs was prepared)."""
        assert self.geometry is not None
        return self.geometry


@dataclass(frozen=True)
class Answer:
    """A predict call's answer: the JSON body, and the image when the request asked for one."""

    body: dict[str, Any]
    image: bytes | None = None
    media_type: str | None = None

    def served_by(self) -> tuple[str, int, str]:
        """The model, version and task that answered (what usage is recorded under)."""
        return self.body["model"], self.body["version"], self.body["task"]


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
        artifacts: ArtifactStore,
        engine: Engine,
        limits: DecodeLimits,
        *,
        request_timeout_s: float = 30.0,
        max_images: int = 64,
        clock: Clock | None = None,
        retry_base_s: float = 1.0,
        retry_max_s: float = 300.0,
        shadow_queue: int = 64,
        shadow_queue_bytes: int = 64 * 1024 * 1024,
        shadow_nice: int = 10,
        idle_unload_s: float = 600.0,
        memory_budget_bytes: int | None = None,
        draw: Callable[[], float] = random.random,
    ) -> None:
        self.registry = registry
        self.artifacts = artifacts
        self.engine = engine
        self.limits = limits
        self.request_timeout_s = request_timeout_s
        self.max_images = max_images
        self.clock: Clock = clock or SystemClock()
        self.routes = RouteCache(registry.resolve_route)
        self.loader = ModelLoader(
            engine, artifacts, clock=self.clock, retry_base_s=retry_base_s, retry_max_s=retry_max_s
        )
        self.comparisons = Comparisons()
        self.shadows = ShadowRunner(
            self._run_shadow, self.comparisons, shadow_queue, self.clock, max_bytes=shadow_queue_bytes
        )
        self.residency = Residency(
            engine,
            registry.pinned_versions,
            idle_unload_s=idle_unload_s,
            memory_budget_bytes=memory_budget_bytes,
            clock=self.clock,
        )
        self._draw = draw
        self.shadow_nice = shadow_nice
        self._shadow_executor: ThreadPoolExecutor | None = None
        self._warm: set[tuple[str, int]] | None = None
        self._warmed: set[tuple[str, int]] = set()  # the warm-up versions that did load
        self._unloaded: set[tuple[str, int]] = set()

    def invalidate(self, name: str) -> None:
        """Forget cached routes of ``name`` (after a write; safe from any thread)."""
        self.routes.invalidate(name)

    async def route(self, ref: ModelRef) -> Route:
        """What ``ref`` designates: its version, and for an alias its canary and shadow (cached)."""
        return await self.routes.get(ref)

    async def resolve(self, ref: ModelRef) -> ModelVersion:
        """The version ``ref`` designates, canary aside (cached)."""
        return (await self.routes.get(ref)).primary

    async def choose(self, ref: ModelRef, routing_key: str | None = None) -> Choice:
        """The version that answers this request to ``ref`` (canary split, sticky on
        ``routing_key``) and the shadow that gets a copy, if one is drawn."""
        return choose(await self.routes.get(ref), routing_key, self._draw)

    async def model(self, version: ModelVersion, deadline: float | None = None, force: bool = False) -> LoadedModel:
        """The loaded model of ``version``, loading it now if needed (see ``ModelLoader.get``).

        Returned without yielding to the event loop after checking the engine still holds it
        (a version loaded for this request may have been unloaded by the policy meanwhile: it
        is loaded again), so a caller that enqueues before its next ``await`` is served.
        """
        while True:
            loaded = self.engine.get(version.key)
            if loaded is not None:
                loaded.last_used = self.clock.now()
                return loaded
            self._unloaded.discard(version.key)
            await self.loader.get(version, deadline, force)

    def load_state(self, key: tuple[str, int]) -> tuple[LoadState, LoadFailure | None]:
        """``ready``, ``draining``, ``loading``, ``failed`` (with the failure) or ``unloaded`` here."""
        if self.engine.draining(key) is not None and self.engine.get(key) is None:
            return "draining", None
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
        slot: GeometrySlot | None = None,
    ) -> Callable[[bytes], np.ndarray]:
        """The decode + pre-process function for one image of ``version``'s model.

        It runs on a batch worker thread and charges the pixels it decodes to ``budget``, the
        request's; ``index`` and ``filename`` (the image's place in a multi-image request)
        are added to its error details. The image's geometry is left in ``slot``, for the
        task's post-processing, which runs on the event loop once the outputs are back (the
        batch queue's delivery orders the two).
        """
        manifest = version.manifest
        limits = self.limits

        def prepare(data: bytes) -> np.ndarray:
            try:
                tensor, geometry = prepare_image(data, manifest.input, manifest.preprocess, limits, budget)
            except ImaasError as exc:
                if index is not None:
                    exc.detail = f"image {index} ({filename or 'unnamed'}): {exc.detail}"
                raise
            if slot is not None:
                slot.geometry = geometry
            return tensor

        return prepare

    async def run_images(
        self, version: ModelVersion, model: LoadedModel, images: list[ImageInput], deadline: float | None = None
    ) -> list[list[np.ndarray]]:
        """Each image through the model's batch queue (decoded on the worker); outputs in order."""
        return [outputs for outputs, _ in await self.run_prepared(version, model, images, deadline)]

    async def run_prepared(
        self, version: ModelVersion, model: LoadedModel, images: list[ImageInput], deadline: float | None = None
    ) -> list[tuple[list[np.ndarray], Geometry]]:
        """Each image through the model's batch queue (decoded on the worker): its outputs and
        its geometry, in order.

        Every image is queued before the first ``await``, so a model taken from the engine
        cannot be unloaded in between (an unload drains what its queue holds). The request's
        images share one ``PixelBudget``; when one image fails, the others that have not run
        yet are withdrawn from the queue.
        """
        self.check_count(len(images))
        deadline = deadline if deadline is not None else self.deadline()
        budget = PixelBudget(self.limits.max_request_pixels)
        slots = [GeometrySlot() for _ in images]
        if len(images) == 1:
            outputs = [
                await model.queue.submit(images[0].data, deadline, self.preparer(version, budget, slot=slots[0]))
            ]
        else:
            outputs = await all_or_none(
                _enqueue_all(
                    model,
                    [
                        (im.data, self.preparer(version, budget, i, im.filename, slots[i]))
                        for i, im in enumerate(images)
                    ],
                    deadline,
                )
            )
        return [(out, slot.result()) for out, slot in zip(outputs, slots, strict=True)]

    async def run_tensors(
        self, model: LoadedModel, rows: list[np.ndarray], deadline: float | None = None
    ) -> list[list[np.ndarray]]:
        """Each pre-processed input row through the model's batch queue; outputs in order."""
        self.check_count(len(rows))
        deadline = deadline if deadline is not None else self.deadline()
        return await all_or_none(_enqueue_all(model, [(row, None) for row in rows], deadline))

    async def predict(
        self,
        ref: ModelRef,
        images: list[ImageInput],
        params: Mapping[str, str] | None = None,
        routing_key: str | None = None,
        image_format: ImageFormat = "JPEG",
    ) -> Answer:
        """Predict every image with the model ``ref`` names; results keep the request's order.

        ``params`` are the request's task options (``top_k``, ``score``...), checked by the
        model's task before anything runs. ``version`` in the result is the version that
        answered (an alias's canary answers its share of requests); a shadow drawn for this
        request gets a copy after the answer is ready, off the request path. When the options
        ask for an image (detection's ``draw``), the answer carries it as ``image_format``.
        """
        start = self.clock.now()
        deadline = start + self.request_timeout_s
        choice = await self.choose(ref, routing_key)
        version = choice.version
        manifest = version.manifest
        served = task(manifest.task)
        options = served.options(params or {})
        rendering = served.renders(options)
        if rendering and len(images) != 1:
            raise InvalidRequest(f"an image answer is drawn for one image; this request has {len(images)}")
        model = await self.model(version, deadline)
        ran = await self.run_prepared(version, model, images, deadline)
        results = [
            {"filename": im.filename, **served.postprocess(out, geometry, model.labelled, options)}
            for im, (out, geometry) in zip(images, ran, strict=True)
        ]
        if choice.shadow is not None:
            self.shadows.offer(ShadowCopy(version, choice.shadow, images, results, self.clock.now() - start))
        body = {"model": version.model, "version": version.version, "task": manifest.task, "results": results}
        if not rendering:
            return Answer(body)
        image = await asyncio.to_thread(self._render, served, images[0].data, results[0], options, image_format)
        if served.image_in_json(options):
            encoded = base64.b64encode(image).decode()
            results[0]["image"] = {"media_type": MEDIA_TYPES[image_format], "data": encoded}
            return Answer(body)
        return Answer(body, image, MEDIA_TYPES[image_format])

    def _render(self, served: Task, data: bytes, result: dict[str, Any], options: Any, fmt: ImageFormat) -> bytes:
        """The answer's image: the photo decoded at full size (within the decode limits), drawn on or redacted."""
        photo = decode_image(data, self.limits)
        return encode(served.render(photo, result, options), fmt)

    async def _run_shadow(self, version: ModelVersion, images: list[ImageInput]) -> list[dict[str, Any]]:
        """A shadow copy's results: decoded and run on the low-priority shadow thread (not the
        version's batch queue), so the serving threads keep the CPU when they need it."""
        model = await self.model(version, self.deadline())
        budget = PixelBudget(self.limits.max_request_pixels)
        manifest = version.manifest
        run = batch_runner(model.session, version)
        limits = self.limits

        def infer() -> list[tuple[list[np.ndarray], Geometry]]:  # one at a time: a fixed-batch graph takes no more
            rows = []
            for im in images:
                tensor, geometry = prepare_image(im.data, manifest.input, manifest.preprocess, limits, budget)
                rows.append(([o[0] for o in run(tensor[np.newaxis])], geometry))
            return rows

        if self._shadow_executor is None:
            self._shadow_executor = background_executor(self.shadow_nice, "shadow")
        rows = await asyncio.get_running_loop().run_in_executor(self._shadow_executor, infer)
        return [model.task.postprocess(out, geometry, model.labelled, None) for out, geometry in rows]

    async def warm_version(self, version: ModelVersion) -> LoadedModel:
        """Load ``version`` (retrying a failed load at once) and run one real inference on it.

        This is what a promote, rollback, canary or shadow waits for before any traffic is
        sent to the version. Raises ``VersionNotLoadable`` (409) with the reason when the
        file is missing or corrupt, ONNX Runtime refuses it, or the inference fails; a load
        still running after the request deadline is ``ModelNotReady`` (503, retry).
        """
        name = f"{version.model}@{version.version}"
        try:
            model = await self.model(version, self.clock.now() + max(60.0, self.request_timeout_s), force=True)
        except ModelNotReady:
            failure = self.loader.failures.get(version.key)
            if failure is None:
                raise
            raise VersionNotLoadable(f"{name} could not be loaded: {failure.reason}") from None
        try:
            await self.run_images(version, model, [ImageInput(warmup_image(), "warm-up.jpg")], self.deadline())
        except ImaasError as exc:
            raise VersionNotLoadable(f"{name} loaded but failed its warm-up inference: {exc.detail}") from None
        return model

    async def apply_changes(self, names: set[str]) -> None:
        """Take up other processes' writes to ``names``: warm every version their aliases now
        route to that is not loaded here, then drop their cached routes, then sync the pins.
        A version that fails to warm is remembered and does not hold up the others."""
        for name in sorted(names):
            try:
                versions = await asyncio.to_thread(self._routed_versions, name)
            except ModelNotFound:
                versions = []
            except Exception:
                log.exception("reading the routes of %s after a change failed", name)
                versions = []
            for version in versions:
                if self.engine.get(version.key) is None:
                    with contextlib.suppress(ImaasError):  # remembered by the loader with its reason
                        await self.warm_version(version)
            self.routes.invalidate(name)
        with contextlib.suppress(Exception):
            await self.sync_pins()

    async def sync_pins(self) -> None:
        """Read the pinned versions: unload those that lost their pin (after their requests
        finish) and load those newly pinned (e.g. by ``keep_latest``) that are not loaded."""
        await self.residency.refresh()
        for name, number in sorted(self.residency.gained):
            if self.engine.get((name, number)) is not None:
                continue
            try:
                version = await asyncio.to_thread(self.registry.get_version, name, number)
                await self.model(version)
            except ImaasError:  # remembered by the loader with its reason
                continue

    def _routed_versions(self, name: str) -> list[ModelVersion]:
        record = self.registry.get_model(name)
        seen: dict[tuple[str, int], ModelVersion] = {}
        for alias in sorted(set(record.routes) | set(record.aliases)):
            for v in self.registry.resolve_route(ModelRef(name, alias=alias)).versions:
                seen.setdefault(v.key, v)
        return list(seen.values())

    async def warm(self) -> None:
        """Load every pinned version (aliases, canaries, shadows, ``keep_latest``); the server
        is ready once this returns.

        A version that fails is remembered (``load_state``) and does not stop the others; a
        registry that cannot be read leaves the models to load on their first request.
        """
        try:
            await self.residency.refresh()
            keys = sorted(self.residency.pinned)
            versions = await asyncio.to_thread(lambda: [self.registry.get_version(n, v) for n, v in keys])
        except Exception:
            log.exception("warm-up could not read the registry; models will load on their first request")
            self._warm = set()
            return
        for version in versions:
            with contextlib.suppress(ModelNotReady):  # remembered with its reason, and logged
                await self.model(version)
        self._warmed = {v.key for v in versions if self.engine.get(v.key) is not None}
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
        # a promote unpins the old version; one that loaded at warm-up and is being loaded again
        # (an operator unloaded it, a request brought it back) does not make the server unready
        wanted = sorted((self._warm - self._unloaded - self._warmed) & self.residency.pinned)
        missing = [f"{n}@{v}" for n, v in wanted if self.engine.get((n, v)) is None and (n, v) not in failures]
        return Readiness(not missing, loaded, missing, failed)

    async def unload(self, key: tuple[str, int]) -> bool:
        """Unload a version on an operator's request; readiness no longer waits for it."""
        self._unloaded.add(key)
        return await self.engine.unload(key)

    async def close(self) -> None:
        """Stop the shadow runner, cancel loads in flight, then stop the engine and its threads."""
        await self.shadows.close()
        if self._shadow_executor is not None:
            self._shadow_executor.shutdown(wait=False, cancel_futures=True)
        await self.loader.close()
        await self.engine.close()


def _enqueue_all(
    model: LoadedModel,
    items: list[tuple[Any, Callable[[bytes], np.ndarray] | None]],
    deadline: float,
) -> list[asyncio.Future[list[np.ndarray]]]:
    """Queue every item now (no ``await`` in between); when one is refused (queue full), the
    ones already queued are withdrawn before the error is raised."""
    futures: list[asyncio.Future[list[np.ndarray]]] = []
    try:
        for payload, prepare in items:
            futures.append(model.queue.enqueue(payload, deadline, prepare))
    except BaseException:
        for future in futures:
            future.cancel()
        raise
    return futures
