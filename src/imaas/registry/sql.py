"""The registry on SQLAlchemy 2: SQLite (WAL) by default, PostgreSQL in a cluster.

``open_registry(url)`` creates the engine and upgrades the schema with Alembic, so a new
``IMAAS_HOME`` and an old one both end up at the current schema.

Every write runs in one transaction that takes the write lock first (``BEGIN IMMEDIATE`` on
SQLite, a row lock on the model on PostgreSQL), so concurrent pushes and alias moves of one
model queue up instead of colliding. A write that still finds the database locked after
SQLite's busy timeout is run again after a backoff (``WriteRetry``); when every attempt met
a lock it raises ``RegistryBusy`` (503 with Retry-After), never a raw database error.

Example::

    store = open_registry("sqlite:////tmp/imaas/registry.db")
    version, created = store.add_version("cnn", sha, size, manifest)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import URL, Engine, func, select
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from imaas.domain import PRODUCTION, ModelRecord, ModelRef, ModelVersion
from imaas.errors import AliasNotFound, Conflict, ModelNotFound, RegistryBusy, VersionNotFound
from imaas.registry.engine import DEFAULT_BUSY_TIMEOUT_S, is_busy, make_engine, writer
from imaas.registry.tables import AliasEventRow, AliasRow, ModelRow, VersionRow, utcnow
from imaas.schemas.manifest import Manifest

__all__ = ["SqlRegistry", "WriteRetry", "make_engine", "open_registry", "upgrade_schema"]

MIGRATIONS = Path(__file__).with_name("migrations")

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


def upgrade_schema(engine: Engine) -> None:
    """Bring the database to the newest Alembic revision (in one write transaction)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with writer(engine).begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def open_registry(
    url: str | URL,
    *,
    busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
    retry: WriteRetry | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> SqlRegistry:
    """Open (and migrate) the registry at ``url``; see ``SqlRegistry`` for the write options."""
    engine = make_engine(url, busy_timeout_s=busy_timeout_s)
    upgrade_schema(engine)
    return SqlRegistry(engine, retry=retry, sleep=sleep)


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


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

    def _write(self, work: Callable[[Session], T], what: str) -> T:
        """Run ``work`` in one write transaction, rerunning it when it lost a race.

        A locked database (after SQLite's busy timeout) is retried after the backoff of
        ``self.retry``; a unique constraint that a concurrent writer took first (two first
        pushes creating one model) is retried at once, and the rerun sees that writer's rows.
        """
        delays = iter(self.retry.delays())
        conflicts = 0
        while True:
            try:
                with self._write_sessions.begin() as session:
                    return work(session)
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

    def _lock_model(self, s: Session, name: str) -> ModelRow | None:
        """The model row, locked until commit on PostgreSQL (SQLite already holds the write lock)."""
        return s.scalar(select(ModelRow).where(ModelRow.name == name).with_for_update())

    def close(self) -> None:
        """Release the connection pool."""
        self.engine.dispose()

    # -- reads ---------------------------------------------------------------------------
    def _model_row(self, s: Session, name: str) -> ModelRow:
        row = s.scalar(select(ModelRow).where(ModelRow.name == name))
        if row is None:
            raise ModelNotFound(f"no model named {name!r}")
        return row

    def _to_version(self, name: str, row: VersionRow, parents: dict[int, int] | None = None) -> ModelVersion:
        parent = None
        if row.parent_version_id is not None and parents is not None:
            parent = parents.get(row.parent_version_id)
        return ModelVersion(
            model=name,
            version=row.version,
            sha256=row.sha256,
            size_bytes=row.size_bytes,
            manifest=Manifest.model_validate(row.manifest),
            created_at=_aware(row.created_at),
            metrics=dict(row.metrics or {}),
            source=row.source,
            parent_version=parent,
            dataset=row.dataset,
            job_id=row.job_id,
        )

    def _aliases(self, s: Session, model_ids: list[int]) -> dict[int, dict[str, int]]:
        out: dict[int, dict[str, int]] = {mid: {} for mid in model_ids}
        if not model_ids:
            return out
        q = (
            select(AliasRow.model_id, AliasRow.name, VersionRow.version)
            .join(VersionRow, VersionRow.id == AliasRow.version_id)
            .where(AliasRow.model_id.in_(model_ids))
        )
        for mid, alias, version in s.execute(q):
            out[mid][alias] = version
        return out

    def _records(self, s: Session, rows: list[ModelRow]) -> list[ModelRecord]:
        ids = [r.id for r in rows]
        latest: dict[int, int] = {}
        if ids:
            q = (
                select(VersionRow.model_id, func.max(VersionRow.version))
                .where(VersionRow.model_id.in_(ids))
                .group_by(VersionRow.model_id)
            )
            latest = {mid: v for mid, v in s.execute(q)}
        aliases = self._aliases(s, ids)
        return [
            ModelRecord(
                name=r.name,
                task=r.task,
                description=r.description,
                created_at=_aware(r.created_at),
                latest_version=latest.get(r.id),
                aliases=aliases[r.id],
            )
            for r in rows
        ]

    def list_models(self, limit: int | None = None, after: str | None = None) -> list[ModelRecord]:
        """Models by name with their latest version and aliases, up to ``limit`` whose name sorts
        after ``after`` (keyset paging on the unique name index: three queries bounded by the
        page, whatever the catalog's size)."""
        with self._session() as s:
            q = select(ModelRow).order_by(ModelRow.name)
            if after is not None:
                q = q.where(ModelRow.name > after)
            if limit is not None:
                q = q.limit(limit)
            return self._records(s, list(s.scalars(q)))

    def get_model(self, name: str) -> ModelRecord:
        """One model; raises ``ModelNotFound``."""
        with self._session() as s:
            return self._records(s, [self._model_row(s, name)])[0]

    def list_versions(self, name: str) -> list[ModelVersion]:
        """Versions of a model, newest first."""
        with self._session() as s:
            model = self._model_row(s, name)
            rows = list(
                s.scalars(select(VersionRow).where(VersionRow.model_id == model.id).order_by(VersionRow.version.desc()))
            )
            parents = {r.id: r.version for r in rows}
            return [self._to_version(name, r, parents) for r in rows]

    def resolve(self, ref: ModelRef) -> ModelVersion:
        """The version ``ref`` designates (no alias and no version: production, else latest)."""
        with self._session() as s:
            model = self._model_row(s, ref.name)
            base = select(VersionRow).where(VersionRow.model_id == model.id)
            row: VersionRow | None
            if ref.version is not None:
                row = s.scalar(base.where(VersionRow.version == ref.version))
                if row is None:
                    raise VersionNotFound(f"model {ref.name!r} has no version {ref.version}")
            else:
                alias = ref.alias or PRODUCTION
                row = s.scalar(
                    select(VersionRow)
                    .join(AliasRow, AliasRow.version_id == VersionRow.id)
                    .where(AliasRow.model_id == model.id, AliasRow.name == alias)
                )
                if row is None and ref.alias is None:
                    row = s.scalar(base.order_by(VersionRow.version.desc()).limit(1))
                if row is None:
                    raise AliasNotFound(f"model {ref.name!r} has no alias {alias!r}")
            return self._to_version(ref.name, row)

    def aliased_versions(self, alias: str) -> list[ModelVersion]:
        """Every version ``alias`` points at, one per model."""
        with self._session() as s:
            q = (
                select(ModelRow.name, VersionRow)
                .join(AliasRow, AliasRow.version_id == VersionRow.id)
                .join(ModelRow, ModelRow.id == AliasRow.model_id)
                .where(AliasRow.name == alias)
                .order_by(ModelRow.name)
            )
            return [self._to_version(name, row) for name, row in s.execute(q)]

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
    ) -> tuple[ModelVersion, bool]:
        """Register a version. The same bytes with the same manifest return the existing one."""
        data = manifest.model_dump(mode="json")
        return self._write(
            lambda s: self._add_version(s, name, sha256, size_bytes, data, source, parent_version, metrics),
            f"adding a version to {name!r}",
        )

    def _add_version(
        self,
        s: Session,
        name: str,
        sha256: str,
        size_bytes: int,
        manifest: dict[str, Any],
        source: str | None,
        parent_version: int | None,
        metrics: dict[str, Any] | None,
    ) -> tuple[ModelVersion, bool]:
        model = self._lock_model(s, name)
        if model is None:
            model = ModelRow(
                name=name, task=manifest["task"], description=manifest.get("description", ""), created_at=utcnow()
            )
            s.add(model)
            s.flush()
        elif model.task != manifest["task"]:
            raise Conflict(f"model {name!r} is a {model.task} model; a {manifest['task']} version cannot join it")
        for existing in s.scalars(
            select(VersionRow).where(VersionRow.model_id == model.id, VersionRow.sha256 == sha256)
        ):
            # compare in today's form: a row stored before a field was added lacks its default
            if Manifest.model_validate(existing.manifest).model_dump(mode="json") == manifest:
                return self._to_version(name, existing), False
        parent_id = None
        if parent_version is not None:
            parent_id = s.scalar(
                select(VersionRow.id).where(VersionRow.model_id == model.id, VersionRow.version == parent_version)
            )
            if parent_id is None:
                raise VersionNotFound(f"parent version {parent_version} of {name!r} does not exist")
        number = (s.scalar(select(func.max(VersionRow.version)).where(VersionRow.model_id == model.id)) or 0) + 1
        row = VersionRow(
            model_id=model.id,
            version=number,
            sha256=sha256,
            size_bytes=size_bytes,
            manifest=manifest,
            metrics=metrics or {},
            source=source,
            parent_version_id=parent_id,
            created_at=utcnow(),
        )
        s.add(row)
        if manifest.get("description"):
            model.description = manifest["description"]
        s.flush()
        return self._to_version(name, row, {parent_id: parent_version} if parent_id and parent_version else None), True

    def set_alias(
        self, name: str, alias: str, version: int, actor: str | None = None, *, if_absent: bool = False
    ) -> bool:
        """Point ``alias`` of ``name`` at ``version`` and record the move; returns whether it moved.

        Concurrent moves of one model's aliases run one after the other (the last one wins)
        and each writes its history row naming the version it replaced. With ``if_absent``
        an alias that already exists is left alone (the first of several racing first pushes
        becomes ``production``, not the last).
        """
        return self._write(
            lambda s: self._set_alias(s, name, alias, version, actor, if_absent), f"moving alias {alias!r} of {name!r}"
        )

    def _set_alias(self, s: Session, name: str, alias: str, version: int, actor: str | None, if_absent: bool) -> bool:
        model = self._lock_model(s, name)
        if model is None:
            raise ModelNotFound(f"no model named {name!r}")
        vid = s.scalar(select(VersionRow.id).where(VersionRow.model_id == model.id, VersionRow.version == version))
        if vid is None:
            raise VersionNotFound(f"model {name!r} has no version {version}")
        row = s.scalar(select(AliasRow).where(AliasRow.model_id == model.id, AliasRow.name == alias))
        if row is not None and if_absent:
            return False
        previous = row.version_id if row else None
        if row is None:
            s.add(AliasRow(model_id=model.id, name=alias, version_id=vid, updated_at=utcnow()))
        else:
            row.version_id = vid
            row.updated_at = utcnow()
        s.add(
            AliasEventRow(
                model_id=model.id,
                alias=alias,
                version_id=vid,
                previous_version_id=previous,
                actor=actor,
                at=utcnow(),
            )
        )
        return True
