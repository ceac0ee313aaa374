"""Training on the platform: datasets, their versions, and the persistent job queue.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04

- ``datasets`` and ``dataset_versions``: immutable labelled-image dataset versions (one
  canonical archive by sha256, its split, statistics and cleaning report).
- ``jobs``: the job queue (state, heartbeats, attempts, cancel requests, progress, result).
- ``job_events``: every job's numbered events (its log and its event stream).
- Keys that held every scope before this revision (the first start's admin key and keys
  made like it) are given the new ``jobs``, ``datasets:read`` and ``datasets:write`` scopes,
  so an admin key stays an admin key; every other key keeps exactly what it had.
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

OLD_SCOPES = {"infer", "models:read", "models:write", "keys:admin", "usage:read"}
NEW_SCOPES = ["jobs", "datasets:read", "datasets:write"]


def upgrade() -> None:
    """Create the dataset and job tables; widen the admin keys to the new scopes."""
    op.create_table(
        "datasets",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(63), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_version", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_table(
        "dataset_versions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("dataset_id", sa.Integer, sa.ForeignKey("datasets.id", ondelete="CASCADE"), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("summary", sa.JSON, nullable=False),
        sa.Column("report", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(255)),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.UniqueConstraint("dataset_id", "version", name="uq_dataset_version"),
    )
    op.create_index("ix_dataset_versions_dataset_id", "dataset_versions", ["dataset_id"])
    op.create_index("ix_dataset_versions_sha256", "dataset_versions", ["sha256"])
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("model", sa.String(63), nullable=False),
        sa.Column("dataset", sa.String(80), nullable=False),
        sa.Column("config", sa.JSON, nullable=False),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(255)),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True)),
        sa.Column("worker", sa.String(128)),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("progress", sa.JSON, nullable=False, server_default="{}"),
        sa.Column("result", sa.JSON, nullable=False, server_default="{}"),
        sa.Column("error", sa.Text),
        sa.Column("last_event", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_index("ix_jobs_state_created", "jobs", ["state", "created_at"])
    op.create_table(
        "job_events",
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("data", sa.JSON, nullable=False, server_default="{}"),
    )
    keys = sa.table("api_keys", sa.column("id", sa.String), sa.column("scopes", sa.JSON))
    bind = op.get_bind()
    for key_id, scopes in bind.execute(sa.select(keys.c.id, keys.c.scopes)).all():
        held = set(json.loads(scopes) if isinstance(scopes, str) else scopes)
        if held >= OLD_SCOPES:
            widened = sorted(held | set(NEW_SCOPES))
            bind.execute(sa.update(keys).where(keys.c.id == key_id).values(scopes=widened))


def downgrade() -> None:
    """Back to 0003: datasets and jobs are dropped, and the new scopes taken off every key."""
    keys = sa.table("api_keys", sa.column("id", sa.String), sa.column("scopes", sa.JSON))
    bind = op.get_bind()
    for key_id, scopes in bind.execute(sa.select(keys.c.id, keys.c.scopes)).all():
        held = json.loads(scopes) if isinstance(scopes, str) else scopes
        kept = [s for s in held if s not in NEW_SCOPES]
        if kept != held:
            bind.execute(sa.update(keys).where(keys.c.id == key_id).values(scopes=kept))
    op.drop_table("job_events")
    op.drop_index("ix_jobs_state_created", table_name="jobs")
    op.drop_table("jobs")
    op.drop_index("ix_dataset_versions_sha256", table_name="dataset_versions")
    op.drop_index("ix_dataset_versions_dataset_id", table_name="dataset_versions")
    op.drop_table("dataset_versions")
    op.drop_table("datasets")
