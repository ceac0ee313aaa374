"""Builds the services of one process from its settings."""

from __future__ import annotations

from dataclasses import dataclass

from imaas.imaging.decode import DecodeLimits
from imaas.registry.artifacts.local import LocalArtifactStore
from imaas.registry.sql import SqlRegistry, open_registry
from imaas.runtime.engine import Engine, EngineConfig
from imaas.runtime.session import SessionOptions
from imaas.services.inference import InferenceService
from imaas.services.models import ModelService
from imaas.services.oip import OipService
from imaas.settings import Settings


@dataclass
class Services:
    """Everything the edges need, wired together."""

    settings: Settings
    registry: SqlRegistry
    artifacts: LocalArtifactStore
    models: ModelService
    inference: InferenceService
    oip: OipService

    async def close(self) -> None:
        """Release engine threads and database connections."""
        await self.inference.close()
        self.registry.close()


def engine_config(settings: Settings) -> EngineConfig:
    """The engine configuration that ``settings.runtime`` describes."""
    rt = settings.runtime
    return EngineConfig(
        session=SessionOptions(
            intra_op_threads=rt.intra_op_threads,
            inter_op_threads=rt.inter_op_threads,
            allow_spinning=rt.allow_spinning,
            providers=tuple(rt.providers),
        ),
        workers=rt.workers,
        max_batch=rt.max_batch,
        max_wait_s=rt.max_wait_ms / 1000.0,
        max_queue=rt.max_queue,
        max_queue_bytes=rt.max_queue_mib * 1024 * 1024,
        solo_threads=rt.solo_threads,
        solo_models=rt.solo_models,
    )


def decode_limits(settings: Settings) -> DecodeLimits:
    """Image limits from settings."""
    im = settings.images
    return DecodeLimits(
        max_pixels=im.max_pixels,
        max_side=im.max_side,
        min_side=im.min_side,
        max_request_pixels=im.max_request_pixels,
        max_downscale=im.max_downscale,
    )


def build_services(settings: Settings) -> Services:
    """Open the registry (migrating it) and wire the services; starts no threads but pools."""
    registry = open_registry(settings.db_url)
    artifacts = LocalArtifactStore(settings.artifacts_dir)
    models = ModelService(registry, artifacts, settings.server.max_upload_bytes)
    inference = InferenceService(
        registry,
        artifacts,
        Engine(engine_config(settings)),
        decode_limits(settings),
        request_timeout_s=settings.runtime.request_timeout_s,
        max_images=settings.server.max_images_per_request,
    )
    models.on_change(inference.invalidate)
    return Services(
        settings=settings,
        registry=registry,
        artifacts=artifacts,
        models=models,
        inference=inference,
        oip=OipService(inference, models),
    )
