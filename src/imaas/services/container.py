"""Builds the services of one process from its settings."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from imaas.errors import ImaasError, KeyNotFound, ModelNotFound
from imaas.imaging.decode import DecodeLimits
from imaas.index.store import open_store
from imaas.registry.artifacts.factory import open_artifacts
from imaas.registry.artifacts.store import ArtifactStore
from imaas.registry.audit import SqlAudit
from imaas.registry.collections import SqlCollections
from imaas.registry.datasets import SqlDatasets
from imaas.registry.jobs import SqlJobs
from imaas.registry.keys import SqlKeys
from imaas.registry.sql import SqlRegistry, open_registry
from imaas.registry.store import RegistryStore
from imaas.registry.usage import SqlUsage
from imaas.runtime.engine import Engine, EngineConfig
from imaas.runtime.session import SessionOptions
from imaas.security.quotas import open_counters
from imaas.services.audit import AuditService
from imaas.services.auth import Authenticator
from imaas.services.changes import ChangeFeed
from imaas.services.collections import CollectionService
from imaas.services.datasets import DatasetService
from imaas.services.inference import InferenceService
from imaas.services.keys import KeyService
from imaas.services.lifecycle import LifecycleService
from imaas.services.models import ModelService
from imaas.services.oip import OipService
from imaas.services.training import TrainingService
from imaas.services.usage import UsageService
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
    auth: Authenticator
    keys: KeyService
    usage: UsageService
    audit: AuditService
    datasets: DatasetService
    training: TrainingService
    collections: CollectionService
    close_registry: Callable[[], None]
    _keeper: asyncio.Task[None] | None = None
    _bookkeeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the background work of a serving process: the registry change feed, the
        periodic check of idle versions and the memory budget, and the key refresh and usage
        flush (with the usage a previous shutdown could not write)."""
        await self.changes.start()
        # uploads left half-staged by a killed process (an upload in flight is younger)
        await asyncio.to_thread(self.artifacts.sweep_staging, STALE_UPLOAD_S)
        await asyncio.to_thread(self.datasets.sweep_uploads, STALE_UPLOAD_S)
        await asyncio.to_thread(self.auth.refresh)
        await asyncio.to_thread(self.usage.write_spilled)
        loop = asyncio.get_running_loop()
        if self._keeper is None:
            self._keeper = loop.create_task(self._keep(), name="residency")
        if self._bookkeeper is None:
            self._bookkeeper = loop.create_task(self._bookkeeping(), name="keys-and-usage")

    async def _bookkeeping(self) -> None:
        """Keys made or revoked elsewhere, last-used times and usage, each on its own interval."""
        refresh_s, flush_s = self.settings.auth.refresh_s, self.settings.metering.flush_s
        loop = asyncio.get_running_loop()
        next_flush = loop.time() + flush_s
        while True:
            await asyncio.sleep(min(refresh_s, flush_s))
            try:
                await asyncio.to_thread(self.auth.refresh)
                used = self.auth.take_last_used()
                if used:
                    await asyncio.to_thread(self.keys.keys.touch, used)
            except ImaasError as exc:
                log.warning("refreshing API keys failed (will retry): %s", exc.detail)
            except Exception:
                log.exception("refreshing API keys failed")
            if loop.time() >= next_flush:
                next_flush = loop.time() + flush_s
                await self.usage.flush()  # keeps what it could not write

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
        """Stop background work, write the usage recorded, release engine threads and database connections."""
        await self.changes.stop()
        for task in (self._keeper, self._bookkeeper):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._keeper = self._bookkeeper = None
        await self.inference.close()
        await self.usage.close()
        used = self.auth.take_last_used()
        if used:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.keys.keys.touch, used)
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


def training_decode_limits(settings: Settings) -> DecodeLimits:
    """The limits a training job decodes its dataset with: the upload already vetted every
    image (pixels and sides), so the serving guards against costly requests (a request's
    pixel budget, refusing large PNGs for small models, the minimum side) do not apply; a
    dataset version a job may train on is one the upload accepted."""
    return dataclasses.replace(
        decode_limits(settings), min_side=1, max_downscale=float("inf"), max_request_pixels=2**62
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
    keys = SqlKeys(registry)
    auth = Authenticator(keys.changed_since)
    usage = UsageService(
        open_counters(settings.quotas.redis_url),
        SqlUsage(registry),
        lambda name: _model_price(registry, name),
        lambda key_id: _free_images(keys, key_id),
        settings.metering.task_prices,
        settings.home / "usage-pending",
    )
    audit = AuditService(SqlAudit(registry))
    datasets = DatasetService(
        SqlDatasets(registry), artifacts, settings.datasets, settings.home / "uploads", settings.images.max_pixels
    )
    return Services(
        settings=settings,
        registry=registry,
        artifacts=artifacts,
        models=models,
        inference=inference,
        lifecycle=LifecycleService(registry, artifacts, inference, models),
        oip=OipService(inference, models, usage, audit),
        changes=ChangeFeed(
            registry.changes_since, inference.apply_changes, interval_s=settings.registry.poll_interval_s
        ),
        auth=auth,
        keys=KeyService(keys, auth),
        usage=usage,
        audit=audit,
        datasets=datasets,
        training=TrainingService(
            SqlJobs(registry), datasets, artifacts, settings.jobs.max_memory_mib, settings.jobs.max_streams
        ),
        collections=CollectionService(
            SqlCollections(registry),
            open_store(settings.collections_url, endpoint_url=settings.s3.endpoint_url, region=settings.s3.region),
            inference,
            usage,
            settings.collections,
        ),
        close_registry=registry.close,
    )


def _model_price(registry: SqlRegistry, name: str) -> Decimal | None:
    try:
        return registry.get_model(name).price_per_1000
    except ModelNotFound:  # deleted since it was used
        return None


def _free_images(keys: SqlKeys, key_id: str) -> int:
    try:
        return keys.get(key_id).limits.free_images_per_month
    except KeyNotFound:  # the anonymous caller of a server without authentication
        return 0
