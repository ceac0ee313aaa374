"""The registry on SQLAlchemy 2: SQLite (WAL) by default, PostgreSQL in a cluster.

``open_registry(url)`` creates the engine and upgrades the schema with Alembic, so a new
``IMAAS_HOME`` and an old one both end up at the current schema.

Example::

    store = open_registry("sqlite:////tmp/imaas/registry.db")
    version, created = store.add_version("cnn", sha, size, manifest)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from imaas.domain import PRODUCTION, ModelRecord, ModelRef, ModelVersion
from imaas.errors import AliasNotFound, Conflict, ModelNotFound, VersionNotFound
from imaas.registry.tables import AliasEventRow, AliasRow, ModelRow, VersionRow, utcnow
from imaas.schemas.manifest import Manifest

MIGRATIONS = Path(__file__).with_name("migrations")


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, foreign keys and a busy timeout."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def upgrade_schema(engine: Engine) -> None:
    """Bring the database to the newest Alembic revision."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def open_registry(url: str) -> SqlRegistry:
    """Open (and migrate) the registry at ``url``."""
    engine = make_engine(url)
    upgrade_schema(engine)
    return SqlRegistry(engine)


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


class SqlRegistry:
    """``RegistryStore`` over SQLAlchemy."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @contextmanager
    def _session(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            yield session

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
        for _attempt in range(3):
            try:
                return self._add_version(name, sha256, size_bytes, data, source, parent_version, metrics)
            except IntegrityError:  # a concurrent push took the same version number: retry
                continue
        raise Conflict(f"could not allocate a version for {name!r}; retry")

    def _add_version(
        self,
        name: str,
        sha256: str,
        size_bytes: int,
        manifest: dict[str, Any],
        source: str | None,
        parent_version: int | None,
        metrics: dict[str, Any] | None,
    ) -> tuple[ModelVersion, bool]:
        with self._session() as s:
            model = s.scalar(select(ModelRow).where(ModelRow.name == name))
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
                if existing.manifest == manifest:
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
            return self._to_version(
                name, row, {parent_id: parent_version} if parent_id and parent_version else None
            ), True

    def set_alias(self, name: str, alias: str, version: int, actor: str | None = None) -> None:
        """Point ``alias`` of ``name`` at ``version`` and record the move."""
        with self._session() as s:
            model = self._model_row(s, name)
            vid = s.scalar(select(VersionRow.id).where(VersionRow.model_id == model.id, VersionRow.version == version))
            if vid is None:
                raise VersionNotFound(f"model {name!r} has no version {version}")
            row = s.scalar(select(AliasRow).where(AliasRow.model_id == model.id, AliasRow.name == alias))
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
