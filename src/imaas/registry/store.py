"""The registry's contract, so services do not care which database backs it.

Every write records a ``ModelEvent`` (who, when, from, to) and takes the next number of
one registry-wide change sequence; ``changes_since`` is the feed other processes poll to
invalidate what they cached. Writes are serialised registry-wide (SQLite: ``BEGIN
IMMEDIATE``; PostgreSQL: a row lock on the sequence), so sequence numbers commit in order
and a poller never skips a change that commits late.

No write calls the artifact store under that lock on a request's path: deleting the last
version that uses some bytes leaves a tombstone, and ``sweep_artifacts`` (which every
serving process calls periodically) removes the file later. A database that cannot be
reached raises ``RegistryUnavailable`` (503); one locked by others past every retry,
``RegistryBusy`` (503).
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from types import EllipsisType
from typing import Any, Protocol

from imaas.domain import AliasRoute, ModelEvent, ModelRecord, ModelRef, ModelVersion, RollbackPlan, Route
from imaas.schemas.manifest import Manifest


class RegistryStore(Protocol):
    """Metadata of models, versions, aliases (with canary and shadow) and their history."""

    def add_version(
        self,
        name: str,
        sha256: str,
        size_bytes: int,
        manifest: Manifest,
        *,
        source: str | None = None,
        parent_version: int | None = None,
        metrics: dict[str, Any] | None = None,
        actor: str | None = None,
        ensure_artifact: Callable[[], None] | None = None,
        dataset: str | None = None,
        job_id: str | None = None,
    ) -> tuple[ModelVersion, bool]:
        """Register a version; returns it and whether it is new (same bytes+manifest is not).

        The caller stores the bytes first. ``ensure_artifact`` makes sure they are still
        stored and is called only when a tombstone names ``sha256`` (the last version using
        those bytes was deleted, so ``sweep_artifacts`` may have removed them, possibly after
        the caller stored them): then it runs inside the write transaction, under the
        registry-wide lock, before the row is written, and the tombstone goes. Without a
        tombstone the bytes cannot have been removed (only the sweeper removes, only
        tombstoned bytes), so a push does no storage I/O under the lock. An
        ``ensure_artifact`` that raises aborts the push.

        Records a ``push`` event when the version is new. ``InvalidManifest``/``InvalidField``
        (422) for a NUL character in the manifest, ``metrics`` or ``source``.
        """
        ...

    def list_models(self, limit: int | None = None, after: str | None = None) -> list[ModelRecord]:
        """Models by name with their latest version, aliases and routes: up to ``limit``, names after ``after``."""
        ...

    def get_model(self, name: str) -> ModelRecord:
        """One model; raises ``ModelNotFound``."""
        ...

    def get_version(self, name: str, version: int) -> ModelVersion:
        """One version; raises ``ModelNotFound``/``VersionNotFound``."""
        ...

    def list_versions(self, name: str) -> list[ModelVersion]:
        """Versions of a model, newest first; raises ``ModelNotFound``."""
        ...

    def resolve(self, ref: ModelRef) -> ModelVersion:
        """The version ``ref`` designates; raises ``ModelNotFound``/``VersionNotFound``/``AliasNotFound``."""
        ...

    def resolve_route(self, ref: ModelRef) -> Route:
        """``ref`` resolved for serving in one read: its version and, for an alias, the canary
        and shadow versions with their weights (a version reference has neither)."""
        ...

    def set_alias(
        self,
        name: str,
        alias: str,
        version: int,
        actor: str | None = None,
        *,
        if_absent: bool = False,
        expect: int | EllipsisType | None = ...,
        action: str = "alias",
        detail: dict[str, Any] | None = None,
    ) -> bool:
        """Point ``alias`` at ``version`` and record the change as ``action``; returns whether
        it moved.

        ``if_absent``: leave an existing alias alone. ``expect``: the version the alias must
        point at now (``None``: it must not exist), else ``ConcurrentChange`` (409) and
        nothing changes. Moving an alias ends its canary (the rollout is decided) and clears
        a shadow that is the new version itself.
        """
        ...

    def rollback_plan(self, name: str, alias: str) -> RollbackPlan:
        """Where a rollback of ``alias`` would go: the change that brought it to its current
        version, undone (changes already undone by rollbacks are skipped, so repeated
        rollbacks walk back through the history). ``NothingToRollBack`` when there is none
        or its target was deleted; ``AliasNotFound``."""
        ...

    def set_canary(
        self, name: str, alias: str, version: int | None, weight: float, actor: str | None = None
    ) -> AliasRoute:
        """Send ``weight`` percent of ``alias``'s requests to ``version`` (same model).

        ``weight`` 100 completes the rollout (the alias moves to the canary, recorded as
        ``promote``); ``weight`` 0 or ``version`` None ends it. ``InvalidField`` (422) for a
        weight outside 0-100 or a canary equal to the alias's version.
        """
        ...

    def set_shadow(
        self,
        name: str,
        alias: str,
        target: tuple[str, int] | None,
        weight: float,
        actor: str | None = None,
    ) -> AliasRoute:
        """Mirror ``weight`` percent of ``alias``'s requests to ``target`` (model, version) of
        the same task; ``None`` or weight 0 ends it. ``InvalidField`` (422) for another task,
        a weight outside 0-100 or the alias's own version."""
        ...

    def delete_version(self, name: str, version: int, actor: str | None = None) -> ModelVersion:
        """Delete a version; ``VersionInUse`` (409) while an alias, canary or shadow points at it.

        One transaction, no storage call: when no remaining version shares its sha256, a
        tombstone is recorded with the delete and ``sweep_artifacts`` removes the file later.
        """
        ...

    def sweep_artifacts(
        self,
        remove_artifact: Callable[[str], None],
        *,
        older_than_s: float = 0.0,
        limit: int = 100,
        forget_after_s: float = 86_400.0,
    ) -> list[str]:
        """Remove the files of tombstones older than ``older_than_s``; returns their sha256s.

        For each (at most ``limit``, oldest first), a short transaction under the
        registry-wide lock checks again that no version uses the bytes and then calls
        ``remove_artifact(sha256)`` (the one storage call made under the lock: background
        work, bounded by the store's short timeouts); bytes in use again just lose their
        tombstone. A removal that raises keeps its tombstone for the next sweep and is
        logged once, not raised; database trouble raises ``RegistryBusy`` or
        ``RegistryUnavailable``. A tombstone stays ``forget_after_s`` after its file was
        removed, so a push that found the file just before the removal stores it again.

        Example::

            registry.sweep_artifacts(artifacts.delete, older_than_s=60)  # every minute or so
        """
        ...

    def update_model(
        self,
        name: str,
        *,
        description: str | None = None,
        tags: dict[str, str] | None = None,
        keep_latest: int | None = None,
        price_per_1000: Decimal | EllipsisType | None = ...,
        actor: str | None = None,
    ) -> ModelRecord:
        """Edit a model's card (fields left None are kept); records an ``edit`` event.

        ``price_per_1000`` is kept when left ``...``; None clears it (the task's price from
        the settings applies again, else the model is free). ``InvalidField`` for a price
        that is not a Decimal from 0 to 1e9 with at most 6 decimal places (a float is not exact).

        Example::

            registry.update_model("digits", price_per_1000=Decimal("1.50"))
            registry.update_model("digits", price_per_1000=None)  # back to the task's price
        """
        ...

    def update_version(
        self,
        name: str,
        version: int,
        *,
        description: str | None = None,
        tags: dict[str, str] | None = None,
        actor: str | None = None,
    ) -> ModelVersion:
        """Edit a version's description and tags; records an ``edit`` event."""
        ...

    def history(self, name: str, limit: int = 100, before: int | None = None) -> list[ModelEvent]:
        """A model's events, newest first: up to ``limit`` with ``seq`` below ``before``."""
        ...

    def pinned_versions(self) -> set[tuple[str, int]]:
        """Versions that must stay loaded: every alias, canary and shadow target, and each
        model's ``keep_latest`` newest versions."""
        ...

    def changes_since(self, seq: int) -> tuple[int, set[str]]:
        """The newest change sequence number and the models changed after ``seq``."""
        ...

    def aliased_versions(self, alias: str) -> list[ModelVersion]:
        """Every version that ``alias`` points at, one per model."""
        ...
