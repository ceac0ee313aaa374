"""Inference use case: resolve a model reference, decode images, batch, post-process.

Images are decoded and pre-processed on the batch queue's worker threads right before
their batch runs (Pillow and ONNX Runtime release the GIL), and the event loop only moves
bytes. Resolved references are cached until
the model service reports a change, so a predict does not touch the database.

Example::

    result = await inference.predict(ModelRef.parse("mobilenet-v2"), [(jpeg, "cat.jpg")])
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from imaas.domain import PRODUCTION, Clock, ModelRef, ModelVersion, SystemClock
from imaas.errors import ImaasError, InvalidRequest, ModelNotReady
from imaas.imaging.decode import DecodeLimits
from imaas.imaging.pipeline import image_to_tensor
from imaas.registry.artifacts.local import LocalArtifactStore
from imaas.registry.store import RegistryStore
from imaas.runtime.engine import Engine, LoadedModel

log = logging.getLogger(__name__)


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
    ) -> None:
        self.registry = registry
        self.artifacts = artifacts
        self.engine = engine
        self.limits = limits
        self.request_timeout_s = request_timeout_s
        self.max_images = max_images
        self.clock: Clock = clock or SystemClock()
        self._resolved: dict[ModelRef, ModelVersion] = {}
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

    async def model(self, version: ModelVersion) -> LoadedModel:
        """The loaded model of ``version``, loading it now if needed."""
        loaded = self.engine.get(version.key)
        if loaded is not None:
            return loaded
        self._unloaded.discard(version.key)
        try:
            path = self.artifacts.open_path(version.sha256)
            return await self.engine.load(version, path)
        except ImaasError:
            raise
        except Exception as exc:
            log.exception("loading %s@%s failed", version.model, version.version)
            raise ModelNotReady(f"{version.model}@{version.version} could not be loaded: {exc}") from None

    def deadline(self) -> float:
        """The deadline of a request that starts now."""
        return self.clock.now() + self.request_timeout_s

    def check_count(self, n: int) -> None:
        """Refuse requests with no image or more than the per-request limit."""
        if n < 1:
            raise InvalidRequest("no image in the request")
        if n > self.max_images:
            raise InvalidRequest(f"{n} images in one request; the limit is {self.max_images}")

    def preparer(
        self, version: ModelVersion, index: int | None = None, filename: str | None = None
    ) -> Callable[[bytes], np.ndarray]:
        """The decode + pre-process function for one image of ``version``'s model.

        It runs on a batch worker thread; ``index`` and ``filename`` (the image's place in a
        multi-image request) are added to its error details.
        """
        manifest = version.manifest
        limits = self.limits

        def prepare(data: bytes) -> np.ndarray:
            try:
                return image_to_tensor(data, manifest.input, manifest.preprocess, limits)
            except ImaasError as exc:
                if index is not None:
                    exc.detail = f"image {index} ({filename or 'unnamed'}): {exc.detail}"
                raise

        return prepare

    async def run_images(
        self, version: ModelVersion, model: LoadedModel, images: list[ImageInput]
    ) -> list[list[np.ndarray]]:
        """Each image through the model's batch queue (decoded on the worker); outputs in order."""
        self.check_count(len(images))
        deadline = self.deadline()
        many = len(images) > 1
        calls = [
            model.queue.submit(im.data, deadline, self.preparer(version, i if many else None, im.filename))
            for i, im in enumerate(images)
        ]
        if not many:
            return [await calls[0]]
        return list(await asyncio.gather(*calls))

    async def predict(self, ref: ModelRef, images: list[ImageInput], top_k: int | None = None) -> dict[str, Any]:
        """Predict every image with the model ``ref`` names; results keep the request's order."""
        if top_k is not None and not 1 <= top_k <= 1000:
            raise InvalidRequest("top_k must be between 1 and 1000")
        version = await self.resolve(ref)
        model = await self.model(version)
        manifest = version.manifest
        outputs = await self.run_images(version, model, images)
        results = [
            {"filename": im.filename, **model.postprocess(out, manifest, model.labels, top_k)}
            for im, out in zip(images, outputs, strict=True)
        ]
        return {"model": version.model, "version": version.version, "task": manifest.task, "results": results}

    async def warm(self, alias: str = PRODUCTION) -> None:
        """Load every version ``alias`` points at; the server is ready once this returns."""
        versions = await asyncio.to_thread(self.registry.aliased_versions, alias)
        for version in versions:
            try:
                await self.model(version)
            except ImaasError as exc:
                log.error("could not load %s@%s: %s", version.model, version.version, exc.detail)
        self._warm = {v.key for v in versions}

    def assume_warm(self) -> None:
        """Skip warm-up: models load on their first request, and the server is ready at once."""
        self._warm = set()

    def ready(self) -> tuple[bool, list[str]]:
        """Whether warm-up finished and every production version is loaded; and what is missing."""
        if self._warm is None:
            return False, ["warm-up still running"]
        wanted = self._warm - self._unloaded
        missing = [f"{n}@{v}" for n, v in sorted(wanted) if self.engine.get((n, v)) is None]
        return not missing, missing

    async def unload(self, key: tuple[str, int]) -> bool:
        """Unload a version on an operator's request; readiness no longer waits for it."""
        self._unloaded.add(key)
        return await self.engine.unload(key)

    async def close(self) -> None:
        """Stop the engine and the decode threads."""
        await self.engine.close()
