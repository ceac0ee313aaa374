"""SQLAlchemy tables of the registry. Alembic migrations create them; keep both in step.

``tests/integration/test_migrations.py`` compares these tables (types and server defaults
included) with a database the migrations built, on SQLite and PostgreSQL: a column added
here without a migration fails it.

Version numbers are never given twice: ``models.last_version`` remembers the highest one
handed out, so a deleted version's number cannot come back with other bytes (caches and
the history key on ``(model, version)``). That is also why lineage (``parent_version``)
and history rows hold version *numbers*, not foreign keys: they stay true after the
version they name was deleted.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    """Timezone-aware now, the only timestamp the registry writes."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Declarative base of the registry tables."""


class ModelRow(Base):
    """A named model and its card; its versions carry the files."""

    __tablename__ = "models"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True, nullable=False)
    task: Mapped[str] = mapped_column(String(32), nullable=False)
    description: Mapped[str] = mapped_column(Text, nullable=False, default="", server_default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
    tags: Mapped[dict[str, str]] = mapped_column(JSON, nullable=False, default=dict, server_default="{}")
    # how many of the newest versions stay loaded whether or not an alias points at them
    keep_latest: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    # the highest version number ever given (deleted ones included): the next push gets one more
    last_version: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    # what 1,000 predicted images cost (None: the task's price from the settings, else free).
    # PostgreSQL stores the decimal itself; SQLite has no decimal type, so it keeps a double and
    # SQLAlchemy reads it back rounded to the 6 places: exact for every price registry/fields.py
    # admits (at most 1e9 with 6 places: 15 significant digits, which a double round-trips).
    price_per_1000: Mapped[Decimal | None] = mapped_column(Numeric(18, 6))


class VersionRow(Base):
    """An immutable version: one ONNX file (by sha256) plus its manifest and lineage.

    Only ``description`` and ``tags`` (the version's card) change after the push.
    """

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model_id", "version", name="uq_model_version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), nullable=False, index=True)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    source: Mapped[str | None] = mapped_column(String(255))
    # a version number of the same model; kept when that version is deleted (lineage stays true)
    parent_version: Mapped[int | None] = mapped_column(Integer)
    dataset: Mapped[str | None] = mapped_column(String(255))
    job_id: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="ready", server_default="ready")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
    description: Mapped[str] = mapped_column(Text, nullable=False, default="", server_default="")
    tags: Mapped[dict[str, str]] = mapped_column(JSON, nullable=False, default=dict, server_default="{}")


class AliasRow(Base):
    """A movable name (``production``, ``staging``...) for one version, with its canary and shadow.

    The canary is a version of the same model; the shadow may be any model's version of the
    same task. The foreign keys have no ``ON DELETE``: a version an alias, canary or shadow
    points at cannot be deleted (the registry says so first with ``VersionInUse``).
    """

    __tablename__ = "aliases"
    __table_args__ = (UniqueConstraint("model_id", "name", name="uq_model_alias"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), nullable=False)
    name: Mapped[str] = mapped_column(String(32), nullable=False)
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"), nullable=False)
    canary_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    canary_weight: Mapped[float] = mapped_column(Float, nullable=False, default=0.0, server_default="0")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
    shadow_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("model_versions.id", name="fk_aliases_shadow_version_id")
    )
    shadow_weight: Mapped[float] = mapped_column(Float, nullable=False, default=0.0, server_default="0")


class EventRow(Base):
    """One change to a model, numbered by the registry-wide change sequence ``seq``.

    Names and numbers, not foreign keys: the history outlives the versions it mentions.
    ``seq`` is the primary key (the change feed reads ``seq > n``); ``(model, seq)`` serves
    a model's history newest first.
    """

    __tablename__ = "model_events"
    __table_args__ = (Index("ix_model_events_model_seq", "model", "seq"),)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    model: Mapped[str] = mapped_column(String(63), nullable=False)
    action: Mapped[str] = mapped_column(String(16), nullable=False)
    alias: Mapped[str | None] = mapped_column(String(32))
    from_version: Mapped[int | None] = mapped_column(Integer)
    to_version: Mapped[int | None] = mapped_column(Integer)
    actor: Mapped[str | None] = mapped_column(String(255))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict, server_default="{}")


class TombstoneRow(Base):
    """Bytes no version uses any more, waiting for the sweeper (``RegistryStore.sweep_artifacts``).

    A delete that leaves no version naming ``sha256`` records one in its own transaction:
    no storage call happens under the registry lock on the request path. The sweeper later
    removes the bytes (if still unused) and stamps ``removed_at``; the row stays a while
    after that, because a push that checked the bucket before the removal may still be on
    its way to ``add_version``, which must then store the bytes again (it calls
    ``ensure_artifact`` whenever a tombstone, removed or not, names its sha256).
    """

    __tablename__ = "artifact_tombstones"
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    # when the last version using the bytes was deleted
    since: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
    # when the sweeper removed the bytes; None while they wait
    removed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class StateRow(Base):
    """The registry's single row: the last change sequence number given out.

    Every write transaction locks this row first (PostgreSQL: ``SELECT ... FOR UPDATE``;
    SQLite's ``BEGIN IMMEDIATE`` already serialises writers), so writes run one at a time
    and sequence numbers commit in the order they are taken.
    """

    __tablename__ = "registry_state"
    __table_args__ = (CheckConstraint("id = 1", name="ck_registry_state_single_row"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0, server_default="0")


class ApiKeyRow(Base):
    """An API key: its id (the public part of the key), the sha256 of the whole key, never the key.

    ``seq`` is the registry change sequence number of the key's last change (create, revoke,
    rotate, edit), so every server refreshes its in-memory key table with ``seq > last``;
    ``last_used_at`` is written in batches off the request path and takes no sequence number.
    """

    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), nullable=False)
    secret_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    scopes: Mapped[list[str]] = mapped_column(JSON, nullable=False)
    # model names or shell patterns; None: every model
    models: Mapped[list[str] | None] = mapped_column(JSON)
    limits: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict, server_default="{}")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(255))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    replaced_by: Mapped[str | None] = mapped_column(String(32))
    seq: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0, server_default="0", index=True)


class UsageRow(Base):
    """Units of one key on one model version and task in one UTC day, added to in batches.

    The key's id, not a foreign key: usage outlives a revoked key (and is what it is billed on).
    """

    __tablename__ = "usage_daily"
    __table_args__ = (
        UniqueConstraint("key_id", "model", "version", "task", "day", name="uq_usage_daily"),
        Index("ix_usage_daily_day", "day"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key_id: Mapped[str] = mapped_column(String(32), nullable=False)
    model: Mapped[str] = mapped_column(String(63), nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    task: Mapped[str] = mapped_column(String(32), nullable=False)
    day: Mapped[date] = mapped_column(Date, nullable=False)
    requests: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0, server_default="0")
    images: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0, server_default="0")
    compute_ms: Mapped[float] = mapped_column(Float, nullable=False, default=0.0, server_default="0")
    bytes_in: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0, server_default="0")


class AuditRow(Base):
    """One privileged action: who (key id and name), what, on which target, when. Append-only:
    nothing in imaas updates or deletes these rows."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_at", "at"),)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
    key_id: Mapped[str | None] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(255), nullable=False)
    action: Mapped[str] = mapped_column(String(32), nullable=False)
    target: Mapped[str] = mapped_column(String(255), nullable=False)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict, server_default="{}")


class CollectionRow(Base):
    """A named vector collection: the embedding model that fills it, the vectors' dimension,
    and the vector store table that holds its items (a fresh name per collection, so a
    collection dropped and made again never shows the old one's items)."""

    __tablename__ = "collections"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True, nullable=False)
    model: Mapped[str] = mapped_column(String(100), nullable=False)
    dimension: Mapped[int] = mapped_column(Integer, nullable=False)
    table_name: Mapped[str] = mapped_column(String(100), unique=True, nullable=False)
    description: Mapped[str] = mapped_column(Text, nullable=False, default="", server_default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(255))


class DatasetRow(Base):
    """A named labelled-image dataset; its versions carry the data."""

    __tablename__ = "datasets"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
    # the highest version number ever given, as for models: a number never comes back
    last_version: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")


class DatasetVersionRow(Base):
    """An immutable dataset version: one canonical archive (by sha256) of the images kept, with
    their labels and split (``summary``: classes, counts, input size, channel mean and std) and
    the cleaning report of the upload."""

    __tablename__ = "dataset_versions"
    __table_args__ = (UniqueConstraint("dataset_id", "version", name="uq_dataset_version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(
        ForeignKey("datasets.id", ondelete="CASCADE"), nullable=False, index=True
    )
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger, nullable=False)
    summary: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    report: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(255))
    description: Mapped[str] = mapped_column(Text, nullable=False, default="", server_default="")


class JobRow(Base):
    """A job in the persistent queue. A worker claims a ``queued`` job (or a ``running`` one
    whose heartbeat went stale: its worker died) in one conditional update, beats while it
    runs, and finishes it; ``cancel_requested`` is how a cancel reaches a running job."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_state_created", "state", "created_at"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    state: Mapped[str] = mapped_column(String(16), nullable=False)
    model: Mapped[str] = mapped_column(String(63), nullable=False)
    dataset: Mapped[str] = mapped_column(String(80), nullable=False)
    config: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    description: Mapped[str] = mapped_column(Text, nullable=False, default="", server_default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
    created_by: Mapped[str | None] = mapped_column(String(255))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    worker: Mapped[str | None] = mapped_column(String(128))
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    cancel_requested: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False, server_default=false())
    progress: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict, server_default="{}")
    result: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict, server_default="{}")
    error: Mapped[str | None] = mapped_column(Text)
    # events written so far (the next event takes last_event + 1)
    last_event: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")


class JobEventRow(Base):
    """One event of a job (state change, progress, epoch, log line), numbered per job: the
    job's log and what its Server-Sent Events stream replays from ``Last-Event-ID``."""

    __tablename__ = "job_events"
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict, server_default="{}")
