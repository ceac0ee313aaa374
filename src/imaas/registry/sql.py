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
Retry-After), never a raw database error. On PostgreSQL each write transaction sets
``lock_timeout``, so a writer stuck behind a lock held too long gives up (and is retried,
then answered ``RegistryBusy``) instead of hanging. A database that cannot be reached (down,
restarting, network cut) makes reads and writes raise ``RegistryUnavailable`` (503 with
Retry-After, no URL in the detail), and they work again as soon as it is back.

No storage call runs under the registry lock on a request's path: a delete leaves a
tombstone for ``sweep_artifacts``, which every process calls now and then (see
``versions``).

The work is split by concept: ``queries`` (reads), ``routing`` (aliases, canaries,
shadows), ``versions`` (pushes, deletes, cards), ``changes`` (sequence, history,
rollbacks), ``fields`` (limits on what users write), ``migrate`` (Alembic).

Example::

    store = open_registry("sqlite:////tmp/imaas/registry.db")
    version, created = store.add_version("cnn", sha, size, manifest, actor="alice")
    store.set_alias("cnn", "production", version.version, "alice", expect=None)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from types import EllipsisType
from typing import Any, TypeVar

from sqlalchemy import URL, Engine, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from imaas.domain import AliasRoute, ModelEvent, ModelRecord, ModelRef, ModelVersion, RollbackPlan, Route
from imaas.errors import Conflict, InvalidManifest, NothingToRollBack, RegistryBusy, RegistryUnavailable
from imaas.registry import changes, fields, queries, routing, versions
from imaas.registry.engine import DEFAULT_BUSY_TIMEOUT_S, is_busy, is_unavailable, make_engine, writer
from imaas.registry.migrate import check_schema, upgrade_schema
from imaas.registry.tables import ModelRow, StateRow, VersionRow, utcnow
from imaas.schemas.manifest import NUL_MESSAGE, Manifest

__all__ = ["SqlRegistry", "WriteRetry", "check_schema", "make_engine", "open_registry", "upgrade_schema"]

T = TypeVar("T")

log = logging.getLogger(__name__)

DEFAULT_LOCK_TIMEOUT_S = 10.0
"""How long a PostgreSQL write waits for a lock before giving up (then retried, see ``WriteRetry``)."""

FORGET_REMOVED_S = 86_400.0
"""How long a tombstone outlives the removal of its bytes (see ``SqlRegistry.sweep_artifacts``)."""


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
    lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
    retry: WriteRetry | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> SqlRegistry:
    """Open the registry at ``url``, migrating it first (``migrate=False``: ``Conflict``
    unless it is already at the newest revision); see ``SqlRegistry`` for the write options.

    ``Conflict`` for a database a newer imaas migrated; ``RegistryUnavailable`` (one line,
    no URL) when the database cannot be reached.
    """
    engine = make_engine(url, busy_timeout_s=busy_timeout_s)
    try:
        if migrate:
            upgrade_schema(engine)
        else:
            check_schema(engine)
    except DBAPIError as exc:
        engine.dispose()
        if not is_unavailable(exc):
            raise
        log.warning("the registry database cannot be reached: %s", _reason(exc))
        raise RegistryUnavailable(
            f"the registry database ({engine.dialect.name}) cannot be reached: check the database URL "
            "and that the server is up"
        ) from None
    except BaseException:
        engine.dispose()
        raise
    return SqlRegistry(engine, retry=retry, sleep=sleep, lock_timeout_s=lock_timeout_s)


def _reason(exc: DBAPIError) -> str:
    """The first line of the driver's message (for the log: it may name the host, never the password)."""
    lines = str(exc.orig).strip().splitlines()
    return f"{type(exc.orig).__name__}: {lines[0] if lines else ''}"


class SqlRegistry:
    """``RegistryStore`` over SQLAlchemy.

    ``retry`` says how a write that met a locked database is rerun and ``sleep`` waits
    between attempts (tests pass one that does not really sleep). ``lock_timeout_s`` bounds
    each PostgreSQL write's wait for a lock (SQLite's wait is the engine's busy timeout).
    Pass an engine from ``make_engine``, which makes SQLite writes begin with ``BEGIN
    IMMEDIATE``.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        retry: WriteRetry | None = None,
        sleep: Callable[[float], None] = time.sleep,
        lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
    ) -> None:
        self.engine = engine
        self.retry = retry or WriteRetry()
        self._sleep = sleep
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._write_sessions = sessionmaker(writer(engine), expire_on_commit=False)
        # SET takes no bind parameters; an integer of milliseconds is safe to format in
        self._lock_timeout_sql = (
            text(f"SET LOCAL lock_timeout = '{max(1, round(lock_timeout_s * 1000))}ms'")
            if engine.dialect.name == "postgresql"
            else None
        )
        self._state_lock = threading.Lock()
        self._unreachable = False  # log the first failure and the recovery, not every request
        self._failing_sweeps: set[str] = set()  # sha256s whose removal failed (warned once)

    def _reachable(self) -> None:
        if self._unreachable:
            with self._state_lock:
                if self._unreachable:
                    self._unreachable = False
                    log.warning("the registry database answers again")

    def _unavailable(self, exc: DBAPIError, what: str) -> RegistryUnavailable:
        """The error to raise for a connection-level failure; logged once per outage."""
        with self._state_lock:
            first, self._unreachable = not self._unreachable, True
        if first:
            log.warning("the registry database cannot be reached (%s): %s", what, _reason(exc))
        else:
            log.debug("the registry database is still unreachable (%s): %s", what, _reason(exc))
        return RegistryUnavailable(
            f"{what}: the registry database cannot be reached; retry later", retry_after=self.retry.retry_after_s
        )

    @contextmanager
    def _session(self) -> Iterator[Session]:
        """A read transaction; ``RegistryUnavailable`` when the database cannot be reached."""
        try:
            with self._sessions.begin() as session:
                yield session
        except DBAPIError as exc:
            if not is_unavailable(exc):
                raise
            raise self._unavailable(exc, "reading the registry") from exc
        self._reachable()

    def _write(self, work: Callable[[Session, StateRow], T], what: str) -> T:
        """Run ``work`` in one write transaction holding the registry lock, rerunning it when
        it lost a race.

        A locked database (after SQLite's busy timeout, PostgreSQL's ``lock_timeout``) is
        retried after the backoff of ``self.retry``; a unique constraint that a concurrent
        writer took first is retried at once, and the rerun sees that writer's rows. A
        database that cannot be reached raises ``RegistryUnavailable`` at once.
        """
        delays = iter(self.retry.delays())
        conflicts = 0
        while True:
            try:
                with self._write_sessions.begin() as session:
                    if self._lock_timeout_sql is not None:
                        session.execute(self._lock_timeout_sql)
                    result = work(session, changes.lock_registry(session))
                self._reachable()
                return result
            except IntegrityError:
                conflicts += 1
                if conflicts >= self.retry.attempts:
                    raise Conflict(f"{what} kept colliding with concurrent writes; retry") from None
            except DBAPIError as exc:
                if is_unavailable(exc):
                    raise self._unavailable(exc, what) from exc
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
        dataset: str | None = None,
        job_id: str | None = None,
    ) -> tuple[ModelVersion, bool]:
        """Register a version. The same bytes with the same manifest return the existing one.

        Records a ``push`` event when the version is new; setting ``production`` on a first
        push is the caller's (``set_alias(..., if_absent=True)``). ``ensure_artifact`` runs
        under the lock only when a tombstone names ``sha256`` (see ``RegistryStore``).

        ``InvalidManifest``/``InvalidField`` (422) for a NUL character in any text of the
        manifest (names taken from the ONNX graph included), ``metrics`` or ``source``.
        """
        data = manifest.model_dump(mode="json")
        bad = fields.find_nul(data)
        if bad is not None:
            raise InvalidManifest(f"{bad}: {NUL_MESSAGE}", errors=[{"field": bad, "message": NUL_MESSAGE}])
        bad = fields.find_nul(metrics or {}, "metrics")
        if bad is not None:
            raise fields.invalid(bad, NUL_MESSAGE)
        if source is not None:
            fields.check_text(source, "source")
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
                dataset=dataset,
                job_id=job_id,
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

    def delete_version(self, name: str, version: int, actor: str | None = None) -> ModelVersion:
        """Delete a version nothing points at, in one transaction that touches no storage.

        When no other version uses its bytes a tombstone is recorded with the delete;
        ``sweep_artifacts`` removes the file later.
        """
        return self._write(
            lambda s, state: versions.delete_version(s, state, name, version, actor),
            f"deleting version {version} of {name!r}",
        )

    def sweep_artifacts(
        self,
        remove_artifact: Callable[[str], None],
        *,
        older_than_s: float = 0.0,
        limit: int = 100,
        forget_after_s: float = FORGET_REMOVED_S,
    ) -> list[str]:
        """Remove the bytes of tombstones older than ``older_than_s``; returns the sha256s removed.

        Each one gets its own short write transaction under the registry lock, which checks
        again that no version uses the bytes, calls ``remove_artifact(sha256)`` and marks
        the tombstone removed (the one place storage is called under the lock: in the
        background, bounded by the store's short timeouts). Bytes a version uses again just
        lose their tombstone. A removal that fails keeps its tombstone for the next sweep and
        is logged once (a warning, no traceback) until it succeeds; a store that does not
        answer (``RegistryBusy``) ends the sweep there. At most ``limit`` per call, oldest
        first. Tombstones whose bytes were removed more than ``forget_after_s``
        ago are dropped (until then a push of the same bytes stores them again).

        Example::

            removed = registry.sweep_artifacts(artifacts.delete, older_than_s=60)
        """
        now = utcnow()
        before = now - timedelta(seconds=max(older_than_s, 0.0))
        forget_before = now - timedelta(seconds=max(forget_after_s, 0.0))
        with self._session() as s:
            candidates = versions.sweep_candidates(s, before, limit)
            forgettable = versions.removed_before(s, forget_before)
        removed: list[str] = []
        for sha in candidates:
            try:
                done = self._write(
                    versions.sweeper(sha, before, remove_artifact), f"removing the unused artifact {sha}"
                )
            except versions.RemovalFailed as failed:
                if sha not in self._failing_sweeps:
                    self._failing_sweeps.add(sha)
                    log.warning("could not remove the unused artifact %s (the next sweep retries): %s", sha, failed)
                else:
                    log.debug("still cannot remove the unused artifact %s: %s", sha, failed)
                if isinstance(failed.__cause__, RegistryBusy):
                    break  # the store does not answer: the others would wait for it under the lock too
                continue
            if sha in self._failing_sweeps:
                self._failing_sweeps.discard(sha)
                log.info("removed the unused artifact %s after earlier failures", sha)
            if done:
                removed.append(sha)
        if forgettable:
            self._write(lambda s, _state: versions.forget_removed(s, forget_before), "forgetting removed artifacts")
        return removed

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
        """Edit a model's card (fields left None are kept; ``price_per_1000`` left ``...`` is
        kept, and None clears it: the task's price applies again); records an ``edit`` event.

        ``InvalidField`` for a description over 10,000 characters, more than 50 tags, a tag
        key over 64 or value over 256 characters, a NUL character, ``keep_latest`` outside
        0-100, or a price that is not a Decimal from 0 to 1e9 with at most 6 decimal places.
        """
        if description is not None:
            description = fields.check_description(description)
        if tags is not None:
            tags = fields.check_tags(tags)
        if keep_latest is not None:
            keep_latest = fields.check_keep_latest(keep_latest)
        if not isinstance(price_per_1000, EllipsisType | None):
            price_per_1000 = fields.check_price(price_per_1000)
        return self._write(
            lambda s, state: versions.update_model(
                s,
                state,
                name,
                description=description,
                tags=tags,
                keep_latest=keep_latest,
                price_per_1000=price_per_1000,
                actor=actor,
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
