"""The registry on SQLAlchemy 2: SQLite (WAL) by default, PostgreSQL in a cluster.

``open_registry(url)`` creates the engine and upgrades the schema with Alembic, so a new
``IMAAS_HOME`` and an old one both end up at the current schema; ``migrate=False`` only
checks it (for replicas that leave migrations to ``imaas db upgrade``).

Every write runs in one transaction that takes the registry-wide write lock first
(``BEGIN IMMEDIATE`` on SQLite, a row lock on ``registry_state`` on PostgreSQL), records
its events under the next numbers of the change sequence, and commits: writers queue up
instead of colliding, and sequence numbers commit in order (see ``changes``). A write that
still finds the database locked after SQLite's busy timeout is run again after a backoff
(``WriteRetry``); when every attempt met a lock it raises ``RegistryBusy`` (503 with
Retry-After), never a raw database error.

The work is split by concept: ``queries`` (reads), ``routing`` (aliases, canaries,
shadows), ``versions`` (pushes, deletes, cards), ``changes`` (sequence, history,
rollbacks), ``fields`` (limits on what users write), ``migrate`` (Alembic).

Example::

    store = open_registry("sqlite:////tmp/imaas/registry.db")
    version, created = store.add_version("cnn", sha, size, manifest, actor="alice")
    store.set_alias("cnn", "production", version.version, "alice", expect=None)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import EllipsisType
from typing import Any, TypeVar

from sqlalchemy import URL, Engine, select
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from imaas.domain import AliasRoute, ModelEvent, ModelRecord, ModelRef, ModelVersion, RollbackPlan, Route
from imaas.errors import Conflict, NothingToRollBack, RegistryBusy
from imaas.registry import changes, fields, queries, routing, versions
from imaas.registry.engine import DEFAULT_BUSY_TIMEOUT_S, is_busy, make_engine, writer
from imaas.registry.migrate import check_schema, upgrade_schema
from imaas.registry.tables import ModelRow, StateRow, VersionRow
from imaas.schemas.manifest import Manifest

__all__ = ["SqlRegistry", "WriteRetry", "check_schema", "make_engine", "open_registry", "upgrade_schema"]

T = TypeVar("T")


@dataclass(frozen=True)
class WriteRetry:
    """How often, and after which pauses, a write that met a locked database is run again.

    ``attempts`` counts the first run. The pause before retry ``n`` (from 1) is
    ``first_delay_s * factor ** (n - 1)``, capped at ``max_delay_s``; SQLite has already
    waited up to its busy timeout inside each attempt. ``retry_after_s`` is what the client
    is told to wait when every attempt failed.

    >>> WriteRetry(attempts=4, first_delay_s=0.05).delays()
    [0.05, 0.1, 0.2]
    """

    attempts: int = 4
    first_delay_s: float = 0.05
    factor: float = 2.0
    max_delay_s: float = 1.0
    retry_after_s: float = 1.0

    def delays(self) -> list[float]:
        """The pauses between attempts, in order (one fewer than ``attempts``)."""
        return [min(self.first_delay_s * self.factor**n, self.max_delay_s) for n in range(self.attempts - 1)]


def open_registry(
    url: str | URL,
    *,
    migrate: bool = True,
    busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
    retry: WriteRetry | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> SqlRegistry:
    """Open the registry at ``url``, migrating it first (``migrate=False``: ``Conflict``
    unless it is already at the newest revision); see ``SqlRegistry`` for the write options."""
    engine = make_engine(url, busy_timeout_s=busy_timeout_s)
    try:
        if migrate:
            upgrade_schema(engine)
        else:
            check_schema(engine)
    except BaseException:
        engine.dispose()
        raise
    return SqlRegistry(engine, retry=retry, sleep=sleep)


class SqlRegistry:
    """``RegistryStore`` over SQLAlchemy.

    ``retry`` says how a write that met a locked database is rerun and ``sleep`` waits
    between attempts (tests pass one that does not really sleep). Pass an engine from
    ``make_engine``, which makes SQLite writes begin with ``BEGIN IMMEDIATE``.
    """

    def __init__(
        self, engine: Engine, *, retry: WriteRetry | None = None, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self.engine = engine
        self.retry = retry or WriteRetry()
        self._sleep = sleep
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._write_sessions = sessionmaker(writer(engine), expire_on_commit=False)

    @contextmanager
    def _session(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            yield session

    def _write(self, work: Callable[[Session, StateRow], T], what: str) -> T:
        """Run ``work`` in one write transaction holding the registry lock, rerunning it when
        it lost a race.

        A locked database (after SQLite's busy timeout) is retried after the backoff of
        ``self.retry``; a unique constraint that a concurrent writer took first is retried at
        once, and the rerun sees that writer's rows.
        """
        delays = iter(self.retry.delays())
        conflicts = 0
        while True:
            try:
                with self._write_sessions.begin() as session:
                    return work(session, changes.lock_registry(session))
            except IntegrityError:
                conflicts += 1
                if conflicts >= self.retry.attempts:
                    raise Conflict(f"{what} kept colliding with concurrent writes; retry") from None
            except DBAPIError as exc:
                if not is_busy(exc):
                    raise
                delay = next(delays, None)
                if delay is None:
                    raise RegistryBusy(
                        f"{what}: the registry database stayed locked by other writers through "
                        f"{self.retry.attempts} attempts",
                        retry_after=self.retry.retry_after_s,
                    ) from exc
                self._sleep(delay)

    def close(self) -> None:
        """Release the connection pool."""
        self.engine.dispose()

    # -- reads ---------------------------------------------------------------------------
    def list_models(self, limit: int | None = None, after: str | None = None) -> list[ModelRecord]:
        """Models by name with their latest version, aliases and routes, up to ``limit`` whose
        name sorts after ``after`` (keyset paging on the unique name index: three queries
        bounded by the page, whatever the catalog's size)."""
        with self._session() as s:
            q = select(ModelRow).order_by(ModelRow.name)
            if after is not None:
                q = q.where(ModelRow.name > after)
            if limit is not None:
                q = q.limit(limit)
            return queries.records(s, list(s.scalars(q)))

    def get_model(self, name: str) -> ModelRecord:
        """One model; raises ``ModelNotFound``."""
        with self._session() as s:
            return queries.records(s, [queries.model_row(s, name)])[0]

    def get_version(self, name: str, version: int) -> ModelVersion:
        """One version; raises ``ModelNotFound``/``VersionNotFound``."""
        return self.resolve(ModelRef(name, version=version))

    def list_versions(self, name: str) -> list[ModelVersion]:
        """Versions of a model, newest first."""
        with self._session() as s:
            model = queries.model_row(s, name)
            q = select(VersionRow).where(VersionRow.model_id == model.id).order_by(VersionRow.version.desc())
            return [queries.to_version(name, r) for r in s.scalars(q)]

    def resolve(self, ref: ModelRef) -> ModelVersion:
        """The version ``ref`` designates (no alias and no version: production, else latest)."""
        return self.resolve_route(ref).primary

    def resolve_route(self, ref: ModelRef) -> Route:
        """``ref`` resolved for serving in one read: its version and, for an alias, the canary
        and shadow versions with their weights."""
        with self._session() as s:
            return queries.resolve_route(s, ref)

    def aliased_versions(self, alias: str) -> list[ModelVersion]:
        """Every version ``alias`` points at, one per model."""
        with self._session() as s:
            return queries.aliased_versions(s, alias)

    def pinned_versions(self) -> set[tuple[str, int]]:
        """Versions that must stay loaded: alias, canary and shadow targets of every model,
        and each model's ``keep_latest`` newest versions."""
        with self._session() as s:
            return queries.pinned_versions(s)

    def history(self, name: str, limit: int = 100, before: int | None = None) -> list[ModelEvent]:
        """``name``'s events, newest first: up to ``limit`` with ``seq`` below ``before``."""
        with self._session() as s:
            queries.model_row(s, name)
            return changes.history(s, name, limit, before)

    def changes_since(self, seq: int) -> tuple[int, set[str]]:
        """The newest change sequence number and the models changed after ``seq`` (two
        indexed lookups: cheap enough to poll every second)."""
        with self._session() as s:
            return changes.changes_since(s, seq)

    def rollback_plan(self, name: str, alias: str) -> RollbackPlan:
        """Where a rollback of ``alias`` would go (see ``changes.plan_rollback``).

        Carry it out with ``set_alias(name, alias, plan.target, actor, expect=plan.current,
        action="rollback", detail={"undoes": plan.undoes})``: ``expect`` refuses it when
        someone moved the alias meanwhile, ``undoes`` tells the next plan which move is undone.
        """
        with self._session() as s:
            model = queries.model_row(s, name)
            current = queries.alias_route(s, model, alias).version
            plan = changes.plan_rollback(name, alias, current, changes.alias_moves(s, name, alias))
            exists = s.scalar(
                select(VersionRow.id).where(VersionRow.model_id == model.id, VersionRow.version == plan.target)
            )
            if exists is None:
                raise NothingToRollBack(
                    f"alias {alias!r} of {name!r} would roll back to version {plan.target}, which was deleted"
                )
            return plan

    # -- writes --------------------------------------------------------------------------
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
    ) -> tuple[ModelVersion, bool]:
        """Register a version. The same bytes with the same manifest return the existing one.

        Records a ``push`` event when the version is new; setting ``production`` on a first
        push is the caller's (``set_alias(..., if_absent=True)``).
        """
        data = manifest.model_dump(mode="json")
        return self._write(
            lambda s, state: versions.add_version(
                s,
                state,
                name,
                sha256,
                size_bytes,
                data,
                source=source,
                parent_version=parent_version,
                metrics=metrics,
                actor=actor,
                ensure_artifact=ensure_artifact,
            ),
            f"adding a version to {name!r}",
        )

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
        """Point ``alias`` of ``name`` at ``version`` and record the move as ``action``
        (``alias``, ``promote``, ``rollback``, ``push``...: not ``canary``, ``shadow``,
        ``delete`` or ``edit``); returns whether it moved.

        With ``if_absent`` an alias that already exists is left alone (the first of several
        racing first pushes becomes ``production``, not the last). ``expect`` is the version
        the alias must point at now (None: absent), else ``ConcurrentChange``. Pointing an
        alias at the version it already has changes and records nothing.
        """

        def work(s: Session, state: StateRow) -> bool:
            model = queries.model_row(s, name)
            target = queries.version_row(s, model, version)
            return routing.move_alias(
                s, state, model, alias, target, actor, if_absent=if_absent, expect=expect, action=action, detail=detail
            )

        return self._write(work, f"moving alias {alias!r} of {name!r}")

    def set_canary(
        self, name: str, alias: str, version: int | None, weight: float, actor: str | None = None
    ) -> AliasRoute:
        """Send ``weight`` percent of ``alias``'s requests to ``version``; 100 promotes it,
        0 or None ends the canary (see ``routing.set_canary``)."""
        weight = fields.check_weight(weight)
        return self._write(
            lambda s, state: routing.set_canary(s, state, queries.model_row(s, name), alias, version, weight, actor),
            f"setting the canary of {name}:{alias}",
        )

    def set_shadow(
        self,
        name: str,
        alias: str,
        target: tuple[str, int] | None,
        weight: float,
        actor: str | None = None,
    ) -> AliasRoute:
        """Mirror ``weight`` percent of ``alias``'s requests to ``target``; None or 0 ends it
        (see ``routing.set_shadow``)."""
        weight = fields.check_weight(weight)
        return self._write(
            lambda s, state: routing.set_shadow(s, state, queries.model_row(s, name), alias, target, weight, actor),
            f"setting the shadow of {name}:{alias}",
        )

    def delete_version(
        self, name: str, version: int, actor: str | None = None, *, remove_artifact: Callable[[str], None]
    ) -> ModelVersion:
        """Delete a version nothing points at, then its artifact if no version still uses it.

        Two transactions: the delete commits first, so the bytes are never gone while a row
        names them; the second, under the registry lock again, calls ``remove_artifact``
        only if no version (of any model, a push meanwhile included) uses the sha256.
        """
        deleted = self._write(
            lambda s, state: versions.delete_version(s, state, name, version, actor),
            f"deleting version {version} of {name!r}",
        )
        self._write(
            lambda s, _state: versions.remove_unused_artifact(s, deleted.sha256, remove_artifact),
            f"removing the artifact of version {version} of {name!r}",
        )
        return deleted

    def update_model(
        self,
        name: str,
        *,
        description: str | None = None,
        tags: dict[str, str] | None = None,
        keep_latest: int | None = None,
        actor: str | None = None,
    ) -> ModelRecord:
        """Edit a model's card (fields left None are kept); records an ``edit`` event.

        ``InvalidField`` for a description over 10,000 characters, more than 50 tags, a tag
        key over 64 or value over 256 characters, or ``keep_latest`` outside 0-1000.
        """
        if description is not None:
            description = fields.check_description(description)
        if tags is not None:
            tags = fields.check_tags(tags)
        if keep_latest is not None:
            keep_latest = fields.check_keep_latest(keep_latest)
        return self._write(
            lambda s, state: versions.update_model(
                s, state, name, description=description, tags=tags, keep_latest=keep_latest, actor=actor
            ),
            f"editing model {name!r}",
        )

    def update_version(
        self,
        name: str,
        version: int,
        *,
        description: str | None = None,
        tags: dict[str, str] | None = None,
        actor: str | None = None,
    ) -> ModelVersion:
        """Edit a version's description and tags (limits as ``update_model``); records an ``edit`` event."""
        if description is not None:
            description = fields.check_description(description)
        if tags is not None:
            tags = fields.check_tags(tags)
        return self._write(
            lambda s, state: versions.update_version(
                s, state, name, version, description=description, tags=tags, actor=actor
            ),
            f"editing version {version} of {name!r}",
        )
