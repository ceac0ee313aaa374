"""Builds the services of one process from its settings."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from imaas.errors import ImaasError
from imaas.imaging.decode import DecodeLimits
from imaas.registry.artifacts.factory import open_artifacts
from imaas.registry.artifacts.store import ArtifactStore
from imaas.registry.sql import open_registry
from imaas.registry.store import RegistryStore
from imaas.runtime.engine import Engine, EngineConfig
from imaas.runtime.session import SessionOptions
from imaas.services.changes import ChangeFeed
from imaas.services.inference import InferenceService
from imaas.services.lifecycle import LifecycleService
from imaas.services.models import ModelService
from imaas.services.oip import OipService
from imaas.settings import Settings

log = logging.getLogger(__name__)
STALE_UPLOAD_S = 3600.0


@dataclass
class Services:
    """Everything the edges need, wired together."""

    settings: Settings
    registry: RegistryStore
    artifacts: ArtifactStore
    models: ModelService
    inference: InferenceService
    lifecycle: LifecycleService
    oip: OipService
    changes: ChangeFeed
    close_registry: Callable[[], None]
    _keeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the background work of a serving process: the registry change feed and the
        periodic check of idle versions and the memory budget."""
        await self.changes.start()
        # uploads left half-staged by a killed process (an upload in flight is younger)
        await asyncio.to_thread(self.artifacts.sweep_staging, STALE_UPLOAD_S)
        if self._keeper is None:
            self._keeper = asyncio.get_running_loop().create_task(self._keep(), name="residency")

    async def _keep(self) -> None:
        interval = self.settings.models.check_interval_s
        while True:
            await asyncio.sleep(interval)
            try:
                await self.inference.residency.check()
                # files whose last version was deleted (a delete removes them at once when the
                # store answers; this retries the ones it could not)
                await asyncio.to_thread(self.registry.sweep_artifacts, self.artifacts.delete)
            except ImaasError as exc:  # the database or the store is away: next interval
                log.warning("periodic model housekeeping failed (will retry): %s", exc.detail)
            except Exception:  # never let the policy loop die
                log.exception("checking idle versions failed")

    async def close(self) -> None:
        """Stop background work, release engine threads and database connections."""
        await self.changes.stop()
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
            self._keeper = None
        await self.inference.close()
        self.close_registry()


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
    """Open the registry (migrating it unless ``registry.migrate_on_start`` is off) and the
    artifact store, and wire the services; starts no threads but pools (``start`` does)."""
    registry = open_registry(settings.db_url, migrate=settings.registry.migrate_on_start)
    artifacts = open_artifacts(
        settings.artifacts_url, settings.home, endpoint_url=settings.s3.endpoint_url, region=settings.s3.region
    )
    models = ModelService(registry, artifacts, settings.server.max_upload_bytes)
    policy = settings.models
    inference = InferenceService(
        registry,
        artifacts,
        Engine(engine_config(settings)),
        decode_limits(settings),
        request_timeout_s=settings.runtime.request_timeout_s,
        max_images=settings.server.max_images_per_request,
        shadow_queue=policy.shadow_queue,
        shadow_queue_bytes=policy.shadow_queue_mib * 1024 * 1024,
        shadow_nice=policy.shadow_nice,
        idle_unload_s=policy.idle_unload_s,
        memory_budget_bytes=policy.memory_budget_mib * 1024 * 1024 if policy.memory_budget_mib else None,
    )
    return Services(
        settings=settings,
        registry=registry,
        artifacts=artifacts,
        models=models,
        inference=inference,
        lifecycle=LifecycleService(registry, artifacts, inference, models),
        oip=OipService(inference, models),
        changes=ChangeFeed(
            registry.changes_since, inference.apply_changes, interval_s=settings.registry.poll_interval_s
        ),
        close_registry=registry.close,
    )
