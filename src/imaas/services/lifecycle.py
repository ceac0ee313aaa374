"""Model lifecycle: promote, rollback, canary, shadow, delete, status, history and cards.

Every change that sends traffic to a version warms it first: the version is loaded and
answers one real inference (``InferenceService.warm_version``) before the alias, canary or
shadow moves, so no request ever waits for a load or meets a version that cannot run. The
move itself is one registry write that names the version it expects the alias to hold
(``expect``): two operators promoting at once cannot leave a half state, the second gets
409 ``concurrent_change``. Requests in flight finish on the old version: the engine drains
its queue before unloading it, and it is unloaded only once nothing pins it any more.

Example::

    change = await lifecycle.promote("mobilenet-v2", 3, actor="alice")
    change.from_version, change.to_version  # (2, 3)
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, BinaryIO

from imaas.domain import PRODUCTION, AliasRoute, ModelEvent, ModelRecord, ModelVersion, check_name
from imaas.errors import AliasNotFound, ConcurrentChange, ImaasError, InvalidField
from imaas.registry.artifacts.store import ArtifactStore
from imaas.registry.fields import check_weight
from imaas.registry.store import RegistryStore
from imaas.runtime.memory import resident_bytes
from imaas.schemas.rest import LoadState
from imaas.services.comparison import PairStats
from imaas.services.inference import InferenceService
from imaas.services.models import ModelService

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AliasChange:
    """What a promote or rollback did."""

    model: str
    alias: str
    from_version: int | None
    to_version: int
    moved: bool


@dataclass(frozen=True)
class VersionStatus:
    """One version on this server: its state and what it costs."""

    version: int
    state: LoadState
    reason: str | None
    memory_bytes: int | None
    load_seconds: float | None
    loaded_at: float | None  # wall-clock seconds (epoch)
    last_used_at: float | None  # wall-clock seconds (epoch)
    pinned: bool
    queue_depth: int | None


class LifecycleService:
    """The operator's use cases over versions and aliases (async: they load models)."""

    def __init__(
        self, registry: RegistryStore, artifacts: ArtifactStore, inference: InferenceService, models: ModelService
    ) -> None:
        self.registry = registry
        self.artifacts = artifacts
        self.inference = inference
        self.models = models

    async def _changed(self, name: str) -> None:
        """After a write: drop cached routes, then unload what lost its pin and load what gained one."""
        self.inference.invalidate(name)
        await self.inference.sync_pins()

    async def push(
        self, name: str, onnx: BinaryIO, manifest: str | None, *, source: str, alias: str | None, actor: str | None
    ) -> tuple[ModelVersion, bool]:
        """Register a version (``ModelService.push``, on a thread) without moving any existing
        alias; with ``alias``, promote the new version there (warmed first; concurrent pushes'
        moves are applied one after the other). The first version of a model becomes its
        ``production`` version and is pinned at once (it loads on the next change-feed poll
        or its first request)."""
        version, created = await asyncio.to_thread(self.models.push, name, onnx, manifest, source=source, actor=actor)
        if alias is not None:
            await self.promote(name, version.version, alias, actor, action="push", serialise=True)
        else:
            await self._changed(name)
        return version, created

    async def promote(
        self,
        name: str,
        version: int,
        alias: str = PRODUCTION,
        actor: str | None = None,
        *,
        action: str = "promote",
        serialise: bool = False,
    ) -> AliasChange:
        """Warm ``version``, then move ``alias`` to it atomically.

        ``VersionNotFound`` for an unknown version; ``VersionNotLoadable`` (and the alias
        stays) when it cannot load or answer; ``ConcurrentChange`` when the alias moved while
        it warmed, unless ``serialise`` (a push's alias: the moves are applied one after the
        other, the last one wins).
        """
        target = await asyncio.to_thread(self.registry.get_version, name, version)
        warmed = False
        while True:
            record = await asyncio.to_thread(self.registry.get_model, name)
            current = record.aliases.get(alias)
            route = record.routes.get(alias)
            if current == version:  # nothing to move; a canary running on the alias ends
                if route is not None and route.canary_version is not None:
                    await asyncio.to_thread(self.registry.set_canary, name, alias, None, 0.0, actor)
                    await self._changed(name)
                return AliasChange(name, alias, current, version, moved=False)
            if not warmed:
                await self.inference.warm_version(target)
                warmed = True
            try:
                moved = await asyncio.to_thread(
                    self.registry.set_alias, name, alias, version, actor, expect=current, action=action
                )
            except ConcurrentChange:
                if not serialise:
                    raise
                continue
            await self._changed(name)
            return AliasChange(name, alias, current, version, moved=moved)

    async def rollback(self, name: str, alias: str = PRODUCTION, actor: str | None = None) -> AliasChange:
        """Move ``alias`` back to where its last change took it from (warmed first)."""
        plan = await asyncio.to_thread(self.registry.rollback_plan, name, alias)
        target = await asyncio.to_thread(self.registry.get_version, name, plan.target)
        await self.inference.warm_version(target)
        moved = await asyncio.to_thread(
            self.registry.set_alias,
            name,
            alias,
            plan.target,
            actor,
            expect=plan.current,
            action="rollback",
            detail={"undoes": plan.undoes},
        )
        await self._changed(name)
        return AliasChange(name, alias, plan.current, plan.target, moved=moved)

    async def _route(self, name: str, alias: str) -> tuple[ModelRecord, AliasRoute]:
        """The model and the route of ``alias`` (``AliasNotFound`` when it does not exist)."""
        record = await asyncio.to_thread(self.registry.get_model, name)
        route = record.routes.get(alias)
        if route is None:
            raise AliasNotFound(f"model {name!r} has no alias {alias!r}")
        return record, route

    async def set_canary(
        self, name: str, alias: str, version: int | None, weight: float, actor: str | None = None
    ) -> AliasRoute:
        """Send ``weight`` percent of ``alias``'s traffic to ``version`` (warmed first); weight
        100 completes the rollout, 0 or no version ends it. Everything the registry would
        refuse is checked before anything is loaded."""
        check_weight(weight)
        if version is not None and weight > 0:
            _, route = await self._route(name, alias)
            if version == route.version:
                raise _same_version("version", name, alias, version)
            target = await asyncio.to_thread(self.registry.get_version, name, version)
            await self.inference.warm_version(target)
        route = await asyncio.to_thread(self.registry.set_canary, name, alias, version, weight, actor)
        await self._changed(name)
        return route

    async def set_shadow(
        self,
        name: str,
        alias: str,
        target: tuple[str, int] | None,
        weight: float,
        actor: str | None = None,
    ) -> AliasRoute:
        """Copy ``weight`` percent of ``alias``'s traffic to ``target`` (model, version; warmed
        first); None or weight 0 ends it. Checked before anything is loaded."""
        check_weight(weight)
        if target is not None and weight > 0:
            check_name(target[0])
            record, route = await self._route(name, alias)
            if target == (name, route.version):
                raise _same_version("version", name, alias, route.version)
            version = await asyncio.to_thread(self.registry.get_version, *target)
            if version.manifest.task != record.task:
                raise InvalidField(
                    f"model: {target[0]!r} is a {version.manifest.task} model; "
                    f"a shadow of {name!r} must be a {record.task} model",
                    errors=[{"field": "model", "message": "another task"}],
                )
            await self.inference.warm_version(version)
        route = await asyncio.to_thread(self.registry.set_shadow, name, alias, target, weight, actor)
        await self._changed(name)
        if target is not None:
            await self._changed(target[0])
        return route

    async def delete_version(self, name: str, version: int, actor: str | None = None) -> ModelVersion:
        """Delete a version (409 while pinned by an alias, canary or shadow); it is unloaded
        here once its requests have finished, and its file goes with its last reference:
        removed now when the store answers, else by the periodic sweep (a failing store
        never fails the delete, which has happened)."""
        deleted = await asyncio.to_thread(self.registry.delete_version, name, version, actor)
        self.inference.invalidate(name)
        await self.inference.engine.unload(deleted.key)
        try:
            await asyncio.to_thread(self.registry.sweep_artifacts, self.artifacts.delete)
        except ImaasError as exc:
            log.warning("removing unused artifacts after a delete failed (the sweep retries): %s", exc.detail)
        return deleted

    async def status(self, name: str) -> tuple[list[VersionStatus], int]:
        """Every version of ``name`` on this server, newest first, and the process's RSS."""
        versions = await asyncio.to_thread(self.registry.list_versions, name)
        inference = self.inference
        wall = time.time() - inference.clock.now()  # monotonic -> epoch
        out = []
        for v in versions:
            state, failure = inference.load_state(v.key)
            model = inference.engine.get(v.key) or inference.engine.draining(v.key)
            out.append(
                VersionStatus(
                    version=v.version,
                    state=state,
                    reason=failure.reason if failure is not None else None,
                    memory_bytes=model.memory_bytes if model else None,
                    load_seconds=round(model.load_seconds, 3) if model else None,
                    loaded_at=wall + model.loaded_at if model else None,
                    last_used_at=wall + model.last_used if model else None,
                    pinned=v.key in inference.residency.pinned,
                    queue_depth=model.queue.depth if model else None,
                )
            )
        return out, resident_bytes()

    async def comparison(self, name: str) -> list[PairStats]:
        """How the shadows of ``name``'s aliases compare with the versions that answered."""
        await asyncio.to_thread(self.registry.get_model, name)  # ModelNotFound for unknown names
        return self.inference.comparisons.snapshot(name)

    async def history(self, name: str, limit: int = 100, before: int | None = None) -> list[ModelEvent]:
        """Recorded changes of ``name``, newest first."""
        await asyncio.to_thread(self.registry.get_model, name)
        return await asyncio.to_thread(self.registry.history, name, limit, before)

    async def update_model(self, name: str, actor: str | None = None, **fields: Any) -> ModelRecord:
        """Edit a model's description, tags, ``keep_latest`` or ``price_per_1000`` (the
        registry's ``update_model`` keywords; a ``price_per_1000`` of None clears the price)."""
        record = await asyncio.to_thread(lambda: self.registry.update_model(name, actor=actor, **fields))
        await self._changed(name)
        return record

    async def update_version(self, name: str, version: int, actor: str | None = None, **fields: Any) -> ModelVersion:
        """Edit a version's description or tags."""
        updated = await asyncio.to_thread(lambda: self.registry.update_version(name, version, actor=actor, **fields))
        self.inference.invalidate(name)
        return updated


def _same_version(field: str, name: str, alias: str, version: int) -> InvalidField:
    return InvalidField(
        f"{field}: {name}:{alias} already serves version {version}; a canary or shadow must be another version",
        errors=[{"field": field, "message": "the alias's own version"}],
    )
